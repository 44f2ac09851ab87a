"""The SQLite backend: durable jobs in one file, shared by the processes of one host, stdlib only.

How it works, in one screen:

- **Leases** (leasestore.py over ``neoq.backends.lease``). A claim leases its job in a short
  ``BEGIN IMMEDIATE`` transaction (the job stays ``'new'``, its ``run_after`` the lease's expiry,
  its fencing token bumped, its attempt counted); the engine's heartbeat renews the leases of
  running jobs; outcomes are written in batches, each fenced by its token. Nothing is held while a
  handler runs, so handlers get no transaction (SQLite has one writer at a time), and a SIGKILLed
  worker's job is due again once its lease runs out, in any process.
- **Waiting** is the runtime's (``neoq.waiting``). A look that finds nothing reads, without a
  lock, when the queue's next job comes due. This process's enqueues, retries and give-backs signal
  their queue at once; other processes' commits are seen by the watcher (watcher.py: ``PRAGMA
  data_version`` each ``watch_interval``), which signals every queue; ``poll_interval`` is the
  safety net.
- **Transactions** are short and busy-safe (connections.py): WAL mode, ``BEGIN IMMEDIATE`` for
  writes, this client's writers queued on a lock of their own, ``busy_timeout`` plus retries with
  backoff, so "database is locked" never reaches a user.
- **Schema**: numbered ``sql/migrations`` applied once under the file's write lock (migrations.py).
- **Cancel**: ``cancel_job`` makes a waiting or running job ``CANCELLED`` in the file; the holding
  process's heartbeat finds the lease lost with that status and stops the handler (within 0.5 s).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ...clock import Clock
from ...errors import BackendError, ConfigurationError, NeoqError
from ...handler import Handler
from ...job import Job, JobStatus
from ...waiting import Look
from ..base import Backend, Claim, Outcome, PrepareJob
from ..capabilities import NOTIFY, SHARED
from ..lease import LeaseEngine, LeaseToken
from . import migrations
from .connections import Connections, connect, describe, is_busy
from .flow import FLOW_CAPABILITIES, SqliteFlow
from .leasestore import SqliteLeaseStore
from .settings import SqliteOptions, check_path, parse_settings, path_from_url
from .store import Store
from .watcher import Watcher

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["SqliteBackend"]

logger = logging.getLogger(__name__)

_NOT_OPEN = "the SQLite backend is not open (call open(), or use neoq.new())"

#: RETURNING (claims) needs SQLite 3.35 (2021).
_MIN_SQLITE = (3, 35, 0)

#: Open backends of this process: a forked child makes each forget its parent's threads and connections.
_open_backends: weakref.WeakSet[SqliteBackend] = weakref.WeakSet()
#: What a child inherited and never uses (see ``_after_fork``).
_abandoned: list[object] = []


class SqliteBackend(SqliteFlow, Backend):
    """Jobs in a SQLite file, shared by every client on this host that opens it.

    ``path`` is the database file (created with its schema when missing; its directory must
    exist). Options:

    - ``lease`` (default 30 s): how long a claim's lease lasts; running jobs renew it while their
      process lives, and a killed worker's job runs again once it has run out.
    - ``poll_interval`` (default 1 s): the safety-net look of an idle queue.
    - ``watch_interval`` (default 10 ms): how often a claiming client checks the file for other
      processes' commits (``PRAGMA data_version``); the pickup delay of their jobs.
    - ``busy_timeout`` (default 30 s): how long a write waits for a file another process keeps
      locked before it fails with ``BackendError``.
    - ``pool_size`` (default 4): connections of this client.
    - ``synchronous`` (default ``"normal"``): SQLite's ``PRAGMA synchronous``. In WAL mode
      ``"normal"`` loses no committed job when a process dies, but may lose the last ones at a
      power cut or an OS crash; ``"full"`` loses none then either, at an fsync per transaction.
    - ``migrate`` (default True): create or upgrade the schema in ``open()``.

    Capabilities: ``"shared"`` (the processes of one host), ``"notify"`` (the watcher), and every
    flow-control one (flow.py).
    """

    capabilities = frozenset({SHARED, NOTIFY}) | FLOW_CAPABILITIES
    #: Both modes lease (SQLite has one writer at a time: no transaction is held while handlers run).
    handler_modes = frozenset({"transaction", "lease"})
    needs_release = False

    @classmethod
    def from_url(cls, url: str, *, clock: Clock | None = None, **options: Any) -> SqliteBackend:
        """``sqlite:///relative.db`` or ``sqlite:////absolute/path.db``. The host's clock decides what
        is due (every process sharing the file reads it), so the client's ``clock`` is not used."""
        return cls(path_from_url(url), **options)

    def __init__(self, path: str, **options: Unpack[SqliteOptions]) -> None:
        self._settings = s = parse_settings(path, **options)
        self.poll_interval = s.poll_interval
        self._lock = threading.Lock()
        self._conns: Connections | None = None
        self._store: Store | None = None
        self._engine: LeaseEngine | None = None
        self._watcher: Watcher | None = None
        self._lease_store_: SqliteLeaseStore | None = None
        self._prefetch: dict[str, int] = {}
        self._flow_init()

    def __repr__(self) -> str:
        return f"SqliteBackend({self._settings.path!r})"

    @property
    def path(self) -> str:
        """The database file, absolute."""
        return self._settings.path

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        """Check the file's place, set WAL mode, create or upgrade the schema. Idempotent."""
        with self._lock:
            if self._conns is not None:
                return
            if sqlite3.sqlite_version_info < _MIN_SQLITE:
                raise ConfigurationError(
                    f"the SQLite backend needs SQLite 3.35 or newer; this Python has {sqlite3.sqlite_version}"
                )
            check_path(self._settings.path)
            self._prepare_file(migrate=self._settings.migrate)
            self._conns = conns = Connections(self._settings)
            self._store = Store(conns, self._stored)
            _open_backends.add(self)

    def close(self) -> None:
        """Write outcomes waiting, give unstarted leased jobs back, stop the threads, close every
        connection. Idempotent; ``open()`` afterwards opens again."""
        with self._lock:
            engine, self._engine = self._engine, None
            watcher, self._watcher = self._watcher, None
        if engine is not None:
            engine.close()
        if watcher is not None:
            watcher.stop()
        self.reset_waiting()
        with self._lock:
            conns, self._conns = self._conns, None
            self._store = None
        if conns is not None:
            conns.close()

    def _after_fork(self) -> None:
        """In a forked child: the parent's engine and watcher threads did not come along, and its
        connections are not the child's. Forget them; the next claim starts the child's own."""
        self._lock = threading.Lock()
        _abandoned.append((self._engine, self._watcher))
        self._engine = None
        self._watcher = None
        conns = self._conns
        if conns is not None:
            conns.after_fork()
        self.reset_waiting(close=False)

    def migrate(self) -> list[int]:
        """Create or upgrade the schema now; return the versions applied ([] when it was current)."""
        check_path(self._settings.path)
        return self._prepare_file(migrate=True)

    def missing_migrations(self) -> list[int]:
        """The schema versions the file lacks (all of them for a new file), with reads only."""
        if not os.path.exists(self._settings.path):
            return [version for version, _, _ in migrations.available_migrations()]
        conn = None
        try:
            conn = connect(self._settings, read_only=True)
            return migrations.missing_migrations(conn)
        except sqlite3.Error as exc:
            raise describe(exc, self._settings.path, "reading the schema version") from exc
        finally:
            if conn is not None:
                conn.close()

    def _prepare_file(self, *, migrate: bool) -> list[int]:
        """WAL mode and the schema, retried while another process holds the file (it may be migrating)."""
        s = self._settings
        deadline = time.monotonic() + s.busy_timeout
        delay = 0.005
        while True:
            conn = None
            try:
                conn = connect(s)
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise BackendError(f"the SQLite database {s.path!r} could not be put in WAL mode (it is {mode})")
                if migrate:
                    return migrations.migrate(conn)
                missing = migrations.missing_migrations(conn)
                if missing:
                    raise ConfigurationError(
                        f"the SQLite database {s.path!r} lacks schema versions {missing}: run `neoq migrate` "
                        "or open it with migrate=True"
                    )
                return []
            except sqlite3.Error as exc:
                if not is_busy(exc) or time.monotonic() >= deadline:
                    raise describe(exc, s.path, "preparing the database") from exc
            finally:
                if conn is not None:
                    conn.close()
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _require_conns(self) -> Connections:
        conns = self._conns
        if conns is None:
            raise BackendError(_NOT_OPEN)
        return conns

    def _lease_store(self) -> SqliteLeaseStore:
        self._engine_now()
        store = self._lease_store_
        assert store is not None
        return store

    def _require(self) -> Store:
        store = self._store
        if store is None:
            raise BackendError(_NOT_OPEN)
        return store

    def _stored(self, delays: dict[str, float]) -> None:
        """This process stored jobs: its waiting loops of those queues look (now, or when they come due)."""
        waiting = self._waiting
        if waiting is None:
            return
        for queue, delay in delays.items():
            if delay <= 0:
                waiting.signal(queue)
            else:
                waiting.due(queue, delay)

    def _barrier(self) -> None:
        engine = self._engine
        if engine is not None:
            engine.barrier()

    # -- producing -------------------------------------------------------------------------

    def enqueue(self, jobs: Sequence[Job], *, connection: Any = None) -> list[str]:
        if connection is not None:
            raise ConfigurationError("the SQLite backend cannot enqueue through a caller's connection")
        return self._require().enqueue(jobs)

    def enqueue_prepared(self, jobs: Sequence[object], prepare: PrepareJob, *, connection: Any = None) -> list[str]:
        """Validate every job, then store the batch with the JSON texts ``prepare`` made (no second encoding)."""
        if connection is not None:
            raise ConfigurationError("the SQLite backend cannot enqueue through a caller's connection")
        prepared = [prepare(job, index) for index, job in enumerate(jobs)]
        if not prepared:
            return []
        return self._require().enqueue([job for job, _ in prepared], [text for _, text in prepared])

    def enqueue_tick(self, job: Job, key: str, tick: datetime) -> str | None:
        return self._require().enqueue_tick(job, key, tick)

    # -- consuming -------------------------------------------------------------------------

    def prepare_queue(self, queue: str, handler: Handler) -> None:
        """Serve ``queue``: every mode is a lease here; the handler's concurrency is the fetch's prefetch."""
        super().prepare_queue(queue, handler)
        self._prefetch[queue] = handler.concurrency
        self._prepare_flow(queue, handler)
        self._engine_now()

    def _engine_now(self) -> LeaseEngine:
        """The lease engine and the watcher of this open backend, started on first use."""
        engine = self._engine
        if engine is not None:
            return engine
        with self._lock:
            engine = self._engine
            if engine is None:
                conns = self._conns
                if conns is None:
                    raise BackendError(_NOT_OPEN)
                store = self._lease_store_ = SqliteLeaseStore(conns, lambda queue, delay: self._stored({queue: delay}))
                store.global_limits = self._global_limits
                engine = self._engine = LeaseEngine(
                    store,
                    self._settings.lease,
                    loops=lambda queue: self.waiting.queue(queue),
                    prefetch=lambda queue: self._prefetch.get(queue, 0),
                    notify_cancel=self._notify_cancel,
                    name="SQLite",
                )
                self._watcher = Watcher(self._settings, self._changed)
        return engine

    def _changed(self) -> None:
        """Another connection committed (the watcher): every queue looks; queues paused elsewhere give
        back what this client leased ahead for them."""
        waiting = self._waiting
        if waiting is not None:
            waiting.signal(None)
        try:
            self._check_pauses()
        except NeoqError as exc:
            logger.debug("neoq: reading the paused queues failed: %s", exc)

    def look(self, queue: str) -> Look[Claim]:
        """Lease a due job of ``queue`` (or one buffered by an earlier fetch), or say when the next comes due."""
        if queue in self._global_limits:
            # This client's outcomes waiting for the flusher would count as live leases: write them first.
            self._barrier()
        if queue in self._rates:  # flow.py: a rate limit's start is taken with the claim
            return self._rated_look(queue)
        return self._engine_now().look(queue)

    def settle(self, claim: Claim, outcome: Outcome) -> None:
        lease = claim.token
        if not isinstance(lease, LeaseToken):
            raise BackendError("settle() got a claim that this SQLite backend did not make")
        lease.engine.settle(claim, outcome)

    def settle_then_claim(self, claim: Claim, outcome: Outcome, queue: str) -> Claim | None:
        lease = claim.token
        if not isinstance(lease, LeaseToken):
            raise BackendError("settle() got a claim that this SQLite backend did not make")
        if queue in self._rates:  # the next claim takes a start too: through look
            lease.engine.settle(claim, outcome)
            return None
        return lease.engine.settle_then_claim(claim, outcome, queue)

    def progress(self, claim: Claim, fraction: float, note: str | None) -> None:
        """A running job's progress report: one short write, fenced by the claim's lease."""
        lease = claim.token
        if isinstance(lease, LeaseToken):
            lease.engine.progress(claim, fraction, note)

    def release(self, claim: Claim) -> None:
        lease = claim.token
        if isinstance(lease, LeaseToken):
            lease.engine.release(claim)

    # -- periodic jobs, retention, inspecting and managing ---------------------------------

    def last_tick(self, key: str) -> datetime | None:
        return self._require().last_tick(key)

    def prune(self, older_than: dict[JobStatus, datetime], limit: int) -> int:
        self._barrier()
        return self._require().prune(older_than, limit)

    def get_job(self, job_id: str) -> Job | None:
        self._barrier()
        return self._require().get_job(job_id)

    def list_jobs(self, queue: str | None, status: JobStatus | None, limit: int) -> list[Job]:
        self._barrier()
        return self._require().list_jobs(queue, status, limit)

    def retry_job(self, job_id: str) -> None:
        self._barrier()
        self._require().retry_job(job_id)

    def cancel_job(self, job_id: str) -> None:
        self._barrier()
        self._require().cancel_job(job_id)

    def stats(self) -> dict[str, dict[str, int]]:
        self._barrier()
        return self._require().stats()


def _after_fork_in_child() -> None:
    for backend in list(_open_backends):
        try:
            backend._after_fork()
        except Exception:  # pragma: no cover - one backend's trouble must not stop the others
            logger.exception("neoq: resetting a SQLite backend in a forked child failed")


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
