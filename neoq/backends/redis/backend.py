"""The Redis backend: jobs in one Redis namespace, shared by any number of processes and machines.

How it works, in one screen:

- **Every state change is one script** (``lua/*.lua``, ``scripts.py``): atomic on the server,
  timed by the server's clock, loaded once and loaded again after ``NOSCRIPT``. A job is a hash;
  ``due:<queue>`` is a sorted set of the queue's waiting jobs scored by due time; ``fp:<queue>``
  maps the fingerprints of waiting and running jobs to their ids (uniqueness decided by the
  script, not by a check two processes could both pass); counters per queue make ``stats``
  cheap; ``ticks:<schedule>`` records each cron tick once.
- **Claims are leases** through the shared lease engine (``neoq.backends.lease``; ``store.py``
  is the store's side): a fetch leases a batch of due jobs in one call, moving each one's due
  time to its lease's end, counting its attempt and bumping its fencing token; the engine's
  heartbeat renews running jobs' leases; outcomes are written in batches, each fenced by its
  token, so a holder whose lease ran out (a frozen or SIGKILLed process) changes nothing, and its
  job is due again for anyone once the lease ends. At-least-once; ``Claim.transaction`` is None.
- **Wake-ups** (``listener.py``): scripts publish on the namespace's channel; one pub/sub
  connection per client signals the waiting claim loops (``neoq.waiting``), and a look every
  ``poll_interval`` is the safety net. A cancellation of a running job is seen by its holder's
  next heartbeat (at most 0.5 s).
- **A server restart** is survived: calls fail with ``BackendConnectionError`` meanwhile, the
  listener reconnects with backoff and then has every queue looked at; claim loops of a client
  whose listener knows the server is away wait for it instead of failing.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import weakref
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import redis

from ...clock import Clock
from ...errors import BackendConnectionError, BackendError, ConfigurationError
from ...handler import HANDLER_MODES, Handler
from ...job import Job, JobStatus
from ...waiting import Look
from ..base import Backend, Claim, Outcome, PrepareJob
from ..capabilities import GLOBAL_LIMIT, NOTIFY, PAUSE, PRIORITY, RATE_LIMIT, SHARED, SNOOZE, UNIQUE_FOR
from ..lease import LeaseEngine, LeaseToken
from ..lease.handback import give_back_queue
from ..lease.handoff import wants
from .connections import open_client
from .flow import pause, paused_queues, rated_look
from .inspection import Inspection, check_durability
from .listener import Listener
from .rows import Wakes, job_args, jobs_text, stored_ids, to_us, with_text
from .scripts import Scripts, wrap_error
from .settings import RedisOptions, RedisSettings, parse_settings
from .store import RedisLeaseStore

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ...flow import RateLimit

__all__ = ["RedisBackend"]

logger = logging.getLogger("neoq.backends.redis")

_NOT_OPEN = "the Redis backend is not open (call open(), or use neoq.new())"

_NOTHING: Look[Claim] = Look()


class _Open:
    """What one ``open()`` made: the pool, the scripts, the listener, the lease engine."""

    def __init__(self, disconnect: Callable[[], None], client: redis.Redis, scripts: Scripts, origin: str) -> None:
        #: Closes every connection of ``client``.
        self.disconnect = disconnect
        self.client = client
        self.scripts = scripts
        self.origin = origin
        self.inspection = Inspection(scripts, client, scripts.settings, origin)
        self.listener: Listener | None = None
        self.engine: LeaseEngine | None = None
        self.store: RedisLeaseStore | None = None


class RedisBackend(Backend):
    """Jobs in a Redis namespace, shared by every client that uses it (``pip install neoq[redis]``).

    ``url``: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS) or
    ``unix:///path/to/socket?db=N``, with an optional ``?prefix=P`` (every key neoq writes starts
    with ``P``). Options:

    - ``prefix`` (default ``"neoq:"``): as ``?prefix=``; right after it comes the namespace's hash
      tag, so all of its keys share one Redis Cluster slot (docs/redis.md).
    - ``lease`` (default 30 s): how long a lease lasts; running jobs renew it while their process
      lives, and a dead process's jobs run again once it ends.
    - ``poll_interval`` (default 1 s): the safety-net look of waiting claims (wake-ups come by pub/sub).
    - ``connect_timeout`` (default 10 s): how long connecting may take.
    - ``socket_timeout`` (default 30 s): how long one command may wait for its answer (a server gone
      without closing the connection); then ``BackendConnectionError``.
    - ``check_config`` (default True): at ``open()``, warn when the server's ``appendonly`` is off
      or its ``maxmemory-policy`` may evict keys (when ``CONFIG GET`` is allowed).
    - ``cluster`` (default False; also ``?cluster=true``): the URL names a node of a Redis Cluster;
      redis-py's Cluster client finds the others. The namespace's keys share one slot.

    Capabilities: ``"shared"``, ``"notify"``, and every flow-control one (``"priority"``,
    ``"pause"``, ``"snooze"``, ``"unique_for"``, ``"global_limit"``, ``"rate_limit"``). Handlers get no
    transaction (``Claim.transaction`` is None); both handler modes run on leases.
    """

    capabilities = frozenset({SHARED, NOTIFY, PRIORITY, PAUSE, SNOOZE, UNIQUE_FOR, GLOBAL_LIMIT, RATE_LIMIT})
    handler_modes = frozenset(HANDLER_MODES)

    @classmethod
    def from_url(cls, url: str, *, clock: Clock | None = None, **options: Any) -> RedisBackend:
        """``redis://``, ``rediss://`` and ``unix://``: ``RedisBackend(url, **options)``.

        The server's clock decides what is due, so the client's ``clock`` is not used.
        """
        return cls(url, **options)

    def __init__(self, url: str, **options: Unpack[RedisOptions]) -> None:
        """Options as the class says (``settings.parse_settings`` checks them)."""
        for name in options.keys() - RedisOptions.__annotations__.keys():
            raise TypeError(f"RedisBackend() got an unexpected keyword argument {name!r}")
        self._settings: RedisSettings = parse_settings(url, **options)
        self.poll_interval = self._settings.poll_interval
        self._lock = threading.Lock()
        self._open: _Open | None = None
        #: Set in a forked child whose parent had this backend open: the next use opens it again.
        self._reopen = False
        #: How many jobs beyond the claiming loops one fetch may lease, per queue (its concurrency).
        self._prefetch: dict[str, int] = {}
        #: ``Handler.global_limit`` and ``Handler.rate_limit`` of the queues this process serves with one.
        self._limits: dict[str, int] = {}
        self._rates: dict[str, RateLimit] = {}

    def __repr__(self) -> str:
        return f"RedisBackend({self._settings.safe_url!r})"

    @property
    def settings(self) -> RedisSettings:
        """The validated options (the key namespace among them)."""
        return self._settings

    # -- lifecycle -----------------------------------------------------------------------

    def open(self) -> None:
        """Connect, check the server's durability settings, load the scripts. Idempotent.

        Raises ``BackendConnectionError`` within ``connect_timeout`` when the server cannot be reached.
        """
        s = self._settings
        with self._lock:
            if self._open is not None:
                return
            origin = secrets.token_hex(6)
            try:
                client, disconnect = open_client(s, origin)
            except redis.RedisError as exc:  # the Cluster client connects at once
                raise wrap_error(s, exc, "connecting") from exc
            try:
                client.ping()
                scripts = Scripts(client, s)
                if s.check_config:
                    check_durability(client, s.safe_url)
            except redis.RedisError as exc:
                disconnect()
                raise wrap_error(s, exc, "connecting") from exc
            except (TypeError, ValueError) as exc:  # redis-py builds connections from the url's parameters
                disconnect()
                message = f"the Redis url {s.safe_url} cannot be used ({s.scrub(str(exc))})"
                raise ConfigurationError(message) from None
            self._open = _Open(disconnect, client, scripts, origin)
            self._reopen = False
            _OPENED.add(self)

    def close(self) -> None:
        """Write the outcomes waiting, stop the listener and the lease engine, close every connection."""
        with self._lock:
            opened, self._open = self._open, None
            self._reopen = False
        if opened is None:
            self.reset_waiting()
            return
        if opened.engine is not None:
            opened.engine.close()
        self.reset_waiting()
        if opened.listener is not None:
            opened.listener.stop()
        opened.scripts.close()
        opened.disconnect()

    def _require(self) -> _Open:
        opened = self._open
        if opened is None:
            if self._reopen:
                self.open()  # the first use in a forked child (see _after_fork)
                opened = self._open
            if opened is None:
                raise BackendError(_NOT_OPEN)
        return opened

    def _after_fork(self) -> None:
        """In a child just forked: the parent's connections and threads are not this process's.
        Forget them (their sockets are closed, not shut down: the parent's stay usable); the next
        use opens the child's own. The child runs one thread here, so no lock is taken."""
        opened, self._open = self._open, None
        self._lock = threading.Lock()
        self.reset_waiting(close=False)
        self._reopen = opened is not None

    def _ready(self) -> _Open:
        """The open state, after the outcomes this client settled were written (reads see them)."""
        opened = self._require()
        engine = opened.engine
        if engine is not None:
            engine.barrier()
        return opened

    # -- producing -------------------------------------------------------------------------

    def enqueue(self, jobs: Sequence[Job], *, connection: Any = None) -> list[str]:
        return self.enqueue_prepared(jobs, with_text, connection=connection)

    def enqueue_prepared(self, jobs: Sequence[object], prepare: PrepareJob, *, connection: Any = None) -> list[str]:
        """Prepare every job, keeping its payload's JSON text, then store them in one script call."""
        if connection is not None:
            raise ConfigurationError("the Redis backend cannot enqueue through a connection (no transactions)")
        if len(jobs) != 1:
            if not jobs:
                self._ready()
                return []
            text, wakes = jobs_text(jobs, prepare)  # each job prepared and written, then dropped
            opened = self._ready()
            reply = opened.scripts.run("enqueue", [opened.origin, text], f"enqueueing {len(jobs)} jobs")
            ids = stored_ids(reply, len(jobs), lambda index: prepare(jobs[index], index)[0])
            self._wake(wakes)
            return ids
        job, payload = prepare(jobs[0], 0)
        opened = self._ready()
        args, queue = [opened.origin, *job_args(job, payload)], job.queue
        engine, store = opened.engine, opened.store
        if engine and store and queue in self._prefetch and queue not in self._rates and wants(engine, queue):
            # This client's loops of the queue wait: the enqueue leases for them (handoff.py).
            reply, taken = store.enqueue_handing(engine, queue, args)
            if taken:
                return stored_ids(reply, 1, lambda _index: job)
        else:
            reply = opened.scripts.run("enqueue_one", args, "enqueueing a job")
        ids = stored_ids(reply, 1, lambda _index: job)
        self._wake([(queue, job.run_after)])
        return ids

    def _wake(self, wakes: Wakes) -> None:
        """Tell this client's waiting claim loops of the jobs just stored: now, or when due."""
        waiting = self._waiting
        if waiting is None:
            return
        now: datetime | None = None
        woken: set[str] = set()
        for queue, run_after in wakes:
            if run_after is not None:
                now = now or datetime.now(timezone.utc)
                if run_after > now:
                    waiting.due(queue, (run_after - now).total_seconds())
                    continue
            if queue not in woken:
                woken.add(queue)
                waiting.signal(queue)

    def enqueue_tick(self, job: Job, key: str, tick: datetime) -> str | None:
        opened = self._ready()
        text, wakes = jobs_text((job,), with_text)
        reply = opened.scripts.run("tick", [opened.origin, key, to_us(tick), text], "enqueueing a cron tick")
        if reply == ["seen"]:
            return None
        (job_id,) = stored_ids(reply, 1, lambda _index: job)
        self._wake(wakes)
        return job_id

    # -- consuming -------------------------------------------------------------------------

    def prepare_queue(self, queue: str, handler: Handler) -> None:
        super().prepare_queue(queue, handler)
        limited = handler.global_limit is not None or handler.rate_limit is not None
        # A limited queue leases nothing ahead: a job leased ahead would hold a slot, or a start.
        self._prefetch[queue] = 0 if limited else handler.concurrency
        if handler.rate_limit is not None:
            self._rates[queue] = handler.rate_limit
        else:
            self._rates.pop(queue, None)
        opened = self._require()
        if handler.global_limit is not None:
            self._limits[queue] = handler.global_limit
            try:  # a settle of a limited queue wakes its loops everywhere (settle.lua)
                opened.client.hset(self._settings.key("limited"), queue, handler.global_limit)
            except redis.RedisError as exc:
                raise wrap_error(self._settings, exc, f"preparing queue {queue!r}") from exc
        else:
            self._limits.pop(queue, None)
        self._engine()

    def _engine(self) -> LeaseEngine:
        """The lease engine and the listener of this open backend, started on first use."""
        opened = self._require()
        engine = opened.engine
        if engine is not None:
            return engine
        s = self._settings
        with self._lock:
            if self._open is not opened:
                raise BackendError(_NOT_OPEN)
            if opened.engine is None:
                opened.listener = Listener(
                    opened.client,
                    s.key("wake"),
                    opened.origin,
                    signal=self._signal,
                    paused=self._paused_elsewhere,
                    safe_url=s.safe_url,
                )
                opened.listener.start()
                opened.store = RedisLeaseStore(opened.scripts, self._limits.get)
                opened.engine = LeaseEngine(
                    opened.store,
                    s.lease_seconds,
                    loops=lambda queue: self.waiting.queue(queue),
                    prefetch=lambda queue: self._prefetch.get(queue, 0),
                    notify_cancel=self._notify_cancel,
                    name="Redis",
                )
            return opened.engine

    # -- pausing (flow control, flow.py) ---------------------------------------------------

    def pause_queue(self, queue: str) -> None:
        """Pause ``queue`` in every process: every fetch reads the paused set, so once this returns
        no claim of it is made; jobs leased ahead are given back, here at once and elsewhere when
        the wake-up ``p:<queue>`` arrives."""
        pause(self._ready().scripts, queue, True)
        self._paused_elsewhere(queue)

    def resume_queue(self, queue: str) -> None:
        pause(self._ready().scripts, queue, False)
        self._signal(queue)

    def paused_queues(self) -> set[str]:
        return paused_queues(self._ready().client, self._settings)

    def _paused_elsewhere(self, queue: str) -> None:
        """``queue`` was paused: give back the jobs this client leased ahead for it, not started."""
        opened = self._open
        if opened is not None and opened.engine is not None:
            give_back_queue(opened.engine, queue)

    def _signal(self, queue: str | None) -> None:
        waiting = self._waiting
        if waiting is not None:
            waiting.signal(queue)

    def look(self, queue: str) -> Look[Claim]:
        """Lease a due job of ``queue`` through the lease engine, or say when the next comes due."""
        engine = self._engine()
        try:
            rate = self._rates.get(queue)
            if rate is not None:
                current = self._require()
                assert current.store is not None  # made with the engine
                return rated_look(engine, current.store, current.scripts, queue, rate)
            return engine.look(queue)
        except BackendConnectionError:
            opened = self._open
            listener = None if opened is None else opened.listener
            if listener is None or not listener.away.is_set():
                raise
            # The listener knows the server is away and signals every queue once it is back:
            # wait for that (or the timed look) instead of failing in a loop.
            return _NOTHING

    def settle(self, claim: Claim, outcome: Outcome) -> None:
        lease = claim.token
        if not isinstance(lease, LeaseToken):
            raise BackendError("settle() got a claim that this Redis backend did not make")
        lease.engine.settle(claim, outcome)

    def progress(self, claim: Claim, fraction: float, note: str | None) -> None:
        """Store the running attempt's progress report, fenced by its lease (progress.lua)."""
        lease = claim.token
        if isinstance(lease, LeaseToken):
            lease.engine.progress(claim, fraction, note)

    def settle_then_claim(self, claim: Claim, outcome: Outcome, queue: str) -> Claim | None:
        lease = claim.token
        if not isinstance(lease, LeaseToken):
            raise BackendError("settle() got a claim that this Redis backend did not make")
        if queue in self._rates:  # every claim of a rate-limited queue takes a start: through look
            lease.engine.settle(claim, outcome)
            return None
        return lease.engine.settle_then_claim(claim, outcome, queue)

    def release(self, claim: Claim) -> None:
        lease = claim.token
        if isinstance(lease, LeaseToken):
            lease.engine.release(claim)

    # -- inspecting and managing (inspection.py) -----------------------------------------

    def _inspect(self) -> Inspection:
        """The managing calls, after the outcomes this client settled were written (reads see them)."""
        return self._ready().inspection

    def get_job(self, job_id: str) -> Job | None:
        return self._inspect().get_job(job_id)

    def list_jobs(self, queue: str | None, status: JobStatus | None, limit: int) -> list[Job]:
        return self._inspect().list_jobs(queue, status, limit)

    def stats(self) -> dict[str, dict[str, int]]:
        return self._inspect().stats()

    def retry_job(self, job_id: str) -> None:
        self._inspect().retry_job(job_id, self._signal)

    def cancel_job(self, job_id: str) -> None:
        self._inspect().cancel_job(job_id)

    def last_tick(self, key: str) -> datetime | None:
        return self._inspect().last_tick(key)

    def prune(self, older_than: dict[JobStatus, datetime], limit: int) -> int:
        return self._inspect().prune(older_than, limit)


#: Open backends, forgotten by a forked child (``_after_fork``).
_OPENED: weakref.WeakSet[RedisBackend] = weakref.WeakSet()


def _forget_in_child() -> None:
    for backend in list(_OPENED):
        backend._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
