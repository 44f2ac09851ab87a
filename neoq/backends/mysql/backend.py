"""The MySQL/MariaDB backend: durable jobs shared by every process that reaches the database.

How it works, in one screen:

- **Lease mode** (the default) runs on the shared lease engine (``neoq.backends.lease``) over
  ``leasestore.MySQLLeaseStore``: claims lease jobs in batches, a heartbeat renews them, outcomes
  are written in fenced batches; nothing is held while handlers run.
- **Transaction mode** (``mode="transaction"``, or ``Handler(mode="transaction")``): each
  attempt holds its job's row lock in a transaction the handler gets as
  ``job_context().transaction`` (claims.py); attempts are counted on another connection before
  the handler runs, so a worker that dies mid-attempt still counts.
- **Waiting**: MySQL has no LISTEN/NOTIFY; this process's enqueues, retries and give-backs wake
  its claims at once, and other processes' jobs are found by a look every ``poll_interval``
  (50 ms by default); a look that finds nothing says when the queue's next job comes due.
- **Cancellation** of a job a transaction-mode claim holds leaves a request that the holder's
  process polls for (``_watch_cancels``); a waiting or leased job is cancelled in its row.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import weakref
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pymysql

from ...clock import Clock
from ...errors import BackendError, ConfigurationError, NeoqError
from ...handler import HANDLER_MODES, Handler
from ...job import Job, JobStatus
from ...waiting import Look
from ..base import Backend, Claim, Outcome, PrepareJob
from ..capabilities import ENQUEUE_IN_TRANSACTION, SHARED, TRANSACTION
from ..lease import LeaseEngine, LeaseToken
from . import migrations
from .claims import Held, TransactionClaims
from .flow import FLOW_CAPABILITIES, MySQLFlow
from .inspection import Inspection
from .pools import Pool, connect, wrap
from .settings import MySQLOptions, parse_settings
from .store import Runner

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["MySQLBackend"]

logger = logging.getLogger(__name__)

#: Every MySQL backend of this process: a forked child resets them (``_after_fork``).
_backends: weakref.WeakSet[MySQLBackend] = weakref.WeakSet()
#: What a forked child took over from its parent and never uses, kept so no finalizer runs on it.
_abandoned: list[object] = []

#: Seconds between looks for cancellation requests of the jobs this process holds (transaction mode).
_CANCEL_POLL = 0.1


class MySQLBackend(MySQLFlow, Backend):
    """Jobs in a MySQL 8.0+ or MariaDB 10.6+ database, shared by every client that uses it.

    ``url``: ``mysql://user:password@host:3306/database`` (or ``mariadb://``). Options:

    - ``mode`` (default ``"lease"``): the mode of queues whose ``Handler`` names none;
      ``"transaction"`` holds the job's row lock in a transaction the handler may write through.
    - ``lease`` (default 30 s): how long a lease lasts; running jobs renew it while their process lives.
    - ``poll_interval`` (default 0.05 s): how often an idle queue looks for other processes' jobs.
    - ``connect_timeout`` (default the URL's, else 10 s); ``pool_max_size`` (default 32): the
      most connections of each of the two pools (worker transactions; short statements).
    - ``migrate`` (default True): create or upgrade the schema in ``open()``.

    Capabilities: ``"shared"``, ``"enqueue_in_transaction"``, the flow-control ones (flow.py), and
    ``"transaction"`` when the default mode is ``"transaction"``. No ``"notify"``: waiting claims poll.
    """

    handler_modes = frozenset(HANDLER_MODES)

    @property
    def capabilities(self) -> frozenset[str]:
        """What this backend offers, as configured (see ``neoq.backends.capabilities``)."""
        offered = {SHARED, ENQUEUE_IN_TRANSACTION, *FLOW_CAPABILITIES}
        if self._settings.default_mode == "transaction":
            offered.add(TRANSACTION)
        return frozenset(offered)

    @classmethod
    def from_url(cls, url: str, *, clock: Clock | None = None, **options: Any) -> MySQLBackend:
        """``mysql://`` and ``mariadb://``: ``MySQLBackend(url, **options)`` (the server's clock decides)."""
        return cls(url, **options)

    def __init__(self, url: str, **options: Unpack[MySQLOptions]) -> None:
        self._settings = s = parse_settings(url, **options)
        self.poll_interval = s.poll_interval
        self._aux_pool = Pool(lambda: connect(s), s.pool_max, s.connect_timeout, "short statements")
        self._work_pool = Pool(lambda: connect(s, autocommit=False), s.pool_max, s.connect_timeout, "worker")
        self._runner = Runner(s, self._aux_pool)
        self._lock = threading.Lock()
        self._open = False
        self._queue_modes: dict[str, str] = {}
        self._prefetch: dict[str, int] = {}
        #: The concurrency of each transaction-mode queue: the worker pool holds one connection per job.
        self._claimers: dict[str, int] = {}
        self._lease_engine: LeaseEngine | None = None
        self._held: dict[int, Held] = {}
        self._told: set[int] = set()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._inspection = Inspection(self._runner, signal=self._signal, on_cancel=self._cancel_here)
        self._transactions = TransactionClaims(
            s, self._work_pool, self._runner, signal=self._signal, register=self._register, forget=self._forget
        )
        self._flow_init()
        _backends.add(self)

    def _after_fork(self) -> None:
        """In a child just forked: the parent's threads did not come along. Forget them and their
        state; the pools drop the parent's connections by themselves (they note the process id)."""
        _abandoned.append((self._lease_engine, self._watcher, self._held))
        self._lock = threading.Lock()
        self._lease_engine = None
        self._watcher = None
        self._held = {}
        self._told = set()
        self._stop = threading.Event()
        self._aux_pool.after_fork()
        self._work_pool.after_fork()
        self.reset_waiting(close=False)

    def __repr__(self) -> str:
        return f"MySQLBackend({self._settings.safe_url!r})"

    # -- lifecycle -----------------------------------------------------------------------

    def open(self) -> None:
        """Connect, check the server's version, create or upgrade the schema. Idempotent."""
        with self._lock:
            if self._open:
                return
            self._aux_pool.reopen()
            self._work_pool.reopen()
            conn = connect(self._settings)
            try:
                _check_version(conn, self._settings.safe_url)
                if self._settings.migrate:
                    migrations.migrate(conn)
                with conn.cursor() as cur:
                    cur.execute("SELECT @@auto_increment_increment")
                    row = cur.fetchone()
                    self._inspection.id_step = int(row[0]) if row else 1
            except (pymysql.err.MySQLError, OSError, TimeoutError) as exc:
                raise wrap(self._settings, exc, "preparing the schema") from exc
            finally:
                conn.close()
            self._stop.clear()
            self._open = True

    def close(self) -> None:
        """Give leased jobs back, stop the cancellation watcher, close every connection. Idempotent."""
        with self._lock:
            was_open, self._open = self._open, False
            engine, self._lease_engine = self._lease_engine, None
            watcher, self._watcher = self._watcher, None
            self._stop.set()
        if engine is not None:
            engine.close()
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join()
        self.reset_waiting()
        if was_open or engine is not None:
            self._work_pool.close()
            self._aux_pool.close()

    def migrate(self) -> list[int]:
        """Create or upgrade the schema now; return the versions applied."""
        applied: list[int] = self._with_conn("migrating the schema", migrations.migrate)
        return applied

    def missing_migrations(self) -> list[int]:
        """The schema versions the database lacks, found with reads only."""
        missing: list[int] = self._with_conn(
            "reading the schema version", lambda conn: sorted(set(migrations.MIGRATIONS) - migrations.applied(conn))
        )
        return missing

    def _with_conn(self, doing: str, work: Any) -> Any:
        conn = connect(self._settings)
        try:
            return work(conn)
        except (pymysql.err.MySQLError, OSError, TimeoutError) as exc:
            raise wrap(self._settings, exc, doing) from exc
        finally:
            conn.close()

    def _require(self) -> None:
        if not self._open:
            raise BackendError("the MySQL backend is not open (call open(), or use neoq.new())")

    def _barrier(self) -> None:
        """Before other store calls: the lease mode's batched outcomes are written first."""
        engine = self._lease_engine
        if engine is not None:
            engine.barrier()

    # -- producing -------------------------------------------------------------------------

    def enqueue(self, jobs: Sequence[Job], *, connection: Any = None) -> list[str]:
        self._require()
        return self._inspection.enqueue(jobs, connection) if jobs else []

    def enqueue_prepared(self, jobs: Sequence[object], prepare: PrepareJob, *, connection: Any = None) -> list[str]:
        """Prepare and store the jobs, keeping the JSON text ``prepare`` made (``Inspection.enqueue_prepared``)."""
        self._require()
        return self._inspection.enqueue_prepared(jobs, prepare, connection)

    def enqueue_tick(self, job: Job, key: str, tick: datetime) -> str | None:
        self._require()
        return self._inspection.enqueue_tick(job, key, tick)

    def _signal(self, queue: str) -> None:
        waiting = self._waiting
        if waiting is not None:
            waiting.signal(queue)

    # -- consuming -------------------------------------------------------------------------

    def prepare_queue(self, queue: str, handler: Handler) -> None:
        """Serve ``queue`` in ``handler.mode``, else this backend's default mode."""
        super().prepare_queue(queue, handler)
        self._queue_modes[queue] = mode = handler.mode or self._settings.default_mode
        self._prefetch[queue] = handler.concurrency
        if mode == "transaction":
            # Each running job holds a worker connection: the pool grows to the queues' concurrency.
            with self._lock:
                self._claimers[queue] = handler.concurrency
                self._work_pool.grow(sum(self._claimers.values()))
        self._prepare_flow(queue, handler)

    def _lease(self) -> LeaseEngine:
        with self._lock:
            self._require()
            engine = self._lease_engine
            if engine is None:
                engine = self._lease_engine = LeaseEngine(
                    self._flow_store(),
                    self._settings.lease,
                    loops=lambda queue: self.waiting.queue(queue),
                    prefetch=lambda queue: self._prefetch.get(queue, 0),
                    notify_cancel=self._notify_cancel,
                    name="MySQL",
                )
        return engine

    def _look(self, queue: str) -> Look[Claim]:
        """``look`` in the queue's mode, flow control aside (flow.py's ``look`` comes first)."""
        if self._queue_modes.get(queue, self._settings.default_mode) == "lease":
            return self._lease().look(queue)
        self._require()
        if self._watcher is None:
            self._start_watcher()
        return self._transactions.look(queue)

    def settle(self, claim: Claim, outcome: Outcome) -> None:
        token = claim.token
        if isinstance(token, LeaseToken):
            return token.engine.settle(claim, outcome)
        if not isinstance(token, Held):
            raise BackendError("settle() got a claim that this MySQL backend did not make")
        self._transactions.settle(claim, outcome)

    def settle_then_claim(self, claim: Claim, outcome: Outcome, queue: str) -> Claim | None:
        token = claim.token
        if queue in self._flow_looks or self._pauses_stale():  # flow.py: the next claim through look
            self.settle(claim, outcome)
            return None
        if isinstance(token, LeaseToken):
            return token.engine.settle_then_claim(claim, outcome, queue)
        if (
            outcome.status is not JobStatus.PROCESSED
            or not isinstance(token, Held)
            or not self._open
            or self._queue_modes.get(queue, self._settings.default_mode) != "transaction"
        ):
            self.settle(claim, outcome)
            return None
        chain = self._transactions.chain
        claimed = self.waiting.queue(queue).chain(lambda: chain(token, outcome, queue))
        if claimed is None and not token.settled:
            self.settle(claim, outcome)  # the chain did not run (the attempt was ended from outside)
        return claimed

    def progress(self, claim: Claim, fraction: float, note: str | None) -> None:
        """Store a running attempt's progress report (fenced: a lost claim's report does not land)."""
        token = claim.token
        if isinstance(token, LeaseToken):
            return token.engine.progress(claim, fraction, note)
        if isinstance(token, Held):
            self._transactions.progress(token, fraction, note)

    def interrupt(self, claim: Claim) -> None:
        if isinstance(claim.token, Held):
            self._transactions.interrupt(claim.token)

    def release(self, claim: Claim) -> None:
        token = claim.token
        if isinstance(token, LeaseToken):
            return token.engine.release(claim)
        if isinstance(token, Held):
            self._transactions.release(token)

    # -- cancellation of transaction-mode claims ---------------------------------------

    def _register(self, held: Held) -> None:
        with self._lock:
            self._held[held.job_id] = held

    def _forget(self, held: Held) -> None:
        with self._lock:
            if self._held.get(held.job_id) is held:
                del self._held[held.job_id]
                self._told.discard(held.job_id)

    def _cancel_here(self, job_id: str) -> None:
        """``cancel_job`` left a request for a job a claim holds: if it is held here, tell it now."""
        key = int(job_id)
        with self._lock:
            mine = key in self._held and key not in self._told
            if mine:
                self._told.add(key)
        if mine:
            self._notify_cancel(job_id)

    def _start_watcher(self) -> None:
        with self._lock:
            if self._watcher is not None or not self._open:
                return
            self._watcher = threading.Thread(target=self._watch_cancels, name="neoq-mysql-cancels", daemon=True)
            self._watcher.start()

    def _watch_cancels(self) -> None:
        """Look for cancellation requests of the jobs this process holds (other processes leave them)."""
        while not self._stop.wait(_CANCEL_POLL):
            with self._lock:
                ids = [key for key in self._held if key not in self._told]
            if not ids:
                continue
            try:
                found = self._runner.run("looking for cancellations", _requests_of(ids), write=False)
            except NeoqError as exc:
                logger.debug("neoq: looking for cancellations failed: %s", exc)
                continue
            except Exception:  # pragma: no cover - a bug: the watcher must go on
                logger.exception("neoq: looking for cancellations failed")
                continue
            for (job_id,) in found:
                self._cancel_here(str(job_id))

    # -- periodic jobs, retention, inspecting and managing ---------------------------------

    def last_tick(self, key: str) -> datetime | None:
        self._require()
        return self._inspection.last_tick(key)

    def prune(self, older_than: dict[JobStatus, datetime], limit: int) -> int:
        self._require()
        self._barrier()
        pruned = self._inspection.prune(older_than, limit)
        self._prune_windows()  # flow.py: unique_for windows that have closed
        return pruned

    def get_job(self, job_id: str) -> Job | None:
        self._require()
        self._barrier()
        return self._inspection.get_job(job_id)

    def list_jobs(self, queue: str | None, status: JobStatus | None, limit: int) -> list[Job]:
        self._require()
        self._barrier()
        return self._inspection.list_jobs(queue, status, limit)

    def retry_job(self, job_id: str) -> None:
        self._require()
        self._barrier()
        self._inspection.retry_job(job_id)

    def cancel_job(self, job_id: str) -> None:
        self._require()
        self._barrier()
        self._inspection.cancel_job(job_id)

    def stats(self) -> dict[str, dict[str, int]]:
        self._require()
        self._barrier()
        return self._inspection.stats()


def _after_fork_in_child() -> None:
    for backend in list(_backends):
        try:
            backend._after_fork()
        except Exception:  # pragma: no cover - one backend must not keep the others from resetting
            logger.exception("neoq: resetting a MySQL backend in a forked child failed")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _requests_of(ids: list[int]) -> Any:
    def read(cur: Any) -> Any:
        cur.execute(f"SELECT job_id FROM neoq_cancellations WHERE job_id IN ({','.join(['%s'] * len(ids))})", ids)
        return cur.fetchall()

    return read


def _check_version(conn: Any, safe_url: str) -> None:
    """Refuse a server without ``SKIP LOCKED``: MariaDB before 10.6, MySQL before 8.0."""
    with conn.cursor() as cur:
        cur.execute("SELECT VERSION()")
        row = cur.fetchone()
    require_version(str(row[0]) if row else "", safe_url)


def require_version(version: str, safe_url: str) -> None:
    """Raise ``ConfigurationError`` unless ``version`` (``SELECT VERSION()``) is MariaDB 10.6+ or MySQL 8.0+."""
    match = re.match(r"(\d+)\.(\d+)", version)
    numbers = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    mariadb = "mariadb" in version.lower()
    needed = (10, 6) if mariadb else (8, 0)
    if numbers < needed:
        name = "MariaDB" if mariadb else "MySQL"
        raise ConfigurationError(
            f"{safe_url} runs {name} {version}: neoq needs {name} {needed[0]}.{needed[1]} or later "
            "(SELECT ... FOR UPDATE SKIP LOCKED)"
        )
