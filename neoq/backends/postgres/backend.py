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

import functools
import json
import logging
import math
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import pq
from psycopg.rows import tuple_row
from psycopg_pool import ConnectionPool, PoolTimeout

from ...clock import Clock
from ...defaults import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_IDLE_TRANSACTION_TIMEOUT,
    DEFAULT_LEASE_DURATION,
    DEFAULT_POLL_INTERVAL,
    MIN_TICK_RETENTION,
)
from ...errors import (
    BackendConnectionError,
    BackendError,
    ConfigurationError,
    DuplicateJobError,
    JobNotFoundError,
    NeoqError,
)
from ...handler import HANDLER_MODES, Handler
from ...job import Job, JobStatus, setting_seconds
from ...redact import HIDDEN, redact_url
from ..base import Backend, Claim, Outcome, PrepareJob
from ..capabilities import ENQUEUE_IN_TRANSACTION, NOTIFY, SHARED, TRANSACTION
from ..lease import LeaseEngine, LeaseToken
from . import forking
from .batch import (
    _COPY_CHUNK,
    _COPY_MIN,
    _NULL,
    _batch_params,
    _check_batch,
    _copy_groups,
    _copy_json,
    _copy_text,
    _copy_time,
    _CopyRow,
    _duplicate_params,
    _in_batch,
    _Stream,
)
from .common import (
    _ROLLBACK_TO_SAVEPOINT,
    CHANNEL,
    Conn,
    _close_quietly,
    _is_connection_error,
    _parse_id,
    _utc,
    _utc_session,
)
from .counters import _Counters
from .leasestore import PostgresLeaseStore
from .listener import _Canceller, _Listener
from .migrations import migrate, missing_migrations
from .queries import QUERIES
from .rows import _claimed_job, _job_from_row
from .state import _drop_count, _Held, _Pools, _QueueState
from .urls import _parse_url, _secrets_of
from .wire import (
    _AUX_STATEMENTS,
    _BEGIN,
    _CHANNEL_B,
    _COMMIT,
    _FATAL_ERROR,
    _HOT_PREPARED,
    _HOT_UNNAMED,
    _IDLE,
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

__all__ = ["CHANNEL", "PostgresBackend"]

logger = logging.getLogger(__name__)

#: The TimeZone of every session neoq opens (``_utc_session``).
_UTC_OPTION = "-c TimeZone=UTC"

#: Connections of the pool for short autocommit work (enqueue, inspection).
_AUX_POOL_MAX = 4

#: While the aux pool has no connection to give, ask the server directly this often (seconds).
_AUX_PROBE_EVERY = 0.25

#: How long a single ``enqueue`` keeps the aux connection it used for the next one, instead of
#: returning it to the pool (seconds): see ``_Pools.spare``.
_SPARE_FOR = 1.0

#: How long the pools keep re-trying one lost connection on their own. psycopg_pool doubles the
#: delay between attempts (1, 2, 4, ... s) up to this, so with its default (5 minutes) a pool
#: refills only at its next attempt, long after the server is back; giving up soon hands
#: reconnection back to demand: the next getconn that has to wait grows the pool at once.
_POOL_RECONNECT_TIMEOUT = 3.0

#: While due jobs of a queue are held by others, re-probe this often (seconds), so a job whose
#: worker died is picked up soon after PostgreSQL ends the dead session, without a notification.
_HELD_JOBS_POLL = 0.25

#: How long after the timed look was due a waiting claim checks that it happened (claim()).
_TIMED_LOOK_GRACE = 0.05

#: How long (seconds) the listener remembers local enqueues whose notification it lets go.
_LOCAL_NOTIFY_MEMORY = 0.5

#: How long (seconds) the listener re-delivers a cancellation to the runtime, and remembers one for
#: a job whose claim is still on its way.
_CANCEL_MEMORY = 2.0

_SYNCHRONOUS_COMMIT = ("on", "off", "local", "remote_write", "remote_apply")

_STATS_KEYS = ("new", "running", "processed", "failed", "cancelled")

#: The statuses a job keeps until ``retry_job``: what ``prune`` deletes.
_FINISHED = (JobStatus.PROCESSED, JobStatus.FAILED, JobStatus.CANCELLED)


#: Per claim-loop thread: ``empty``, what the last look at a queue found when it had nothing due
#: (its _QueueState, the state's wake-up generation then, seconds from the look to the next due
#: job or None, whether others hold due jobs, when it looked); the claim() that follows waits at
#: once instead of looking again while that is still current (see PostgresBackend._current).
_local = threading.local()


# -- helpers ---------------------------------------------------------------------------------


#: The same text the job was validated with (neoq.job.encode_payload); built once, as json.dumps()
#: with options builds a new encoder per call.
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode

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

    def __init__(
        self,
        url: str,
        *,
        idle_transaction_timeout: timedelta | float = DEFAULT_IDLE_TRANSACTION_TIMEOUT,
        pool_min_size: int | None = None,
        pool_max_size: int | None = None,
        synchronous_commit: bool | str = True,
        connect_timeout: timedelta | float | None = None,
        poll_interval: timedelta | float = DEFAULT_POLL_INTERVAL,
        application_name: str | None = None,
        migrate: bool = True,
        mode: str = "transaction",
        lease: timedelta | float = DEFAULT_LEASE_DURATION,
        listen: bool = True,
        prepare_threshold: int | None = 5,
    ) -> None:
        if not isinstance(url, str):
            raise ConfigurationError(f"the PostgreSQL url must be a str, not {type(url).__name__}")
        params = _parse_url(url)
        self._secrets = _secrets_of(url, params)
        #: What messages and repr show of the URL (neoq.redact): never its password.
        self._safe_url = redact_url(url)
        self._idle_ms = round(setting_seconds(idle_transaction_timeout, "idle_transaction_timeout") * 1000)
        self._poll_interval = setting_seconds(poll_interval, "poll_interval") or DEFAULT_POLL_INTERVAL
        self.poll_interval = self._poll_interval  # the waiting's (lease-mode claims wait through it)
        if connect_timeout is None:
            try:
                connect_timeout = float(params.get("connect_timeout") or DEFAULT_CONNECT_TIMEOUT)
            except ValueError:
                raise ConfigurationError("connect_timeout in the PostgreSQL url must be a number") from None
            if connect_timeout <= 0:
                connect_timeout = DEFAULT_CONNECT_TIMEOUT
        self._connect_timeout = setting_seconds(connect_timeout, "connect_timeout") or DEFAULT_CONNECT_TIMEOUT
        if isinstance(synchronous_commit, bool):
            synchronous_commit = "on" if synchronous_commit else "off"
        if synchronous_commit not in _SYNCHRONOUS_COMMIT:
            raise ConfigurationError(
                f"synchronous_commit must be a bool or one of {', '.join(_SYNCHRONOUS_COMMIT)}; "
                f"got {synchronous_commit!r}"
            )
        self._synchronous_commit = synchronous_commit
        for name, value in (("pool_min_size", pool_min_size), ("pool_max_size", pool_max_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigurationError(f"{name} must be an int >= 1 or None, not {value!r}")
        if pool_min_size is not None and pool_max_size is not None and pool_min_size > pool_max_size:
            raise ConfigurationError("pool_min_size must not be larger than pool_max_size")
        self._pool_min = pool_min_size or 1
        self._pool_max_fixed = pool_max_size
        self._pool_max = pool_max_size or max(self._pool_min, 2)
        if application_name is None:
            application_name = str(params.get("application_name") or "neoq")
        self.application_name = application_name
        self._migrate = migrate
        self._url = url
        if mode not in HANDLER_MODES:
            raise ConfigurationError(f"mode must be one of {', '.join(map(repr, HANDLER_MODES))}, not {mode!r}")
        self._default_mode = mode
        self._lease_seconds = setting_seconds(lease, "lease")
        if self._lease_seconds < 0.1:
            raise ConfigurationError(f"lease must be at least 0.1 seconds, got {self._lease_seconds:g}")
        self._listen_enabled = bool(listen)
        if prepare_threshold is not None and (
            isinstance(prepare_threshold, bool) or not isinstance(prepare_threshold, int)
        ):
            raise ConfigurationError(f"prepare_threshold must be an int or None, not {prepare_threshold!r}")
        #: Each queue's mode and claim prefetch (Backend.prepare_queue); others take the default mode.
        self._queue_modes: dict[str, str] = {}
        self._prefetch: dict[str, int] = {}
        self._lease_engine: LeaseEngine | None = None
        user_options = str(params.get("options") or "")
        base_kwargs: dict[str, Any] = {
            "application_name": application_name,
            "connect_timeout": max(2, math.ceil(self._connect_timeout)),
            "prepare_threshold": prepare_threshold,
        }
        #: The hot path's statements are prepared unless prepared statements are off (PgBouncer).
        self._hot = _HOT_PREPARED if prepare_threshold is not None else _HOT_UNNAMED
        # Every session of neoq's runs in UTC, after the URL's own options so that it wins over a
        # TimeZone there (see _utc_session for PGTZ): what is read back never depends on it.
        user_options = f"{user_options} {_UTC_OPTION}".strip()
        sc = f"-c synchronous_commit={synchronous_commit}"
        idle = f"-c idle_in_transaction_session_timeout={self._idle_ms}"
        self._work_kwargs = dict(base_kwargs, autocommit=False, options=f"{user_options} {sc} {idle}")
        self._aux_kwargs = dict(base_kwargs, autocommit=True, options=f"{user_options} {sc} {idle}")
        # Attempt counters are committed without waiting for the WAL flush (see _count_attempt).
        self._counter_kwargs = dict(
            base_kwargs, autocommit=True, options=f"{user_options} -c synchronous_commit=off {idle}"
        )
        # The listener sits idle for long stretches: TCP keepalives let it notice a vanished server.
        self._listen_kwargs = dict(base_kwargs, autocommit=True, options=user_options)
        for key, value in (("keepalives", 1), ("keepalives_idle", 30), ("keepalives_interval", 10)):
            if key not in params:
                self._listen_kwargs[key] = value

        self._pools: _Pools | None = None
        self._fresh_runtime()
        #: Set in a forked child whose parent had this backend open: the next use opens it again.
        self._reopen = False
        #: Set when a connection error was seen, cleared by the next aux work that succeeds.
        self._unreachable = False

    def __repr__(self) -> str:
        return f"PostgresBackend({self._safe_url!r})"

    # -- lifecycle -----------------------------------------------------------------------

    def open(self) -> None:
        """Connect, create or upgrade the schema, start the listener. Idempotent.

        Raises ``BackendConnectionError`` within the connect timeout when the server cannot be
        reached.
        """
        with self._lock:
            if self._pools is not None:
                return
            listen_conn = self._connect(self._listen_kwargs)
            try:
                if self._migrate:
                    self._migrate_on(listen_conn)
                listener = _Listener(
                    listen_conn,
                    connect=lambda: self._connect(self._listen_kwargs),
                    on_notify=self._on_notify,
                    recorded_cancels=self._recorded_cancels,
                    redeliver_cancels=self._redeliver_cancels,
                    signal_all=lambda: self._signal(None),
                )
                work: ConnectionPool[Conn] = ConnectionPool(
                    self._url,
                    kwargs=self._work_kwargs,
                    min_size=self._pool_min,
                    max_size=self._pool_max,
                    open=False,
                    timeout=self._connect_timeout,
                    reconnect_timeout=_POOL_RECONNECT_TIMEOUT,
                    name="neoq-work",
                    configure=functools.partial(_configure, _WORK_STATEMENTS if self._hot.prepared else ()),
                )
                aux: ConnectionPool[Conn] = ConnectionPool(
                    self._url,
                    kwargs=self._aux_kwargs,
                    min_size=1,
                    max_size=_AUX_POOL_MAX,
                    open=False,
                    timeout=self._connect_timeout,
                    reconnect_timeout=_POOL_RECONNECT_TIMEOUT,
                    name="neoq-aux",
                    configure=functools.partial(_configure, _AUX_STATEMENTS if self._hot.prepared else ()),
                )
                work.open(wait=False)
                aux.open(wait=False)
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
                _Counters(lambda: self._connect(self._counter_kwargs), self._hot.prepared, self._wrap),
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
        self.reset_waiting()  # lease-mode claims waiting return None
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
        conn = self._connect(self._listen_kwargs)
        try:
            return self._migrate_on(conn)
        except psycopg.Error as exc:
            raise self._wrap(exc, "migrating the neoq schema") from exc
        finally:
            conn.close()

    def missing_migrations(self) -> list[int]:
        """The schema versions this neoq needs and the database lacks, found with reads only
        (all of them when it has no neoq schema); ``migrate()`` applies them. Needs no ``open()``."""
        conn = self._connect(self._listen_kwargs)
        try:
            return missing_migrations(conn)
        except psycopg.Error as exc:
            raise self._wrap(exc, "reading the neoq schema version") from exc
        finally:
            conn.close()

    def _migrate_on(self, conn: Conn) -> list[int]:
        try:
            return migrate(conn)
        except pg_errors.InsufficientPrivilege as exc:
            # A role meant to run workers only (docs/postgres.md: the worker role) on a schema
            # that is missing or older than this neoq.
            raise BackendError(
                f"the neoq schema needs migrations {', '.join(map(str, missing_migrations(conn)))}, and this role "
                f"may not apply them ({self._scrub(str(exc).strip().splitlines()[0])}): run `neoq migrate` with "
                "a role that may create tables in the schema, then start again"
            ) from exc

    def _connect(self, kwargs: dict[str, Any]) -> Conn:
        try:
            conn = psycopg.connect(self._url, row_factory=tuple_row, **kwargs)
        except psycopg.Error as exc:
            self._unreachable = True
            raise BackendConnectionError(
                f"cannot connect to PostgreSQL at {self._safe_url}: {self._scrub(str(exc).strip())}"
            ) from exc
        forking.track(conn)
        try:
            _utc_session(conn)
        except psycopg.Error as exc:
            _close_quietly(conn)
            raise self._wrap(exc, "setting the session's TimeZone to UTC") from exc
        return conn

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
        self._cancel_seen: dict[str, float] = {}  # job id -> when a cancellation for it arrived
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
        self._reopen = pools is not None

    # -- errors --------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        # libpq's messages do not quote passwords, and _parse_url refuses the URLs it would misread
        # (a part of a password taken for the host or the port); this is the last line of defence.
        for secret in self._secrets:
            text = text.replace(secret, HIDDEN)
        return text

    def _wrap(self, exc: BaseException, doing: str) -> BackendError:
        message = self._scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        if _is_connection_error(exc):
            self._unreachable = True
            return BackendConnectionError(f"PostgreSQL at {self._safe_url} failed while {doing}: {message}")
        return BackendError(f"PostgreSQL failed while {doing}: {message}")

    @contextmanager
    def _aux(self, doing: str) -> Iterator[Conn]:
        """An autocommit connection for short work; driver errors leave it wrapped."""
        pool = self._require().aux
        lease_engine = self._lease_engine
        if lease_engine is not None:
            lease_engine.barrier()  # read this client's own outcomes, batched by the lease mode
        try:
            conn = self._aux_getconn(pool)
            try:
                yield conn
            finally:
                pool.putconn(conn)
            self._unreachable = False
        except (PoolTimeout, psycopg.Error) as exc:
            raise self._aux_error(exc, doing) from exc

    def _aux_error(self, exc: PoolTimeout | psycopg.Error, doing: str) -> NeoqError:
        """The error to raise for ``exc``, met while ``doing`` aux work."""
        if isinstance(exc, PoolTimeout):
            self._unreachable = True
            return BackendConnectionError(
                f"no PostgreSQL connection to {self._safe_url} within {self._connect_timeout:g}s while {doing}"
            )
        return self._wrap(exc, doing)

    def _aux_getconn(self, pool: ConnectionPool[Conn]) -> Conn:
        """A pooled connection within the connect timeout; an outage is reported at once.

        While the pool has no connection to give (busy, or refilling after an outage), the server
        is asked directly every ``_AUX_PROBE_EVERY`` seconds, and at once after a connection error:
        a server that refuses connections raises ``BackendConnectionError`` in milliseconds, where
        the pool alone would wait out the whole connect timeout.
        """
        end = time.monotonic() + self._connect_timeout
        while True:
            if self._unreachable and not pool.get_stats().get("pool_available"):
                self._connect(self._aux_kwargs).close()
            try:
                return pool.getconn(timeout=max(0.001, min(end - time.monotonic(), _AUX_PROBE_EVERY)))
            except PoolTimeout:
                if time.monotonic() >= end:
                    raise
            self._connect(self._aux_kwargs).close()

    # -- producing -------------------------------------------------------------------------

    def enqueue(self, jobs: Sequence[Job], *, connection: Any = None) -> list[str]:
        if not jobs:
            return []
        if connection is None and len(jobs) == 1:
            return [self._enqueue_single(jobs[0], _dumps(jobs[0].payload))]
        _check_batch(jobs)
        return self._store(jobs, [_dumps(job.payload) for job in jobs], connection)

    def enqueue_prepared(self, jobs: Sequence[object], prepare: PrepareJob, *, connection: Any = None) -> list[str]:
        """Prepare each job of a large batch as COPY sends it (``_enqueue_stream``), so the server
        stores the rows sent while the client prepares the next; keep the JSON text ``prepare`` made.

        Through a caller's connection, for a small batch, and for a batch that mixes jobs with
        and without ``run_after`` (two COPYs, so rows do not go in batch order), every job is
        prepared first, as the default does.
        """
        count = len(jobs)
        if connection is None and count == 1:
            job, text = prepare(jobs[0], 0)
            return [self._enqueue_single(job, text)]
        if connection is None and count >= _COPY_MIN:
            timed = sum(1 for job in jobs if isinstance(job, Job) and job.run_after is not None)
            if timed == 0 or timed == count:
                return self._enqueue_stream(jobs, prepare, with_run_after=timed == count)
        pairs = [prepare(job, index) for index, job in enumerate(jobs)]
        prepared = [job for job, _ in pairs]
        if not prepared:
            return []
        _check_batch(prepared)
        return self._store(prepared, [text for _, text in pairs], connection)

    def _enqueue_stream(self, jobs: Sequence[object], prepare: PrepareJob, *, with_run_after: bool) -> list[str]:
        """A large batch prepared while it is written: ``_enqueue_copy`` reads rows from ``_stream``."""
        stream = _Stream()
        rows = self._stream(jobs, prepare, stream)
        try:
            with self._aux("enqueueing jobs") as conn:
                try:
                    ids = self._enqueue_copy(conn, len(jobs), [(with_run_after, rows)], stream.queues)
                except pg_errors.UniqueViolation:
                    if stream.error is not None:  # pragma: no cover - psycopg 3.3 raises the batch's error itself
                        # The server refused a row before the batch's own error ended the COPY:
                        # report the batch's error, as if every job had been checked first.
                        raise stream.error from None
                    raise self._duplicate(conn, _duplicate_params(stream.keys)) from None
        except BaseException:
            self._local_undo(stream.local)
            raise
        # Claims of this process need not wait for the notification's round trip.
        self._signal(stream.queues)
        return ids

    def _stream(self, jobs: Sequence[object], prepare: PrepareJob, stream: _Stream) -> Iterator[_CopyRow]:
        """Prepare ``jobs`` one by one as COPY reads their rows; record what ``_Stream`` lists.

        Errors keep the precedence of checking every job first: an invalid job is reported before
        a duplicate within the batch, wherever each is. A duplicate's row is not sent (the server
        would refuse it with an error that names no job); the jobs after it are only prepared.
        Raising here ends the COPY, and its transaction rolls back.
        """
        seen = stream.keys
        duplicate: DuplicateJobError | None = None
        try:
            for index, item in enumerate(jobs):
                job, text = prepare(item, index)
                first = seen.setdefault((job.queue, job.fingerprint or ""), index)
                if first != index and duplicate is None:
                    duplicate = _in_batch(first, index, job)
                if duplicate is None:
                    yield index, job, text
        except NeoqError as exc:
            stream.error = exc
            raise
        if duplicate is not None:
            stream.error = duplicate
            raise duplicate
        stream.queues.update(queue for queue, _ in seen)
        # Before the commit that sends the notification (see _local_enqueue).
        stream.local = self._local_enqueue(stream.queues)

    def _store(self, jobs: Sequence[Job], payloads: list[str], connection: Any) -> list[str]:
        """Store prepared ``jobs`` (no duplicates among them) with their payloads' JSON text."""
        if connection is not None:
            return self._enqueue_through(connection, _batch_params(jobs, payloads))
        queues = {job.queue for job in jobs}
        local = self._local_enqueue(queues)
        try:
            with self._aux("enqueueing jobs") as conn:
                try:
                    if len(jobs) >= _COPY_MIN:
                        ids = self._enqueue_copy(conn, len(jobs), _copy_groups(jobs, payloads), queues)
                    else:
                        params = _batch_params(jobs, payloads)
                        ids = [str(row[0]) for row in conn.execute(QUERIES["enqueue"], params).fetchall()]
                except pg_errors.UniqueViolation:
                    raise self._duplicate(conn, _batch_params(jobs, payloads)) from None
        except BaseException:
            self._local_undo(local)
            raise
        # Claims of this process need not wait for the notification's round trip.
        self._signal(queues)
        return ids

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
        waiting = self._waiting
        if waiting is not None:  # lease-mode claims wait through it
            waiting.signal(queue)

    def _enqueue_single(self, job: Job, payload: str) -> str:
        """One prepared job, through no caller's connection: ``_store`` without what a batch needs.

        On the aux connection a previous single enqueue kept (``_Pools.spare``), and kept again
        for the next one.
        """
        pools = self._require()
        lease_engine = self._lease_engine
        if lease_engine is not None:
            lease_engine.barrier()  # as in _aux
        queues = {job.queue}
        local = self._local_enqueue(queues)
        try:
            conn, until = self._checkout(pools)
            try:
                try:
                    job_id = self._enqueue_one(conn, job, payload)
                except pg_errors.UniqueViolation:
                    raise self._duplicate(conn, _batch_params((job,), [payload])) from None
            finally:
                self._keep_spare(pools, conn, until)
            self._unreachable = False
        except (PoolTimeout, psycopg.Error) as exc:
            self._local_undo(local)
            raise self._aux_error(exc, "enqueueing jobs") from exc
        except BaseException:
            self._local_undo(local)
            raise
        # Claims of this process need not wait for the notification's round trip.
        self._signal(queues)
        return job_id

    def _checkout(self, pools: _Pools) -> tuple[Conn, float]:
        """An aux connection for a single enqueue and when it goes back to the pool: the kept one
        (``_Pools.spare``) while its time lasts, else one from the pool."""
        try:
            conn, until = pools.spare.pop()
        except IndexError:
            pass
        else:
            if time.monotonic() < until:
                return conn, until
            pools.aux.putconn(conn)  # kept long enough: the pool sees it again (and may retire it)
        return self._aux_getconn(pools.aux), time.monotonic() + _SPARE_FOR

    def _keep_spare(self, pools: _Pools, conn: Conn, until: float) -> None:
        """Keep ``conn`` as the spare of ``pools``, or give it back to the pool: when it is not
        idle (closed, or a statement failed mid-transaction), when another is kept already, or
        when its time is up (so the pool still sees every connection now and then)."""
        spare = pools.spare
        if spare or conn.pgconn.transaction_status != _IDLE or time.monotonic() >= until:
            pools.aux.putconn(conn)
            return
        spare.append((conn, until))
        if self._pools is not pools:  # closed meanwhile: close() may have looked already
            pools.drop_spare()
        elif len(spare) > 1:  # another enqueue kept one at the same moment: keep one
            try:
                extra, _ = spare.pop()
            except IndexError:
                return
            pools.aux.putconn(extra)

    def _enqueue_one(self, conn: Conn, job: Job, payload: str) -> str:
        """One job: one prepared statement, parameters sent as text (no adaptation), one round trip."""
        encoding = conn.info.encoding
        run_after, deadline, max_retries = job.run_after, job.deadline, job.max_retries
        values = (
            job.queue.encode(encoding),
            (job.fingerprint or "").encode(encoding),
            payload.encode(encoding),
            None if run_after is None else run_after.isoformat().encode(),
            None if deadline is None else deadline.isoformat().encode(),
            None if max_retries is None else str(max_retries).encode(),
            _CHANNEL_B,
        )
        hot = self._hot
        command: tuple[_Command] = ((hot.enqueue_one, values, hot.prepared),)
        try:
            result = _exchange(conn, command)[0]
        except pg_errors.InvalidSqlStatementName:
            if not hot.prepared:
                raise
            _prepare(conn, _AUX_STATEMENTS)  # deallocated by someone: prepare again
            result = _exchange(conn, command)[0]
        value = result.get_value(0, 0)
        assert value is not None
        return str(int.from_bytes(value, "big", signed=True))

    def _enqueue_copy(
        self, conn: Conn, count: int, groups: Iterable[tuple[bool, Iterable[_CopyRow]]], queues: set[str]
    ) -> list[str]:
        """A large batch: ``count`` ids reserved in one statement, rows written with COPY, in one
        transaction; return the ids in batch order.

        ``groups``: one COPY each, whether its rows have a ``run_after``, and its rows. Rows may
        be made as they are read (``_stream``): each chunk goes out as soon as it is built, so the
        server stores it while the client makes the next. ``queues`` are notified once every row
        is written. Jobs without ``run_after`` get the column's default, the transaction's
        ``now()`` (as the INSERT's ``coalesce(run_after, now())``): their COPY leaves it out.
        """
        with conn.transaction():
            row = conn.execute(QUERIES["reserve_ids"], {"n": count}).fetchone()
            assert row is not None and row[0] is not None
            ids: list[str] = row[0].split(",")
            cur = conn.cursor()
            for with_run_after, rows in groups:
                columns = "id, queue, fingerprint, payload, deadline, max_retries" + (
                    ", run_after" if with_run_after else ""
                )
                with cur.copy(f"COPY neoq_jobs ({columns}) FROM STDIN") as copy:
                    lines = []
                    for index, job, payload in rows:
                        deadline, max_retries = job.deadline, job.max_retries
                        line = (
                            f"{ids[index]}\t{_copy_text(job.queue)}\t{_copy_text(job.fingerprint or '')}\t"
                            f"{_copy_json(payload)}\t{_NULL if deadline is None else deadline.isoformat()}\t"
                            f"{_NULL if max_retries is None else max_retries}"
                        )
                        if with_run_after:
                            line = f"{line}\t{_copy_time(job.run_after)}"
                        lines.append(line)
                        if len(lines) == _COPY_CHUNK:
                            lines.append("")
                            copy.write("\n".join(lines))
                            lines = []
                    if lines:
                        lines.append("")
                        copy.write("\n".join(lines))
            conn.execute(QUERIES["notify_queues"], {"queues": sorted(queues), "channel": CHANNEL})
        return ids

    def _enqueue_through(self, connection: Any, params: dict[str, Any]) -> list[str]:
        """Insert through the caller's connection, inside its transaction; never commit it."""
        if not isinstance(connection, psycopg.Connection):
            raise ConfigurationError(f"connection must be a psycopg.Connection (sync), not {type(connection).__name__}")
        try:
            cur = connection.cursor(row_factory=tuple_row)
            if connection.autocommit:
                # One statement is its own transaction: all or nothing, notified on its commit.
                try:
                    rows = cur.execute(QUERIES["enqueue"], params).fetchall()
                except pg_errors.UniqueViolation:
                    raise self._duplicate(connection, params) from None
            else:
                # A savepoint keeps a duplicate from aborting the caller's transaction.
                cur.execute("SAVEPOINT neoq_enqueue")
                try:
                    rows = cur.execute(QUERIES["enqueue"], params).fetchall()
                except pg_errors.UniqueViolation:
                    cur.execute("ROLLBACK TO SAVEPOINT neoq_enqueue")
                    duplicate = self._duplicate(connection, params)
                    cur.execute("RELEASE SAVEPOINT neoq_enqueue")
                    raise duplicate from None
                cur.execute("RELEASE SAVEPOINT neoq_enqueue")
        except psycopg.Error as exc:
            raise self._wrap(exc, "enqueueing jobs through the caller's connection") from exc
        return [str(row[0]) for row in rows]

    def _duplicate(self, conn: Conn | psycopg.Connection[Any], params: dict[str, Any]) -> DuplicateJobError:
        row = (
            conn.cursor(row_factory=tuple_row)
            .execute(QUERIES["find_duplicate"], {"queues": params["queues"], "fingerprints": params["fingerprints"]})
            .fetchone()
        )
        holder = None if row is None else str(row[0])
        if holder is None:
            return DuplicateJobError("a job with the same queue and fingerprint is still new")
        return DuplicateJobError(f"job {holder} with the same queue and fingerprint is still new", holder)

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
                store = PostgresLeaseStore(
                    self._url,
                    kwargs=self._aux_kwargs,
                    connect_timeout=self._connect_timeout,
                    safe_url=self._safe_url,
                    wrap=self._wrap,
                )
                engine = self._lease_engine = LeaseEngine(
                    store,
                    self._lease_seconds,
                    loops=lambda queue: self.waiting.queue(queue),
                    prefetch=lambda queue: self._prefetch.get(queue, 0),
                    notify_cancel=self._notify_cancel,
                    name="PostgreSQL",
                )
        return engine

    def claim(self, queue: str, timeout: float) -> Claim | None:
        if not self._listening:
            self._listen_now()
        if self._queue_modes.get(queue, self._default_mode) == "lease":
            self._state(queue)  # signals of this process's enqueues, and their notifications let go
            return self.waiting.queue(queue).claim(functools.partial(self._lease().look, queue), timeout)
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
            return held.engine.settle_then_claim(claim, outcome, queue)
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
        if self._queue_modes.get(queue, self._default_mode) == "lease":
            return super().wakeup(queue, waiters)
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
        waiting = self._waiting
        if waiting is not None:  # lease-mode claims wait through it
            for signalled in [None] if queues is None else list(queues):
                waiting.signal(signalled)

    # -- cancellation --------------------------------------------------------------------

    def cancel_job(self, job_id: str) -> None:
        key = _parse_id(job_id)
        if key is None:
            raise JobNotFoundError(f"no job has id {job_id!r}")
        with self._aux("cancelling a job") as conn:
            if conn.execute(QUERIES["cancel_waiting"], {"id": key}).fetchone() is not None:
                return
            row = conn.execute(QUERIES["job_status"], {"id": key}).fetchone()
            if row is None:
                raise JobNotFoundError(f"no job has id {job_id!r}")
            if row[0] != JobStatus.NEW.value:
                return
            # Held by a claim (running): leave a durable request and tell its holder.
            conn.execute(QUERIES["request_cancel"], {"id": key, "channel": CHANNEL})
        self._on_cancel(str(key))

    def _on_cancel(self, job_id: str) -> None:
        """A cancellation request for ``job_id`` is recorded in the store (this process wrote it,
        or ``_recorded_cancels`` read it)."""
        now = time.monotonic()
        with self._lock:
            self._cancel_seen[job_id] = now
            held = self._claims.get(job_id)
            pools = self._pools
        if held is not None and pools is not None:
            pools.canceller.deliver(job_id)

    def _redeliver_cancels(self) -> bool:
        """Tell the runtime again about cancelled jobs it may have missed; True while any remain.

        A notification can arrive between claim() returning and the runtime registering the
        attempt; the runtime ignores repeats, so repeating for a short while closes that gap.
        """
        now = time.monotonic()
        with self._lock:
            for job_id, seen in list(self._cancel_seen.items()):
                if now - seen > _CANCEL_MEMORY:
                    del self._cancel_seen[job_id]
            claims = self._claims
            due = [
                job_id
                for job_id, seen in self._cancel_seen.items()
                if job_id in claims and seen >= claims[job_id].claimed_at
            ]
            remaining = bool(self._cancel_seen)
            pools = self._pools
        if pools is not None:
            for job_id in due:
                pools.canceller.deliver(job_id)
        return remaining

    def _held_ids(self) -> list[int]:
        with self._lock:
            return [int(job_id) for job_id in self._claims]

    def _recorded_cancels(self, conn: Conn, hinted: Iterable[int] = ()) -> None:
        """Act on the cancellation requests stored for the jobs this process holds and ``hinted``.

        A notification is only a hint: anyone who can connect may send ``c:<id>`` on the
        channel, and clients of other schemas of the database (another ``search_path``) share
        it. Only a request that ``cancel_job`` recorded in this client's ``neoq_cancellations``
        cancels. ``hinted`` covers a job whose claim is still on its way (see ``_take``).
        """
        ids = sorted(set(self._held_ids()).union(hinted))
        if not ids:
            return
        for (job_id,) in conn.execute(QUERIES["pending_cancels"], {"ids": ids}).fetchall():
            self._on_cancel(str(job_id))

    # -- periodic jobs and retention -------------------------------------------------------

    def enqueue_tick(self, job: Job, key: str, tick: datetime) -> str | None:
        params = {
            "queues": [job.queue],
            "fingerprints": [job.fingerprint or ""],
            "payloads": [_dumps(job.payload)],
            "run_afters": [job.run_after],
            "deadlines": [job.deadline],
            "max_retries": [job.max_retries],
            "channel": CHANNEL,
        }
        with self._aux("enqueueing a cron tick") as conn:
            try:
                with conn.transaction():
                    # A concurrent insert of the same tick waits here for the first to commit.
                    if conn.execute(QUERIES["record_tick"], {"key": key, "tick": tick}).fetchone() is None:
                        return None
                    row = conn.execute(QUERIES["enqueue"], params).fetchone()
                    assert row is not None
                    conn.execute(QUERIES["tick_job"], {"job_id": row[0], "key": key, "tick": tick})
            except pg_errors.UniqueViolation:
                raise self._duplicate(conn, params) from None
        self._signal({job.queue})
        return str(row[0])

    def last_tick(self, key: str) -> datetime | None:
        with self._aux("reading the last cron tick") as conn:
            row = conn.execute(QUERIES["last_tick"], {"key": key}).fetchone()
        return None if row is None else _utc(row[0])

    def prune(self, older_than: dict[JobStatus, datetime], limit: int) -> int:
        cutoffs = {status.value: older_than.get(status) for status in _FINISHED}
        deleted = 0
        with self._aux("pruning jobs") as conn:
            # Small batches, each its own transaction, so no lock is held for long.
            while deleted < limit:
                batch = min(500, limit - deleted)
                row = conn.execute(QUERIES["prune"], dict(cutoffs, limit=batch)).fetchone()
                count = 0 if row is None else int(row[0])
                deleted += count
                if count < batch:
                    break
            known = [cutoff for cutoff in older_than.values() if cutoff is not None]
            if known:
                floor = datetime.now(timezone.utc) - timedelta(seconds=MIN_TICK_RETENTION)
                conn.execute(QUERIES["prune_ticks"], {"cutoff": min(*known, floor)})
        return deleted

    # -- inspecting and managing ---------------------------------------------------------

    def get_job(self, job_id: str) -> Job | None:
        key = _parse_id(job_id)
        if key is None:
            return None
        with self._aux("reading a job") as conn:
            row = conn.execute(QUERIES["get_job"], {"id": key}).fetchone()
        return None if row is None else _job_from_row(row)

    def list_jobs(self, queue: str | None, status: JobStatus | None, limit: int) -> list[Job]:
        params = {"queue": queue, "status": None if status is None else status.value, "limit": limit}
        with self._aux("listing jobs") as conn:
            rows = conn.execute(QUERIES["list_jobs"], params).fetchall()
        return [_job_from_row(row) for row in rows]

    def retry_job(self, job_id: str) -> None:
        key = _parse_id(job_id)
        if key is None:
            raise JobNotFoundError(f"no job has id {job_id!r}")
        with self._aux("retrying a job") as conn:
            try:
                row = conn.execute(QUERIES["retry_job"], {"id": key, "channel": CHANNEL}).fetchone()
            except pg_errors.UniqueViolation:
                holder = conn.execute(QUERIES["fingerprint_holder"], {"id": key}).fetchone()
                holder_id = None if holder is None else str(holder[0])
                raise DuplicateJobError(
                    f"job {holder_id or '?'} with the same queue and fingerprint is still new", holder_id
                ) from None
            if row is None:
                if conn.execute(QUERIES["job_status"], {"id": key}).fetchone() is None:
                    raise JobNotFoundError(f"no job has id {job_id!r}")
                return  # a NEW job is left as it is
        self._signal({row[0]})

    def stats(self) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = {}
        with self._aux("reading stats") as conn:
            rows = conn.execute(QUERIES["stats"]).fetchall()
        for queue, status, count in rows:
            counts = result.get(queue)
            if counts is None:
                counts = result[queue] = dict.fromkeys(_STATS_KEYS, 0)
            counts[status] = int(count)
        return result


def _configure(statements: Sequence[str], conn: Conn) -> None:
    """A pool's configure hook: the connection is this process's (``forking``), its session is in
    UTC; prepare ``statements`` (the worker pool's claim and settle, the short-work pool's one-job
    enqueue)."""
    forking.track(conn)
    _utc_session(conn)
    if statements:
        _prepare(conn, statements)
