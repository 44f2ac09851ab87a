"""The PostgreSQL backend: durable jobs shared by any number of processes and machines.

How it works, in one screen:

- **A claim is a transaction.** ``claim()`` takes a connection from the worker pool and runs
  ``SELECT ... FOR UPDATE SKIP LOCKED`` (``run_after <= now()`` in the query itself) followed by a
  ``SAVEPOINT``, pipelined into one round trip. The open transaction holds the job's row lock
  until ``settle()`` writes the outcome and commits; if the process dies, PostgreSQL rolls the
  transaction back and the job is claimable again. The handler gets that connection as
  ``Claim.transaction``; a failure rolls back to the savepoint before recording the outcome. A
  processed attempt's settle and the next claim of its claim loop share one round trip and the
  connection (``settle_then_claim``).
- **Attempts survive crashes.** The attempt counter lives in ``neoq_attempts``. The settle adds
  the attempt there, in the claim's transaction, with its outcome. An attempt that ends without a
  settle (its worker died, its session was ended) leaves a trace instead: the claim's lock wrote
  the claiming transaction's id into the row's xmax, and only a settle replaces that row version.
  The next claim reads the trace (``lost``) and commits the missed attempt in a transaction of
  its own, on a second (autocommit) connection, before its handler runs, so a job that kills
  every worker still ends FAILED (``_take``, ``_send_count``; migration 0003).
- **Wake-ups.** One LISTEN connection per client, on one channel for all queues; the payload is
  ``q:<queue>`` (jobs to look at) or ``c:<job id>`` (a cancellation of that job may be recorded:
  look in this client's ``neoq_cancellations``; only a recorded request cancels). Enqueues notify
  inside their transaction, so nothing wakes before the commit. Blocked claims wait on a
  per-queue condition that the listener signals; each empty probe also returns when the queue's
  next job comes due (by the database's clock), so future jobs and retries are picked up on time
  in every process; a poll every ``poll_interval`` is the safety net.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from contextlib import suppress
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import pq
from psycopg_pool import PoolTimeout

from ...clock import Clock
from ...errors import BackendConnectionError, BackendError, NeoqError
from ...handler import HANDLER_MODES, Handler
from ...job import Job, JobStatus
from ..base import Backend, Claim, Outcome, PrepareJob
from ..capabilities import ENQUEUE_IN_TRANSACTION, NOTIFY, SHARED, TRANSACTION
from . import forking, inspection
from .cancels import _Cancels
from .common import (
    _ROLLBACK_TO_SAVEPOINT,
    CHANNEL,
    Conn,
    _close_quietly,
)
from .counters import _Counters
from .enqueue import Enqueuer
from .lease import LeaseEngine, LeaseToken
from .listener import _Canceller, _Listener
from .pools import Connections
from .queries import QUERIES
from .rows import _claimed_job
from .settings import PostgresOptions, parse_settings
from .state import _drop_count, _Held, _Pools, _QueueState
from .wire import (
    _BEGIN,
    _COMMIT,
    _FATAL_ERROR,
    _PIPELINE_ABORTED,
    _PREPARED,
    _RELEASE_SAVEPOINT_B,
    _ROLLBACK_TO_SAVEPOINT_B,
    _SAVEPOINT_B,
    _WORK_STATEMENTS,
    _Command,
    _exchange,
    _load_row,
    _prepare,
    _receive,
    _result_error,
    _send,
    _wire_text,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["CHANNEL", "PostgresBackend"]

logger = logging.getLogger(__name__)

#: While due jobs of a queue are held by others, re-probe this often (seconds), so a job whose
#: worker died is picked up soon after PostgreSQL ends the dead session, without a notification.
_HELD_JOBS_POLL = 0.25

#: How long after the timed look was due a waiting claim checks that it happened (claim()).
_TIMED_LOOK_GRACE = 0.05

#: How long (seconds) the listener remembers local enqueues whose notification it lets go.
_LOCAL_NOTIFY_MEMORY = 0.5


#: Per claim-loop thread: ``empty``, what the last look at a queue found when it had nothing due
#: (its _QueueState, the state's wake-up generation then, seconds from the look to the next due
#: job or None, whether others hold due jobs, when it looked); the claim() that follows waits at
#: once instead of looking again while that is still current (see PostgresBackend._current).
_local = threading.local()


_NOT_OPEN = "the PostgreSQL backend is not open (call open(), or use neoq.new())"


#: What a look at a queue found when nothing was due (see ``_local``).
_Known = tuple[_QueueState, int, float | None, bool, float]


# -- the backend ---------------------------------------------------------------------------


class PostgresBackend(Backend):
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

    Capabilities: ``"shared"`` and ``"enqueue_in_transaction"``; ``"transaction"`` unless the
    default ``mode`` is ``"lease"``; ``"notify"`` unless ``listen`` is False.
    """

    handler_modes = frozenset(HANDLER_MODES)

    @property
    def capabilities(self) -> frozenset[str]:
        """What this backend offers, as configured (see ``neoq.backends.capabilities``)."""
        offered = {SHARED, ENQUEUE_IN_TRANSACTION}
        if self._default_mode == "transaction":
            offered.add(TRANSACTION)
        if self._listen_enabled:
            offered.add(NOTIFY)
        return frozenset(offered)

    @classmethod
    def from_url(cls, url: str, *, clock: Clock | None = None, **options: Any) -> PostgresBackend:
        """``postgresql://`` and ``postgres://``: ``PostgresBackend(url, **options)``.

        The database's clock decides what is due, so the client's ``clock`` is not used.
        """
        return cls(url, **options)

    def __init__(self, url: str, **options: Unpack[PostgresOptions]) -> None:
        """Options as the class says (``settings.parse_settings`` checks them)."""
        for name in options.keys() - PostgresOptions.__annotations__.keys():
            raise TypeError(f"PostgresBackend() got an unexpected keyword argument {name!r}")
        self._settings = s = parse_settings(url, **options)
        self.application_name = s.application_name
        # The settings the claims read, and the lease engine (lease.LeaseHost), by their names there.
        self._default_mode, self._lease_seconds, self._listen_enabled = s.default_mode, s.lease_seconds, s.listen
        self._hot, self._pool_min, self._pool_max_fixed = s.hot, s.pool_min, s.pool_max_fixed
        self._url, self._safe_url, self._aux_kwargs = s.url, s.safe_url, s.aux_kwargs
        self._connect_timeout, self._poll_interval = s.connect_timeout, s.poll_interval
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
            require=lambda: self._require(),
            barrier=self._barrier,
            local_enqueue=lambda queues: self._local_enqueue(queues),
            local_undo=lambda states: self._local_undo(states),
            signal=lambda queues: self._signal(queues),
            current=lambda: self._pools,
        )
        self._pools: _Pools | None = None
        self._fresh_runtime()
        #: Set in a forked child whose parent had this backend open: the next use opens it again.
        self._reopen = False

    def __repr__(self) -> str:
        return f"PostgresBackend({self._safe_url!r})"

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
            listen_conn = self._connect(settings.listen_kwargs)
            try:
                if settings.migrate:
                    self._conns.migrate_on(listen_conn)
                listener = _Listener(
                    listen_conn,
                    connect=lambda: self._connect(settings.listen_kwargs),
                    on_notify=self._on_notify,
                    recorded_cancels=self._recorded_cancels,
                    redeliver_cancels=self._redeliver_cancels,
                    signal_all=lambda: self._signal(None),
                )
                work, aux = self._conns.open_pools(self._pool_max)
            except psycopg.Error as exc:
                listen_conn.close()
                raise self._wrap(exc, "preparing the neoq schema") from exc
            except BaseException:
                listen_conn.close()
                raise
            canceller = _Canceller(self._notify_cancel)
            self._pools = _Pools(
                work,
                aux,
                listener,
                canceller,
                _Counters(lambda: self._connect(settings.counter_kwargs), settings.hot.prepared, self._wrap),
            )
            self._reopen = False
            forking.track_backend(self)
            # Wake-ups left from an earlier open() (shutdown's) must not cut the new claims short.
            self._states.clear()
            # The listener starts with the first claim (or queue): a client that only enqueues
            # listens to nothing, so its own notifications cost it nothing.
            self._listening = not self._listen_enabled
            canceller.start()

    def close(self) -> None:
        """Close the pools and the listener and join the backend's threads. Idempotent."""
        with self._lock:
            pools, self._pools = self._pools, None
            self._reopen = False
            states = list(self._states.values())
            leftover = list(self._claims.values())
            lease_engine, self._lease_engine = self._lease_engine, None
        if lease_engine is not None:
            lease_engine.close()
        if pools is None:
            return
        # Blocked claims return None at once and see the backend closed.
        for state in states:
            with state.cond:
                state.generation += 1
                state.cond.notify_all()
        pools.listener.stop()
        pools.canceller.stop()
        pools.counters.close()
        pools.drop_spare()
        # Claims whose handler thread was abandoned: end their transactions so nothing stays
        # locked or open. Their late release() finds the connection closed and tolerates it.
        for held in leftover:
            with held.lock:
                _drop_count(held)
                if not held.returned:
                    self._close_under_handler(held)
        pools.work.close(timeout=5.0)
        pools.aux.close(timeout=5.0)

    def migrate(self) -> list[int]:
        """Create or upgrade the schema now; return the migration versions applied (none when it
        was current: that is found out with reads only, so a role without DDL rights may call it)."""
        return self._conns.migrate()

    def missing_migrations(self) -> list[int]:
        """The schema versions this neoq needs and the database lacks, found with reads only
        (all of them when it has no neoq schema); ``migrate()`` applies them. Needs no ``open()``."""
        return self._conns.missing_migrations()

    def _connect(self, kwargs: dict[str, Any]) -> Conn:
        return self._conns.connect(kwargs)

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
        self._states: dict[str, _QueueState] = {}
        self._claims: dict[str, _Held] = {}
        self._cancels = _Cancels(self._lock, self._claims, lambda: self._pools)
        #: job id -> when a cancellation for it arrived (``cancels``).
        self._cancel_seen = self._cancels.seen
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
        self._fresh_runtime()
        self._reopen = pools is not None

    # -- errors --------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        return self._settings.scrub(text)

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

    def _local_enqueue(self, queues: set[str]) -> list[_QueueState]:
        """Count an enqueue of this process on the states of its queues that have claims here;
        return those states (``_local_undo`` takes it back).

        Counted before the statement is sent: its notification can reach the listener before
        the enqueue's own wake-up of the claims (``_signal``), and the listener must already
        know to let it go. Without a listener there is nothing to let go.
        """
        if not self._listening or not self._listen_enabled:
            return []
        states = self._states
        found = [state for state in (states.get(queue) for queue in queues) if state is not None]
        now = time.monotonic()
        for state in found:
            with state.cond:
                # A count older than the memory is of notifications that never came (the listener
                # was away): forget it.
                state.local = 1 if now - state.local_at > _LOCAL_NOTIFY_MEMORY else state.local + 1
                state.local_at = now
        return found

    def _local_undo(self, states: list[_QueueState]) -> None:
        """An enqueue counted by ``_local_enqueue`` stored nothing: no notification comes."""
        for state in states:
            with state.cond:
                state.local = max(0, state.local - 1)

    def _on_notify(self, queue: str) -> None:
        """The listener got ``q:<queue>``: wake a claim, unless an enqueue of this process did."""
        state = self._states.get(queue)
        if state is None:
            return
        with state.cond:
            if state.local > 0 and time.monotonic() - state.local_at <= _LOCAL_NOTIFY_MEMORY:
                state.local -= 1
                return
            state.local = 0
            state.generation += 1
            state.signalled_at = time.monotonic()
            state.cond.notify()

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
        self._queue_modes[queue] = handler.mode or self._default_mode
        self._prefetch[queue] = handler.concurrency

    def _lease(self) -> LeaseEngine:
        """The lease engine of this open backend, started on first use."""
        self._require()  # outside the lock: in a forked child it opens the backend, which takes it
        with self._lock:
            engine = self._lease_engine
            if engine is None:
                if self._pools is None:  # closed meanwhile
                    raise BackendError(_NOT_OPEN)
                engine = self._lease_engine = LeaseEngine(self, self._lease_seconds)
        return engine

    def claim(self, queue: str, timeout: float) -> Claim | None:
        if not self._listening:
            self._listen_now()
        if self._queue_modes.get(queue, self._default_mode) == "lease":
            return self._lease().claim(queue, timeout, self._prefetch.get(queue, 0))
        self._require()
        state = self._state(queue)
        self._count_claimer()
        clock = time.monotonic
        end = clock() + max(0.0, timeout)
        empty = _local.__dict__.pop("empty", None)
        result: Claim | tuple[float | None, bool]
        poll = self._poll_interval
        while True:
            if self._pools is None:
                return None  # closed (close() wakes every waiting claim)
            with state.cond:
                generation = state.generation
            # What the last look found (the settle that just ran, this loop's previous claim, or
            # this claim before it waited), if it is still current; else look now.
            known: _Known | None = empty if self._current(empty, state, generation) else None
            empty = None
            if known is None:
                looked = clock()
                state.looked_at = looked
                result = self._probe(queue, timeout, end)
                if isinstance(result, Claim):
                    # More due jobs are waiting: hand the baton to one more sleeping claim. It is a
                    # signal, so a claim that was not waiting just then looks too, unless one began
                    # a look after it (see _current).
                    if result.token.more:
                        with state.cond:
                            state.generation += 1
                            state.signalled_at = time.monotonic()
                            state.cond.notify()
                    return result
                known = (state, generation, result[0], result[1], looked)
            busy = known[3]
            now = clock()
            next_due = None if known[2] is None else known[2] - (now - known[4])
            if now >= end or self._pools is None:
                # The loop calls again at once: that claim starts from what this one knew.
                _local.empty = known
                return None
            # A millisecond past the due time: the next probe's now() is then surely past it.
            due_at = math.inf if next_due is None else now + max(0.0, next_due) + 0.001
            with state.cond:
                if state.generation != generation:
                    continue  # signalled while probing: look again at once
                if state.wakeups:
                    state.wakeups -= 1
                    return None
                # While others hold due jobs, one waiting claim per queue and process looks
                # often. One waiting claim looks every poll interval, for a job whose
                # notification was lost; the others look only when signalled or at a due time.
                # They wake just after each timed look was due, without a look of their own:
                # if it did not happen (its claim went to run a job), one of them takes the turn
                # and looks. Without notifications (listen=False), every claim looks every poll
                # interval.
                polling = busy and not state.polling_held
                timer = not state.timer_held
                if not self._listen_enabled:
                    wake = min(end, due_at, now + poll)
                elif timer:
                    wake = min(end, due_at, max(now, state.looked_at + poll))
                else:
                    wake = min(end, due_at, now + poll, max(now, state.looked_at + poll + _TIMED_LOOK_GRACE))
                if polling:
                    state.polling_held = True
                    wake = min(wake, now + _HELD_JOBS_POLL)
                if timer:
                    state.timer_held = True
                state.waiting += 1
                try:
                    signalled = state.cond.wait(max(0.0, wake - now))
                finally:
                    state.waiting -= 1
                    if polling:
                        state.polling_held = False
                    if timer:
                        state.timer_held = False
                if state.wakeups:
                    state.wakeups -= 1
                    return None
                # Signalled since this claim's look, and nobody looked after the signal: look.
                changed = state.generation != generation and state.looked_at <= state.signalled_at
            if signalled or changed or polling or not self._listen_enabled:
                continue  # look now
            later = clock()
            if later + 0.001 >= due_at or (timer and later + 0.001 >= state.looked_at + poll):
                continue  # look now
            # Nothing to look for (a check for the timed turn, or the claim's time is up): wait on
            # from what is known, without a probe.
            empty = known

    def _current(self, known: _Known | None, state: _QueueState, generation: int) -> bool:
        """Whether ``known`` (see ``_local``) still describes ``state``'s queue.

        It does while: nothing signalled the queue since, or a claim of this process looked
        after the signal (that claim handles what the signal was about, and passes the baton if
        more is due); no job it knew of has come due; and someone looked recently enough (this
        process's timed look every poll interval; while others hold due jobs, a look of its own
        within ``_HELD_JOBS_POLL`` or another claim polling for them). A caller that never
        waits, ``claim(queue, 0)`` in a loop, thus still looks at least every poll interval.
        """
        if known is None or known[0] is not state:
            return False
        if known[1] != generation and state.looked_at <= state.signalled_at:
            return False  # signalled since, and nobody has looked since the signal
        now = time.monotonic()
        age = now - known[4]
        if known[2] is not None and known[2] <= age:
            return False
        if known[3] and age >= _HELD_JOBS_POLL and not state.polling_held:
            return False  # others hold due jobs, and no claim of this process polls for them
        return now - state.looked_at < self._poll_interval

    def _probe(self, queue: str, timeout: float, end: float) -> Claim | tuple[float | None, bool]:
        """Try once to claim a due job; else return (seconds until the next is due, others hold due jobs)."""
        pools = self._require()
        while True:
            conn = self._getconn(pools, min(max(timeout, 1.0), self._connect_timeout))
            if conn is None:
                return (None, True)  # every connection runs a job: look again soon
            probe_started = time.monotonic()
            try:
                row = self._claim_row(conn, queue)
                idle = self._idle(conn, queue) if row is None else None
            except psycopg.Error as exc:
                self._putconn(pools, conn)  # the pool rolls back or discards it
                raise self._wrap(exc, f"claiming a job of queue {queue!r}") from exc
            if row is None:
                self._putconn(pools, conn)
                return idle or (None, False)
            claim = self._take(pools, conn, row, probe_started)
            if claim is not None:
                return claim
            if time.monotonic() >= end:
                return (0.0, False)  # out of time after a cancelled job: others may be due now

    def _take(self, pools: _Pools, conn: Conn, row: tuple[Any, ...], probe_started: float) -> Claim | None:
        """Make a claim of the job ``row`` locked on ``conn``; None when a cancellation was waiting
        for it (it is then stored CANCELLED and ``conn`` returned). An earlier attempt that the
        claim found lost is counted first (``_send_count``); this one is counted by its settle."""
        job_id = str(row[0])
        held = _Held(conn, job_id, probe_started)
        lost = held.lost = bool(row[13])
        held.ran_at = row[12]
        held.attempts = int(row[11]) + lost + 1
        if len(row) > 14:
            held.more = bool(row[14])
        with self._lock:
            # Registered before anything else, so a cancellation arriving from now on finds it.
            # One that arrived while the claim query ran may have missed its snapshot.
            self._claims[job_id] = held
            seen = self._cancel_seen.get(job_id)
            cancelled = seen is not None and seen >= probe_started
        if row[10] or cancelled:
            # Cancelled while it waited for this claim: record it and never run it.
            self._settle_unrun(held, _claimed_job(row, job_id, 0, None))
            return None
        if lost:
            try:
                self._send_count(pools, held)
            except BaseException:
                # Without the lost attempt counted the job must not run: end the claim (it is due again).
                self._forget(held)
                _close_quietly(conn)
                self._putconn(pools, conn)
                raise
        return Claim(_claimed_job(row, job_id, held.attempts, held.ran_at), transaction=conn, token=held)

    def _idle(self, conn: Conn, queue: str) -> tuple[float | None, bool]:
        """After a claim that found nothing: (seconds until the next job is due, others hold due
        jobs), and the transaction ended, in one round trip.

        Committed, not rolled back: a claim that found nothing may still have locked a row. When
        a job it was about to lock was updated meanwhile (its retry was just settled), PostgreSQL
        locks the new version before it rechecks the claim's conditions on it, and keeps the lock
        when the recheck fails. Rolled back, that lock would leave an aborted transaction's id in
        the row's xmax, the trace of an attempt lost without a settle (migration 0003), and the
        next claim would count an attempt that never ran. A transaction that wrote nothing
        commits without writing anything either.
        """
        hot = self._hot
        commands: tuple[_Command, ...] = (
            (hot.claim_idle, (queue.encode(conn.info.encoding),), hot.prepared),
            (_COMMIT, None, False),
        )
        row = _load_row(conn, _exchange(conn, commands)[0])
        assert row is not None
        return row[0], bool(row[1])

    def _claim_row(self, conn: Conn, queue: str) -> tuple[Any, ...] | None:
        """BEGIN, the claim query and the handler's SAVEPOINT, in one round trip; the claim's row
        (None when nothing is due: the transaction is still open)."""
        hot = self._hot
        commands: tuple[_Command, ...] = (
            (_BEGIN, None, False),
            (hot.claim_probe, (queue.encode(conn.info.encoding),), hot.prepared),
            (_SAVEPOINT_B, None, False),
        )
        try:
            results = _exchange(conn, commands)
        except pg_errors.InvalidSqlStatementName:
            if not hot.prepared:
                raise
            # Someone deallocated neoq's statements on this connection (DEALLOCATE ALL): again.
            conn.rollback()
            _prepare(conn, _WORK_STATEMENTS)
            results = _exchange(conn, commands)
        return _load_row(conn, results[1])

    def _send_count(self, pools: _Pools, held: _Held) -> None:
        """Count the lost attempt the claim saw, on a second connection, before the handler runs.

        The attempt this claim runs is counted by its settle, in the claim's transaction; an
        earlier one that ended without a settle cannot be: if this attempt died too, a count
        written in its transaction would vanish with it, and the trace this claim's lock
        replaced would be gone, so a job that kills every worker would never run out of
        attempts. So it is counted in a transaction of its own on a connection of its own,
        committed whatever becomes of this worker: once its bytes are on the socket (flushed
        here, before the handler starts), the server runs and commits it even if this process
        is SIGKILLed the next instant. Its result is read only before the attempt is settled
        (``_collect_count``), so the handler does not wait for that round trip.

        Committed with synchronous_commit off: it has to survive the *worker* dying, which it does
        once the server has it. Only a crash of the server itself could lose it, and that also
        rolls back every running claim, so a job would at worst be counted one attempt short.
        """
        ran_at = held.ran_at
        assert ran_at is not None
        conn = pools.counters.get()
        hot = self._hot
        try:
            with conn.lock:
                _send(conn.pgconn, ((hot.counter, (held.job_id.encode(), ran_at.isoformat().encode()), hot.prepared),))
        except psycopg.Error as exc:
            _close_quietly(conn)
            raise self._wrap(exc, f"counting an attempt of job {held.job_id}") from exc
        except BaseException:
            _close_quietly(conn)
            raise
        held.counter = conn

    def _collect_count(self, held: _Held) -> None:
        """Read the result of the attempt counter ``_send_count`` sent, before the attempt is settled.

        A counter that failed is written again here, while this worker is alive; if that fails
        too, ``BackendError`` is raised: the caller then settles nothing, the claim's transaction
        (the handler's writes with it) is rolled back, and the job runs again.
        """
        conn = held.counter
        if conn is None:
            return
        held.counter = None
        try:
            with conn.lock:
                result = _receive(conn, 1)[0]
            if result.status == _FATAL_ERROR:
                raise _result_error(conn, result)
            value = result.get_value(0, 0)
            assert value is not None
            counted = int.from_bytes(value, "big", signed=True)
        except psycopg.Error as exc:
            _close_quietly(conn)
            logger.warning(
                "neoq: the attempt counter of job %s failed (%s); counting it again",
                held.job_id,
                self._scrub(str(exc).strip()),
            )
            counted = self._count_attempt(held)
        else:
            pools = self._pools
            if pools is None:
                _close_quietly(conn)
            else:
                pools.counters.put(conn)
        if counted + 1 != held.attempts:
            logger.warning(
                "neoq: job %s ran as attempt %d but is at attempt %d: an attempt of a worker that died "
                "holding it was counted after this claim read the count",
                held.job_id,
                held.attempts,
                counted + 1,
            )

    def _count_attempt(self, held: _Held) -> int:
        """Count ``held``'s attempt on a counter connection, waiting for the result; raise BackendError."""
        pools = self._pools
        if pools is None:
            raise BackendError(f"the attempt of job {held.job_id} could not be counted: the backend is closed")
        ran_at = held.ran_at
        params = (held.job_id.encode(), None if ran_at is None else ran_at.isoformat().encode())
        conn = pools.counters.get()
        try:
            hot = self._hot
            result = _exchange(conn, ((hot.counter, params, hot.prepared),))[0]
            value = result.get_value(0, 0)
            assert value is not None
        except psycopg.Error as exc:
            _close_quietly(conn)
            raise self._wrap(exc, f"counting an attempt of job {held.job_id} (it will run again)") from exc
        finally:
            pools.counters.put(conn)
        return int.from_bytes(value, "big", signed=True)

    def _settle_unrun(self, held: _Held, job: Job) -> None:
        """A claimed job with a pending cancellation: store CANCELLED and end the claim."""
        conn = held.conn
        held.settled = held.released = held.returned = True
        self._forget(held)
        try:
            with conn.pipeline():
                # Never started: not an attempt; an earlier one the claim saw lost is counted here.
                params = self._settle_params(job, Outcome(JobStatus.CANCELLED, job.error), held, counted=int(held.lost))
                conn.execute(QUERIES["settle"], params)
                conn.commit()
        except psycopg.Error as exc:
            _close_quietly(conn)
            self._putconn(self._pools, conn)
            raise self._wrap(exc, f"cancelling job {job.id}") from exc
        logger.info("neoq: job %s queue=%r was cancelled before it could start", job.id, job.queue)
        self._putconn(self._pools, conn)

    def _getconn(self, pools: _Pools, timeout: float) -> Conn | None:
        try:
            return pools.work.getconn(timeout=timeout)
        except PoolTimeout as exc:
            stats = pools.work.get_stats()
            if stats.get("pool_size", 0) >= stats.get("pool_max", self._pool_max):
                return None  # every connection is held by a running job: wait for one
            raise BackendConnectionError(f"no PostgreSQL connection to {self._safe_url} within {timeout:g}s") from exc

    def _putconn(self, pools: _Pools | None, conn: Conn) -> None:
        pool = pools.work if pools is not None else None
        if pool is None:
            _close_quietly(conn)
            return
        try:
            pool.putconn(conn)
        except Exception:  # a closed pool, or a connection of an earlier open(): just close it
            _close_quietly(conn)

    def _count_claimer(self) -> None:
        thread = threading.current_thread()
        if thread in self._claimers:
            return
        with self._lock:
            self._claimers.add(thread)
            wanted = len(self._claimers)
            pools = self._pools
            if self._pool_max_fixed is not None or pools is None or wanted <= self._pool_max:
                return
            # Each claiming thread holds at most one connection: size the pool to them.
            self._pool_max = wanted
            pools.work.resize(self._pool_min, wanted)

    def _forget(self, held: _Held) -> None:
        with self._lock:
            if self._claims.get(held.job_id) is held:
                del self._claims[held.job_id]
            self._cancel_seen.pop(held.job_id, None)

    def _settle_params(self, job: Job, outcome: Outcome, held: _Held, counted: int = 1) -> dict[str, Any]:
        status = outcome.status
        return {
            "id": int(job.id or 0),
            "counted": counted,
            "ran_at": held.ran_at,
            "status": status.value,
            "error": None if status is JobStatus.PROCESSED else outcome.error,
            "run_after": outcome.run_after if status is JobStatus.NEW else None,
            "retries": outcome.retries if status is JobStatus.NEW else None,
            "channel": CHANNEL,
        }

    def settle(self, claim: Claim, outcome: Outcome) -> None:
        held = claim.token
        if isinstance(held, LeaseToken):
            return held.engine.settle(claim, outcome)
        if not isinstance(held, _Held):
            raise BackendError("settle() got a claim that this PostgreSQL backend did not make")
        with held.lock:
            if held.settled:
                return
            held.settled = True
            try:
                self._collect_count(held)
                self._write_outcome(held, claim.job, outcome)
            finally:
                self._forget(held)
                if held.released:
                    self._return(held)
                elif held.interrupted:
                    # The handler may still run: close its transaction to it, so its later
                    # statements fail instead of running outside the job's transaction.
                    self._close_under_handler(held)

    def settle_then_claim(self, claim: Claim, outcome: Outcome, queue: str) -> Claim | None:
        """Settle a processed attempt and claim ``queue``'s next due job in the same round trip.

        RELEASE SAVEPOINT, the outcome, COMMIT, then BEGIN, the claim query and SAVEPOINT, in one
        pipeline (a failing claim leaves the outcome committed). The
        connection goes from the settled claim to the new one without the pool. Anything but the
        plain case (a failure, an attempt ended from outside, another mode) settles as ``settle``.
        """
        held = claim.token
        if isinstance(held, LeaseToken):
            return held.engine.settle_then_claim(claim, outcome, queue, self._prefetch.get(queue, 0))
        if (
            outcome.status is not JobStatus.PROCESSED
            or not isinstance(held, _Held)
            or self._queue_modes.get(queue, self._default_mode) == "lease"
        ):
            self.settle(claim, outcome)
            return None
        pools = self._pools
        state = self._states.get(queue)
        following: Claim | None = None
        with held.lock:
            if held.settled:
                return None
            held.settled = True
            conn = held.conn
            try:
                self._collect_count(held)
                if (
                    pools is None
                    or state is None
                    or held.interrupted
                    or conn.closed
                    or conn.info.transaction_status != pq.TransactionStatus.INTRANS
                ):
                    self._write_outcome(held, claim.job, outcome)
                    return None
                generation = state.generation
                probe_started = time.monotonic()
                row = self._settle_and_claim(conn, held, claim.job, queue)
                if row is None:
                    if conn.info.transaction_status == pq.TransactionStatus.INTRANS:
                        try:
                            next_due, busy = self._idle(conn, queue)
                        except psycopg.Error as exc:  # the outcome is stored; release() cleans up
                            logger.debug("neoq: claiming after job %s failed: %s", claim.job.id, exc)
                        else:
                            # The queue has nothing due: the claim loop goes straight to waiting.
                            state.looked_at = max(state.looked_at, probe_started)
                            _local.empty = (state, generation, next_due, busy, probe_started)
                    return None  # release() returns the connection
                held.returned = True  # the connection is the next claim's now
                self._forget(held)
                try:
                    following = self._take(pools, conn, row, probe_started)
                except NeoqError as exc:
                    # The outcome is stored; the claim loop claims again the usual way.
                    logger.debug("neoq: claiming after job %s failed: %s", claim.job.id, exc)
                return following
            finally:
                self._forget(held)
                if held.released:
                    self._return(held)
                elif held.interrupted:
                    self._close_under_handler(held)

    def _settle_and_claim(self, conn: Conn, held: _Held, job: Job, queue: str) -> tuple[Any, ...] | None:
        """The exchange of ``settle_then_claim``: the claim's row, or None when the claim failed.

        Raises ``BackendError`` when the outcome was not stored.
        """
        hot = self._hot
        encoding = conn.info.encoding
        settle: tuple[_Command, ...] = (
            (_RELEASE_SAVEPOINT_B, None, False),
            self._processed(job, held),
            (_COMMIT, None, False),
        )
        claim: tuple[_Command, ...] = (
            (_BEGIN, None, False),
            (hot.claim, (queue.encode(encoding),), hot.prepared),
            (_SAVEPOINT_B, None, False),
        )
        try:
            # One segment (one sync): the server commits a COMMIT when it executes it, so a claim
            # that fails after it cannot undo the outcome; and libpq sends a segment per sync.
            with conn.lock:
                _send(conn.pgconn, settle + claim)
                results = _receive(conn, len(settle) + len(claim))
            settled, claimed = results[: len(settle)], results[len(settle) :]
            for result in settled:
                if result.status == _FATAL_ERROR:
                    raise _result_error(conn, result)
        except psycopg.Error as exc:
            with suppress(psycopg.Error):
                if not conn.closed:
                    conn.rollback()
            raise self._wrap(exc, f"settling job {job.id} as processed") from exc
        for result in claimed:
            if result.status == _FATAL_ERROR or result.status == _PIPELINE_ABORTED:
                # The outcome is committed; the claim loop claims again the usual way (and reports).
                error = _result_error(conn, result)
                logger.debug("neoq: claiming after job %s failed: %s", job.id, error)
                with suppress(psycopg.Error):
                    conn.rollback()
                    if isinstance(error, pg_errors.InvalidSqlStatementName) and hot.prepared:
                        _prepare(conn, _WORK_STATEMENTS)  # deallocated by someone: prepare again
                return None
        return _load_row(conn, claimed[1])

    def _processed(self, job: Job, held: _Held) -> _Command:
        """The statement that stores PROCESSED for ``job`` and counts its attempt: the short one,
        unless a cancellation request for it reached this process (the full settle removes the
        request)."""
        hot = self._hot
        job_id = job.id or "0"
        if job_id in self._cancel_seen:
            params = self._settle_params(job, Outcome(JobStatus.PROCESSED), held)
            return (hot.settle, tuple(_wire_text(params[name]) for name in _PREPARED["settle"][2]), hot.prepared)
        ran_at = held.ran_at
        assert ran_at is not None
        return (hot.settle_processed, (job_id.encode(), ran_at.isoformat().encode()), hot.prepared)

    def _write_outcome(self, held: _Held, job: Job, outcome: Outcome) -> None:
        conn = held.conn
        params = self._settle_params(job, outcome, held)
        doing = f"settling job {job.id} as {outcome.status.value}"
        try:
            if conn.closed:
                raise BackendConnectionError(f"the connection of job {job.id} was closed before it was settled")
            status = conn.info.transaction_status
            if status == pq.TransactionStatus.IDLE:
                self._count_unsettled(conn, job, held)
                raise BackendError(
                    f"job {job.id}'s transaction was ended by its handler (handlers must not commit or roll back "
                    "job_context().transaction); the outcome is lost and the job will run again"
                )
            if outcome.status is JobStatus.PROCESSED:
                if status == pq.TransactionStatus.INERROR:
                    raise BackendError(
                        f"job {job.id}'s handler returned with its transaction in error, so its writes cannot "
                        "commit; the job will run again"
                    )
                # The outcome and the commit in one round trip, through the prepared statement.
                # The savepoint is released first, so that the job row is updated by the transaction
                # that locked it. Updated inside the savepoint's subtransaction, the row's old version
                # gets a MultiXact as its xmax (the parent's lock and the child's update), which every
                # claim whose index scan passes it has to look up: claims under concurrency slowed down.
                commands: tuple[_Command, ...] = (
                    (_RELEASE_SAVEPOINT_B, None, False),
                    self._processed(job, held),
                    (_COMMIT, None, False),
                )
                _exchange(conn, commands)
                return
            if held.interrupted:
                self._write_outcome_from_outside(held, params)
                return
            # A failure: undo the handler's writes, keep the claim's lock, record the outcome.
            for attempt in range(3):
                try:
                    with conn.pipeline():
                        conn.execute(_ROLLBACK_TO_SAVEPOINT)
                        conn.execute(QUERIES["settle"], params)
                        conn.commit()
                    return
                except pg_errors.QueryCanceled:
                    # interrupt()'s cancel request can land after the handler's statement ended,
                    # on ours instead; the savepoint is still there, so do it again.
                    if not held.interrupted or attempt == 2:
                        raise
        except psycopg.Error as exc:
            with suppress(psycopg.Error):
                if not conn.closed:
                    conn.rollback()
            raise self._wrap(exc, doing) from exc
        except NeoqError:
            with suppress(psycopg.Error):
                if not conn.closed:
                    conn.rollback()
            raise

    def _count_unsettled(self, conn: Conn, job: Job, held: _Held) -> None:
        """Count the attempt of a handler that ended the claim's transaction itself: no settle will."""
        try:
            conn.execute(QUERIES["count_unsettled"], {"id": int(job.id or 0), "ran_at": held.ran_at})
            conn.commit()
        except psycopg.Error as exc:
            logger.warning(
                "neoq: the attempt of job %s could not be counted: %s", job.id, self._scrub(str(exc).strip())
            )
            with suppress(psycopg.Error):
                conn.rollback()

    def _write_outcome_from_outside(self, held: _Held, params: dict[str, Any]) -> None:
        """Undo the handler's writes, store the outcome, commit and close, under one hold of the lock.

        The handler may still be running: holding the connection's lock from the rollback to
        the close means none of its later statements can run in between (in a new transaction
        after the commit); once the lock is free, the connection is closed and they fail.
        """
        hot = self._hot
        args = tuple(_wire_text(params[name]) for name in _PREPARED["settle"][2])
        commands: tuple[_Command, ...] = (
            (_ROLLBACK_TO_SAVEPOINT_B, None, False),
            (hot.settle, args, hot.prepared),
            (_COMMIT, None, False),
        )
        for attempt in range(3):
            try:
                _exchange(held.conn, commands, close_after=True)
                return
            except pg_errors.QueryCanceled:
                # interrupt()'s cancel request can land after the handler's statement ended, on
                # ours instead; the savepoint is still there, so do it again.
                if attempt == 2:
                    raise

    def _close_under_handler(self, held: _Held) -> None:
        conn = held.conn
        lock: threading.Lock = conn.lock
        # The handler thread holds the connection's lock while one of its statements runs;
        # closing the libpq connection under it would pull the rug from a running call.
        if lock.acquire(timeout=0.5):
            try:
                _close_quietly(conn)
            finally:
                lock.release()
            return
        with suppress(Exception):
            conn.cancel_safe(timeout=2.0)
        if lock.acquire(timeout=2.0):
            try:
                _close_quietly(conn)
            finally:
                lock.release()
        # Else release() closes it once the handler returns: whatever the handler does in the
        # meantime runs in a transaction that is never committed.

    def interrupt(self, claim: Claim) -> None:
        held = claim.token
        if not isinstance(held, _Held):
            return
        held.interrupted = True
        conn = held.conn
        if conn.closed or held.settled:
            return
        try:
            conn.cancel_safe(timeout=min(5.0, self._connect_timeout))
        except Exception as exc:  # interrupt must not raise; settle copes with a live statement
            logger.debug("neoq: cancelling the statement of job %s failed: %s", held.job_id, exc)

    def release(self, claim: Claim) -> None:
        held = claim.token
        if isinstance(held, LeaseToken):
            return held.engine.release(claim)
        if not isinstance(held, _Held):
            return
        try:
            with held.lock:
                held.released = True
                if held.settled:
                    self._return(held)
                # Else an outside settle is on its way; it returns the connection when done.
        except Exception:  # release must not raise
            logger.exception("neoq: releasing the connection of job %s failed", held.job_id)

    def _return(self, held: _Held) -> None:
        # Called with held.lock: the connection goes back exactly once, in a clean state.
        if held.returned:
            return
        held.returned = True
        _drop_count(held)
        conn = held.conn
        if not conn.closed and conn.info.transaction_status != pq.TransactionStatus.IDLE:
            try:
                conn.rollback()
            except psycopg.Error:
                _close_quietly(conn)
        self._putconn(self._pools, conn)

    def wakeup(self, queue: str, waiters: int) -> None:
        state = self._state(queue)
        with state.cond:
            state.wakeups += waiters
            state.cond.notify(waiters)

    def _state(self, queue: str) -> _QueueState:
        state = self._states.get(queue)
        if state is None:
            with self._lock:
                state = self._states.get(queue)
                if state is None:
                    state = self._states[queue] = _QueueState(threading.Lock())
        return state

    def _signal(self, queues: set[str] | None) -> None:
        """Wake one waiting claim of each queue (every known queue when ``queues`` is None)."""
        states = self._states
        for name in list(states) if queues is None else queues:
            state = states.get(name)
            if state is None:
                continue
            with state.cond:
                state.generation += 1
                state.signalled_at = time.monotonic()
                state.cond.notify()

    # -- cancellation --------------------------------------------------------------------

    def cancel_job(self, job_id: str) -> None:
        inspection.cancel_job(self._conns.aux, self._on_cancel, job_id)

    def _on_cancel(self, job_id: str) -> None:
        """A cancellation request for ``job_id`` is recorded in the store (``cancels``)."""
        self._cancels.on_cancel(job_id)

    def _redeliver_cancels(self) -> bool:
        """Tell the runtime again about cancelled jobs it may have missed; True while any remain."""
        return self._cancels.redeliver()

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

    def get_job(self, job_id: str) -> Job | None:
        return inspection.get_job(self._conns.aux, job_id)

    def list_jobs(self, queue: str | None, status: JobStatus | None, limit: int) -> list[Job]:
        return inspection.list_jobs(self._conns.aux, queue, status, limit)

    def retry_job(self, job_id: str) -> None:
        inspection.retry_job(self._conns.aux, self._signal, job_id)

    def stats(self) -> dict[str, dict[str, int]]:
        return inspection.stats(self._conns.aux)
