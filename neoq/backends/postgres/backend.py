"""The PostgreSQL backend: durable jobs shared by any number of processes and machines.

How it works, in one screen:

- **A claim is a transaction** (claims.py, settles.py). A look (``look()``) takes a connection
  from the worker pool and runs ``SELECT ... FOR UPDATE SKIP LOCKED`` (``run_after <= now()`` in
  the query itself) followed by a ``SAVEPOINT``, pipelined into one round trip. The open
  transaction holds the job's row lock until ``settle()`` writes the outcome and commits; if
  the process dies, PostgreSQL rolls the transaction back and the job is claimable again. The
  handler gets that connection as ``Claim.transaction``; a failure rolls back to the savepoint
  before recording the outcome. A processed attempt's settle and the next claim of its claim loop
  share one round trip and the connection (``settle_then_claim``).
- **Attempts survive crashes.** The attempt counter lives in ``neoq_attempts``. The settle adds
  the attempt there, in the claim's transaction, with its outcome. An attempt that ends without a
  settle (its worker died, its session was ended) leaves a trace instead: the claim's lock wrote
  the claiming transaction's id into the row's xmax, and only a settle replaces that row version.
  The next claim reads the trace (``lost``) and commits the missed attempt in a transaction of
  its own, on a second (autocommit) connection, before its handler runs, so a job that kills
  every worker still ends FAILED (``Settles.send_count``; migration 0003).
- **Wake-ups.** One LISTEN connection per client, on one channel for all queues; the payload is
  ``q:<queue>`` (jobs to look at), ``c:<job id>`` (a cancellation of that job may be recorded:
  look in this client's ``neoq_cancellations``; only a recorded request cancels) or ``p:<queue>``
  (paused: give back what was leased ahead for it; flow.py). Enqueues notify
  inside their transaction, so nothing wakes before the commit. Claims wait in ``neoq.waiting``
  (``Backend.claim``): the listener's notifications, this process's enqueues and a reconnect
  signal it (``_signal``; notices.py lets the notifications of its own enqueues go); each look
  that finds nothing says when the queue's next job comes due (by the database's clock); a look
  every ``poll_interval`` is the safety net.
- **Outcomes.** The settle writes ``result`` and ``traceback`` with the status; progress reports
  go to ``neoq_progress`` beside the locked row (migration 0005).
"""

from __future__ import annotations

import functools
import logging
import threading
import weakref
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ...clock import Clock
from ...errors import BackendError
from ...handler import HANDLER_MODES, Handler
from ...job import Job, JobStatus
from ...waiting import Look
from ..base import Backend, Claim, Outcome, PrepareJob
from ..capabilities import DASHBOARD, ENQUEUE_IN_TRANSACTION, NOTIFY, SHARED, TRANSACTION, WORKERS
from ..lease import LeaseEngine, LeaseToken
from . import forking, inspection, runtime
from .cancels import _Cancels
from .claims import TransactionClaims
from .common import CHANNEL, Conn
from .enqueue import Enqueuer
from .flow import FLOW_CAPABILITIES, PostgresFlow
from .leasestore import PostgresLeaseStore
from .notices import LocalNotices
from .pools import Connections
from .search import PostgresSearch
from .settings import PostgresOptions, parse_settings
from .settles import Settles
from .sizing import PoolSizing
from .state import _Held, _Pools

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["CHANNEL", "PostgresBackend"]

logger = logging.getLogger(__name__)

_NOT_OPEN = "the PostgreSQL backend is not open (call open(), or use neoq.new())"


# -- the backend ---------------------------------------------------------------------------


class PostgresBackend(PostgresSearch, PostgresFlow, PoolSizing, Backend):
    """Jobs in a PostgreSQL database, shared by every client that uses it.

    ``url`` is a libpq connection string or URL (``postgresql://user:pw@host:5432/db?sslmode=...``);
    its own parameters apply to every connection. Options:

    - ``idle_transaction_timeout`` (default 60 s): PostgreSQL's ``idle_in_transaction_session_timeout``
      on the worker connections; a handler whose transaction sits idle longer has its session
      ended, and the job runs again. ``0`` disables it.
    - ``pool_min_size`` / ``pool_max_size``: the worker pool (one connection per running job).
      By default it grows to the number of worker threads that claim jobs.
    - ``synchronous_commit`` (default on): ``True``/``False`` or a PostgreSQL value.
    - ``connect_timeout`` (default the URL's, else 10 s): how long connecting may take.
    - ``poll_interval`` (default 2 s): the safety-net poll of waiting claims.
    - ``application_name`` (default the URL's, else ``"neoq"``).
    - ``migrate`` (default True): create or upgrade the schema in ``open()``.
    - ``mode`` (default ``"transaction"``): the mode of queues whose ``Handler`` does not name one;
      ``"lease"`` holds no transaction while handlers run (docs/lease-mode.md).
    - ``lease`` (default 30 s): how long a lease lasts; running jobs renew it while their process lives.
    - ``listen`` (default True): False opens no LISTEN connection (PgBouncer in transaction pooling
      cannot deliver notifications); waiting claims then poll every ``poll_interval``.
    - ``prepare_threshold`` (default psycopg's, 5): psycopg's server-side prepared statements;
      ``None`` disables them, as PgBouncer in transaction pooling needs.

    Capabilities: ``"shared"``, ``"enqueue_in_transaction"``, the flow-control ones
    (``neoq.backends.capabilities.FLOW_CONTROL``), ``"dashboard"`` and ``"workers"`` (``search``);
    ``"transaction"`` unless the default ``mode`` is ``"lease"``; ``"notify"`` unless ``listen`` is False.
    """

    handler_modes = frozenset(HANDLER_MODES)

    @property
    def capabilities(self) -> frozenset[str]:
        """What this backend offers, as configured (see ``neoq.backends.capabilities``)."""
        offered = {SHARED, ENQUEUE_IN_TRANSACTION, DASHBOARD, WORKERS, *FLOW_CAPABILITIES}
        if self._settings.default_mode == "transaction":
            offered.add(TRANSACTION)
        if self._settings.listen:
            offered.add(NOTIFY)
        return frozenset(offered)

    @classmethod
    def from_url(cls, url: str, *, clock: Clock | None = None, **options: Any) -> PostgresBackend:
        """``postgresql://`` and ``postgres://``: ``PostgresBackend(url, **options)`` (the database's clock rules)."""
        return cls(url, **options)

    def __init__(self, url: str, **options: Unpack[PostgresOptions]) -> None:
        """Options as the class says (``settings.parse_settings`` checks them)."""
        for name in options.keys() - PostgresOptions.__annotations__.keys():
            raise TypeError(f"PostgresBackend() got an unexpected keyword argument {name!r}")
        self._settings = s = parse_settings(url, **options)
        self.application_name = s.application_name
        self.poll_interval = s.poll_interval
        #: The worker pool's size now: it grows with the claiming threads unless it is fixed.
        self._pool_max = s.pool_max
        #: Each queue's mode and claim prefetch (Backend.prepare_queue); others take the default mode.
        self._queue_modes: dict[str, str] = {}
        self._prefetch: dict[str, int] = {}
        self._lease_engine: LeaseEngine | None = None
        self._conns = Connections(s, require=lambda: self._require(), barrier=self._barrier)
        self._enqueuer = Enqueuer(
            conns=self._conns,
            hot=s.hot,
            require=self._require,
            barrier=self._barrier,
            local_enqueue=lambda queues: self._notices.enqueued(queues),  # _notices: each open() its own
            local_undo=lambda states: self._notices.undo(states),
            signal=self._signal,
        )
        self._pools: _Pools | None = None
        self._fresh_runtime()
        #: Set in a forked child whose parent had this backend open: the next use opens it again.
        self._reopen = False

    def __repr__(self) -> str:
        return f"PostgresBackend({self._settings.safe_url!r})"

    # -- lifecycle -----------------------------------------------------------------------

    def open(self) -> None:
        """Connect, create or upgrade the schema, start the listener. Idempotent.

        Raises ``BackendConnectionError`` within the connect timeout when the server cannot be
        reached.
        """
        settings = self._settings
        with self._lock:
            if self._pools is not None:
                return
            self._pools = pools = runtime.start(
                settings,
                self._conns,
                self._pool_max,
                notify_cancel=self._notify_cancel,
                on_notify=self._notices.notified,
                recorded_cancels=self._recorded_cancels,
                redeliver_cancels=self._cancels.redeliver,
                signal_all=lambda: self._signal(None),
                on_pause=self._paused_elsewhere,
            )
            self._reopen = False
            forking.track_backend(self)
            # Wake-ups left from an earlier open() (shutdown's) must not cut the new claims short.
            self._notices.clear()
            # The listener starts with the first claim (or queue): a client that only enqueues
            # listens to nothing, so its own notifications cost it nothing.
            self._listening = not settings.listen
            pools.canceller.start()

    def close(self) -> None:
        """Close the pools and the listener and join the backend's threads. Idempotent."""
        with self._lock:
            pools, self._pools = self._pools, None
            self._reopen = False
            leftover = list(self._claims.values())
            lease_engine, self._lease_engine = self._lease_engine, None
        if lease_engine is not None:
            lease_engine.close()
        # Blocked claims (both modes wait in neoq.waiting) return None at once and see the backend closed.
        self.reset_waiting()
        if pools is not None:
            runtime.stop(pools, leftover)

    def migrate(self) -> list[int]:
        """Create or upgrade the schema now; return the migration versions applied (none when it
        was current: that is found out with reads only, so a role without DDL rights may call it)."""
        return self._conns.migrate()

    def missing_migrations(self) -> list[int]:
        """The schema versions this neoq needs and the database lacks, found with reads only
        (all of them when it has no neoq schema); ``migrate()`` applies them. Needs no ``open()``."""
        return self._conns.missing_migrations()

    def _require(self) -> _Pools:
        pools = self._pools
        if pools is None:
            if self._reopen:
                self.open()  # the first use in a forked child (see _after_fork)
                pools = self._pools
            if pools is None:
                raise BackendError(_NOT_OPEN)
        return pools

    def _fresh_runtime(self) -> None:
        """The state of claims, wake-ups and cancellations, as in a backend never opened."""
        self._lock = threading.Lock()
        self._claims: dict[str, _Held] = {}
        self._cancels = _Cancels(self._lock, self._claims, lambda: self._pools)
        # Without a listener (listen=False) no notification comes to let go.
        self._notices = LocalNotices(listening=lambda: self._listening and self._settings.listen, signal=self._signal)
        self._claimers: weakref.WeakSet[threading.Thread] = weakref.WeakSet()
        #: Whether this open() started its listener (or has none to start).
        self._listening = False

    def _after_fork(self) -> None:
        """In a child just forked (``forking``): the parent's connections lead to ``/dev/null`` now
        and its threads did not come along. Forget them; the next use opens the child's own.

        The child runs one thread at this point. A lock that another thread of the parent held
        is replaced rather than waited for.
        """
        pools, self._pools = self._pools, None
        lease_engine, self._lease_engine = self._lease_engine, None
        forking.abandon((pools, lease_engine))
        self.reset_waiting(close=False)
        self._fresh_runtime()
        self.reset_waiting(close=False)
        self._reopen = pools is not None

    # -- errors --------------------------------------------------------------------------

    def _wrap(self, exc: BaseException, doing: str) -> BackendError:
        return self._conns.wrap(exc, doing)

    def _barrier(self) -> None:
        """Before short work: the lease mode's batched outcomes are written first, so it reads them."""
        lease_engine = self._lease_engine
        if lease_engine is not None:
            lease_engine.barrier()

    # -- producing -------------------------------------------------------------------------

    def enqueue(self, jobs: Sequence[Job], *, connection: Any = None) -> list[str]:
        return self._enqueuer.enqueue(jobs, connection)

    def enqueue_prepared(self, jobs: Sequence[object], prepare: PrepareJob, *, connection: Any = None) -> list[str]:
        """Prepare each job of a large batch as COPY sends it, so the server stores the rows sent
        while the client prepares the next (``enqueue.Enqueuer.enqueue_prepared``)."""
        return self._enqueuer.enqueue_prepared(jobs, prepare, connection)

    def enqueue_tick(self, job: Job, key: str, tick: datetime) -> str | None:
        return self._enqueuer.enqueue_tick(job, key, tick)

    # -- consuming -------------------------------------------------------------------------

    def _listen_now(self) -> None:
        """Start the listener of this open(), once (claims need its wake-ups and cancellations)."""
        if self._reopen:
            self._require()  # a forked child's first claim: open its own connections first
        with self._lock:
            pools = self._pools
            if self._listening or pools is None:
                return
            self._listening = True
            pools.listener.start()

    def prepare_queue(self, queue: str, handler: Handler) -> None:
        """Serve ``queue`` in ``handler.mode``, else this backend's default mode."""
        if not self._listening:
            self._listen_now()
        self._queue_modes[queue] = handler.mode or self._settings.default_mode
        self._prefetch[queue] = handler.concurrency
        self._prepare_flow(queue, handler)  # flow.py: a global limit's slots

    def _lease(self) -> LeaseEngine:
        """The lease engine of this open backend, started on first use."""
        self._require()  # outside the lock: in a forked child it opens the backend, which takes it
        s = self._settings
        with self._lock:
            engine = self._lease_engine
            if engine is None:
                if self._pools is None:  # closed meanwhile
                    raise BackendError(_NOT_OPEN)
                store = PostgresLeaseStore(
                    s.url, kwargs=s.aux_kwargs, connect_timeout=s.connect_timeout, safe_url=s.safe_url, wrap=self._wrap
                )
                self._flow_store(store)
                engine = self._lease_engine = LeaseEngine(
                    store,
                    s.lease_seconds,
                    loops=lambda queue: self.waiting.queue(queue),
                    prefetch=lambda queue: self._prefetch.get(queue, 0),
                    notify_cancel=self._notify_cancel,
                    name="PostgreSQL",
                )
        return engine

    @functools.cached_property
    def _transactions(self) -> TransactionClaims:
        """Transaction mode's claims and settles (claims.py, settles.py), given narrow callbacks."""
        s = self._settings
        settles = Settles(
            hot=s.hot,
            pools=lambda: self._pools,
            wrap=self._wrap,
            scrub=s.scrub,
            forget=lambda held: self._cancels.forget(held),
            cancel_seen=lambda job_id: job_id in self._cancels.seen,
            signal=lambda queue: self._signal((queue,)),
            connect_timeout=s.connect_timeout,
        )
        return TransactionClaims(
            hot=s.hot,
            settles=settles,
            require=self._require,
            wrap=self._wrap,
            register=lambda held: self._cancels.register(held),
            connect_timeout=s.connect_timeout,
            safe_url=s.safe_url,
        )

    def _is_lease(self, queue: str) -> bool:
        return self._queue_modes.get(queue, self._settings.default_mode) == "lease"

    def look(self, queue: str) -> Look[Claim]:
        """Claim a due job of ``queue`` now, or say when the next comes due (``Backend.look``).

        The default ``claim`` waits through ``self.waiting`` and calls this; the listener's
        notifications, this process's enqueues and a reconnect signal it (``_signal``).
        """
        if not self._listening:
            self._listen_now()
        self._notices.claims(queue)  # its own enqueues' notifications are counted from now
        if queue in self._flow_looks:  # flow.py: a rate limit's start is taken with the claim
            return self._flow_look(queue)
        if self._is_lease(queue):
            return self._lease().look(queue)
        self._count_claimer()
        return self._transactions.look(queue)

    def settle(self, claim: Claim, outcome: Outcome) -> None:
        held = claim.token
        if isinstance(held, LeaseToken):
            return held.engine.settle(claim, outcome)
        if not isinstance(held, _Held):
            raise BackendError("settle() got a claim that this PostgreSQL backend did not make")
        self._transactions.settles.settle(claim, held, outcome)

    def settle_then_claim(self, claim: Claim, outcome: Outcome, queue: str) -> Claim | None:
        """Settle a processed attempt and claim ``queue``'s next due job in the same round trip.

        RELEASE SAVEPOINT, the outcome, COMMIT, then BEGIN, the claim query and SAVEPOINT, in one
        pipeline (a failing claim leaves the outcome committed), as the queue's chained look
        (``QueueWaiting.chain``: what it finds is kept for the waiting loops). The connection
        goes from the settled claim to the new one without the pool. Anything but the plain case
        (a failure, an attempt ended from outside, another mode) settles as ``settle``.
        """
        held = claim.token
        if queue in self._rates:  # the next claim takes a start too: through look
            self.settle(claim, outcome)
            return None
        if isinstance(held, LeaseToken):
            return held.engine.settle_then_claim(claim, outcome, queue)
        plain = outcome.status is JobStatus.PROCESSED and outcome.result is None
        if not plain or not isinstance(held, _Held) or self._is_lease(queue):
            self.settle(claim, outcome)
            return None
        chain = self._transactions.chain
        return self.waiting.queue(queue).chain(lambda: chain(claim, held, outcome, queue))

    def progress(self, claim: Claim, fraction: float, note: str | None) -> None:
        held = claim.token
        if isinstance(held, LeaseToken):
            held.engine.progress(claim, fraction, note)
        elif isinstance(held, _Held):
            inspection.progress(self._conns.aux, claim.job.id or "", fraction, note)

    def interrupt(self, claim: Claim) -> None:
        held = claim.token
        if isinstance(held, _Held):
            self._transactions.settles.interrupt(held)

    def release(self, claim: Claim) -> None:
        held = claim.token
        if isinstance(held, LeaseToken):
            return held.engine.release(claim)
        if isinstance(held, _Held):
            self._transactions.settles.release(held)

    def _signal(self, queues: Iterable[str] | None) -> None:
        """``queues`` (None: all, a reconnect) may have due jobs: one loop of each looks. The one place that signals."""
        if (waiting := self._waiting) is not None:
            for queue in [None] if queues is None else queues:
                waiting.signal(queue)

    # -- cancellation --------------------------------------------------------------------

    def cancel_job(self, job_id: str) -> None:
        inspection.cancel_job(self._conns.aux, lambda job_id: self._cancels.on_cancel(job_id), job_id)

    def _held_ids(self) -> list[int]:
        return self._cancels.held_ids()

    def _recorded_cancels(self, conn: Conn, hinted: Iterable[int] = ()) -> None:
        """Act on the cancellation requests stored for the jobs this process holds and ``hinted``
        (a job whose claim is still on its way, see ``_take``)."""
        self._cancels.recorded(conn, [*self._held_ids(), *hinted])

    # -- periodic jobs, retention, inspecting and managing ---------------------------------

    def last_tick(self, key: str) -> datetime | None:
        return inspection.last_tick(self._conns.aux, key)

    def prune(self, older_than: dict[JobStatus, datetime], limit: int) -> int:
        return inspection.prune(self._conns.aux, older_than, limit)

    def get_job(self, job_id: str, *, connection: Any = None) -> Job | None:
        """``connection``: read through the caller's psycopg connection (its open transaction's view)."""
        return inspection.get_job(self._conns.aux, job_id, connection)

    def list_jobs(self, queue: str | None, status: JobStatus | None, limit: int) -> list[Job]:
        return inspection.list_jobs(self._conns.aux, queue, status, limit)

    def retry_job(self, job_id: str) -> None:
        inspection.retry_job(self._conns.aux, self._signal, job_id)

    def stats(self) -> dict[str, dict[str, int]]:
        return inspection.stats(self._conns.aux)
