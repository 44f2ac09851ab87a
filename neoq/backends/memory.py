"""The in-memory backend: the embedded default, private to one client.

Due jobs wait per queue (ordered by ``run_after`` then id) guarded by the backend's one lock, so a
claim takes a single lock: in a deque when they arrive in that order (jobs enqueued due now, the
common case: a claim pops the deque's head in O(1)), else in a heap; a claim takes the earlier of
the two heads. Future jobs and retries wait in a second heap per queue ordered by ``run_after``. A
claim that finds nothing due waits on a lock of its own, queued on the queue's waiters (a condition
variable, as ``threading.Condition`` makes one, except that ``enqueue`` wakes the waiter after
releasing the backend's lock, so the woken claim does not block on it a second time). A blocked
claim waits no longer than until the delayed heap's next due time, then moves what came due into
the due jobs: no timer thread and no polling tick. A future job that becomes the delayed heap's
new head wakes one waiter so it re-times itself. Every record has a version; a queue entry or heap
entry whose version is stale (the job was cancelled, retried or rescheduled since) is skipped, so
nothing has to be removed from the middle of a queue or heap.

**The claim loop's common step takes no lock.** With ten claim loops on one lock, a thread that the
interpreter switches out while it holds the lock (every 5 ms, ``sys.getswitchinterval()``) makes
the others queue on it, and from then on every release wakes a sleeping thread: a lock convoy that
halved throughput here. So each scheduled entry carries a *ticket*, a one-item list that exactly
one ``list.pop()`` empties, and whoever empties it owns that scheduling of the job: a claim (with
or without the lock) or ``cancel_job``. Popping a due entry (``deque.popleft`` or
``heapq.heappop``, entries of floats, ints and strings) and the ticket are single C calls, atomic
under the GIL; when both places hold entries, a claim compares their heads and keeps what it popped
only if it is the head it compared (see ``_take``); a processed job is settled with assignments the
locked readers tolerate in any order (see ``_finish``). Anything else (a retry, a delayed job
coming due, a wake-up, waiting for work) takes the lock as before, and so does everything on an
interpreter without a GIL.

A claimed job stays ``NEW`` in its record, with ``claimed`` set: readers (``get_job``,
``list_jobs``, ``stats``) report it ``RUNNING``, and its ``finished_at`` comes from the record, so
neither costs the claim path a write.
"""

from __future__ import annotations

import collections
import functools
import itertools
import json
import math
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from heapq import heappop, heappush
from typing import Any

from ..clock import SYSTEM_CLOCK, Clock
from ..defaults import MIN_TICK_RETENTION
from ..errors import ConfigurationError, DuplicateJobError, JobNotFoundError
from ..job import Job, JobStatus, evolve
from ..job import copy_job as _copy
from .base import Backend, Claim, Outcome
from .capabilities import NOTIFY

__all__ = ["MemoryBackend"]

_allocate_lock = threading.Lock
_new_job = object.__new__

_EMPTY_STATS = ("new", "running", "processed", "failed", "cancelled")

_NEW = JobStatus.NEW
_RUNNING = JobStatus.RUNNING
_PROCESSED = JobStatus.PROCESSED

#: A heap entry: (run_after timestamp, sequence, job id, record version, ticket). The ticket is a
#: one-item list; the claim or cancellation that pops it owns this scheduling of the job.
_Entry = tuple[float, int, str, int, list[int]]

#: Whether the claim loop's common step may skip the lock (see the module docstring): only when a
#: GIL makes ``deque.popleft``, ``heapq.heappop`` and ``list.pop`` atomic.
_LOCK_FREE = getattr(sys, "_is_gil_enabled", lambda: True)()


class _Ready:
    """The due jobs of one queue and the claims waiting for them; guarded by the backend's lock.

    The due jobs are in two places: ``fifo``, a deque in (run_after, id) order that only takes an
    entry later than its last one, and ``heap`` for the others (a job enqueued with a ``run_after``
    in the past, a retry, a delayed job that came due, a clock that went back). Jobs enqueued due
    now arrive in order, so the common claim is a ``popleft`` instead of a ``heappop``; a claim
    takes the earlier of the two heads.
    """

    __slots__ = ("fifo", "heap", "waiters", "wakeups")

    def __init__(self) -> None:
        #: Entries in increasing (run_after, sequence) order: appended only by ``_push_ready``.
        self.fifo: collections.deque[_Entry] = collections.deque()
        self.heap: list[_Entry] = []
        #: The locks blocked claims wait on (held; released to wake), oldest first.
        self.waiters: collections.deque[threading.Lock] = collections.deque()
        #: ``wakeup`` requests not yet consumed: each makes one claim return None, before any job.
        self.wakeups = 0


class _Record:
    __slots__ = ("claimed", "finished_at", "flat", "job", "payload_text", "seq", "ticket", "version")

    def __init__(self, job: Job, payload_text: str | None, flat: dict[str, Any] | None, seq: int) -> None:
        self.job = job  # each read gets its own payload: a copy of ``flat``, or decoded from the text
        #: A private dict whose values are all immutable (str, int, float, bool, None): a shallow
        #: copy of it is a full copy, and cheaper than decoding. ``None`` for any other payload.
        self.flat = flat
        self.payload_text = payload_text  # the payload as JSON text, when it is not flat
        self.seq = seq
        self.version = 0
        self.claimed = False
        #: The ticket of the job's current heap entry: empty once claimed or cancelled.
        self.ticket: list[int] = []
        self.finished_at: datetime | None = None  # when it last became PROCESSED, FAILED or CANCELLED


class MemoryBackend(Backend):
    """Jobs in this process's memory: fast, private to one client, gone when the process ends.

    Capabilities: ``"notify"`` only. A waiting claim is woken by the enqueue itself, never by a
    poll, which is what ``"notify"`` tells the runtime; the store is private to its client (not
    ``"shared"``), and has no transaction to give handlers or to enqueue in.
    """

    capabilities = frozenset({NOTIFY})
    #: Its claims hold nothing to free: the runtime skips ``release`` after each attempt.
    needs_release = False

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._clock = clock or SYSTEM_CLOCK
        # The system clock's own function: one call less on every claim and settle.
        self._now: Callable[[], datetime] = (
            functools.partial(datetime.now, timezone.utc) if type(self._clock) is Clock else self._clock.now
        )
        cls = type(self)
        #: False when a subclass changed ``settle`` or ``claim``: the combined step then calls them.
        self._plain = cls.settle is MemoryBackend.settle and cls.claim is MemoryBackend.claim
        self._lock = threading.Lock()
        self._records: dict[str, _Record] = {}
        self._unique: dict[tuple[str, str], str] = {}
        self._ready: dict[str, _Ready] = {}
        self._delayed: dict[str, list[_Entry]] = {}
        self._ids = itertools.count(1)
        self._closed = False
        #: While ``enqueue`` holds the lock: the waiters to wake once it is released.
        self._deferred: list[threading.Lock] | None = None
        self._ticks: dict[str, datetime] = {}
        self._tick_set: set[tuple[str, datetime]] = set()

    def __repr__(self) -> str:
        return "MemoryBackend()"

    @classmethod
    def from_url(cls, url: str, *, clock: Clock | None = None, **options: Any) -> MemoryBackend:
        """``memory://``: a new private store. It takes no options; ``clock`` is the client's."""
        if options:
            raise ConfigurationError(f"memory:// takes no backend options; got {', '.join(sorted(options))}")
        return cls(clock=clock)

    # -- lifecycle -----------------------------------------------------------------------

    def open(self) -> None:
        with self._lock:
            self._closed = False

    def close(self) -> None:
        with self._lock:
            self._closed = True

    # -- producing -------------------------------------------------------------------------

    def enqueue(self, jobs: Sequence[Job], *, connection: Any = None) -> list[str]:
        if connection is not None:
            raise ConfigurationError(
                "enqueue(connection=...) needs a backend with the 'enqueue_in_transaction' capability; "
                "memory:// has no transactions"
            )
        deferred: list[threading.Lock] = []
        try:
            with self._lock:
                self._deferred = deferred
                try:
                    return self._store(jobs)
                finally:
                    self._deferred = None
        finally:
            for waiter in deferred:  # woken after the lock is released: they need it at once
                waiter.release()

    def _store(self, jobs: Sequence[Job]) -> list[str]:
        # Called with the lock held: checks every job, then stores all of them.
        now = self._now()
        keys: dict[tuple[str, str], int] = {}
        for index, job in enumerate(jobs):
            key = (job.queue, job.fingerprint or "")
            existing = self._unique.get(key)
            if existing is not None:
                raise DuplicateJobError(
                    f"job {index} duplicates job {existing} of queue {job.queue!r}, which is still new", existing
                )
            if key in keys:
                raise DuplicateJobError(
                    f"jobs {keys[key]} and {index} of the batch have the same queue {job.queue!r} and fingerprint"
                )
            keys[key] = index
        ids: list[str] = []
        for job in jobs:
            seq = next(self._ids)
            job_id = str(seq)
            stored = evolve(job, id=job_id, created_at=now, run_after=job.run_after or now)
            payload = job.payload
            flat = _flat_copy(payload)
            record = _Record(stored, None if flat is not None else _dumps(payload), flat, seq)
            self._records[job_id] = record
            self._unique[(job.queue, job.fingerprint or "")] = job_id
            self._schedule(record, now)
            ids.append(job_id)
        return ids

    def _schedule(self, record: _Record, now: datetime) -> None:
        # Called with the lock held.
        job = record.job
        run_after = job.run_after
        ticket = record.ticket = [record.version]
        entry = ((run_after or now).timestamp(), record.seq, job.id or "", record.version, ticket)
        if run_after is None or run_after <= now:
            ready = self._ready_queue(job.queue)
            _push_ready(ready, entry)
            if ready.waiters:
                self._notify(ready)
            return
        delayed = self._delayed.setdefault(job.queue, [])
        heappush(delayed, entry)
        if delayed[0] is entry:
            self._notify(self._ready_queue(job.queue))  # the next due time moved earlier

    def _ready_queue(self, name: str) -> _Ready:
        # Called with the lock held.
        ready = self._ready.get(name)
        if ready is None:
            ready = self._ready[name] = _Ready()
        return ready

    def _notify(self, ready: _Ready, n: int = 1) -> None:
        # Called with the lock held: wake up to ``n`` blocked claims, now or (in enqueue) just after.
        waiters = ready.waiters
        deferred = self._deferred
        while waiters and n > 0:
            n -= 1
            waiter = waiters.popleft()
            if deferred is None:
                waiter.release()
            else:
                deferred.append(waiter)

    def _promote(self, queue: str, ready: _Ready) -> float:
        """Move the queue's delayed jobs that came due into ``ready``; return seconds to the next one."""
        # Called with the lock held.
        delayed = self._delayed.get(queue)
        if not delayed:
            return math.inf
        now = self._clock.now().timestamp()
        while delayed and delayed[0][0] <= now:
            entry = heappop(delayed)
            if entry[4]:  # not cancelled meanwhile
                _push_ready(ready, entry)
        return delayed[0][0] - now if delayed else math.inf

    # -- consuming -------------------------------------------------------------------------

    def claim(self, queue: str, timeout: float) -> Claim | None:
        clock = self._clock
        end = math.nan  # set on the first wait: the common claim finds a job at once
        now = self._now()  # read before the lock, so the lock is held for less; again after a wait
        ready = self._ready.get(queue)
        if ready is not None and self._fast(queue, ready, now):
            record = self._take(ready, now)
            if record is not None:
                return self._claim_of(record, record.job, record.version, record.flat)
        with self._lock:
            ready = self._ready.get(queue) or self._ready_queue(queue)
            while True:
                if ready.wakeups:
                    ready.wakeups -= 1
                    return None
                next_due = self._promote(queue, ready) if self._delayed.get(queue) else math.inf
                record = self._take(ready, now)
                if record is not None:
                    break
                if end != end:  # nan: the first wait
                    end = clock.monotonic() + timeout
                wait = min(end - clock.monotonic(), next_due)
                if wait > 0:
                    self._wait(ready, wait)
                    now = self._now()
                elif clock.monotonic() >= end:
                    return None
                # woken, timed out, or a delayed job came due: look again
            job, version, flat = record.job, record.version, record.flat
        return self._claim_of(record, job, version, flat)

    def _take(self, ready: _Ready, now: datetime) -> _Record | None:
        # Claim the first due job of ``ready``, if any: the earlier of its two heads. With the lock
        # held, or without it on the fast path: every step that decides is one atomic call, and a
        # head popped after a concurrent claim changed its place (the entry is not the one
        # compared) goes to the heap, where it keeps its order, and we look again. A push made
        # while a lock-free claim runs (always under the lock) counts as made just after it.
        records = self._records
        heap = ready.heap
        fifo = ready.fifo
        while True:
            try:
                if not heap:
                    entry = fifo.popleft()
                elif not fifo:
                    entry = heappop(heap)
                else:
                    first = fifo[0]
                    other = heap[0]
                    entry = fifo.popleft() if first < other else heappop(heap)
                    if entry is not first and entry is not other:  # not the head we compared
                        heappush(heap, entry)
                        continue
                entry[4].pop()  # the ticket: now this scheduling of the job is ours alone
            except IndexError:
                if heap or fifo:
                    continue  # a stale entry (cancelled since it was queued), or a place emptied meanwhile
                return None
            record = records.get(entry[2])
            if record is None:  # pragma: no cover - a job with an open ticket is new: never pruned
                continue
            record.claimed = True
            # ``record.job`` is this backend's own object (readers copy it under the lock), so it
            # is updated in place, in one call: a reader sees the claim whole or not at all.
            job = record.job
            job.__dict__.update(attempts=job.attempts + 1, ran_at=now)
            return record

    def _fast(self, queue: str, ready: _Ready, now: datetime) -> bool:
        """Whether a claim of ``queue`` may try the lock-free step: nothing but due jobs to look at."""
        if not _LOCK_FREE or ready.wakeups:
            return False
        delayed = self._delayed.get(queue)
        if not delayed:
            return True
        try:
            return delayed[0][0] > now.timestamp()  # else the lock moves what came due first
        except IndexError:  # emptied meanwhile
            return False

    def _claim_of(self, record: _Record, job: Job, version: int, flat: dict[str, Any] | None) -> Claim:
        # Outside the lock: only this claim's settle changes the record now.
        if type(job) is Job:
            claimed = _new_job(Job)
            state = claimed.__dict__
            state.update(job.__dict__)
        else:
            claimed = _copy(job)
            state = claimed.__dict__
        # The handler's own payload: a fresh dict of immutable values, or decoded from the text.
        state["payload"] = dict(flat) if flat is not None else json.loads(record.payload_text or "null")
        state["status"] = _RUNNING
        return Claim(claimed, None, version)  # (job, transaction, token)

    def settle_then_claim(self, claim: Claim, outcome: Outcome, queue: str) -> Claim | None:
        if not self._plain:
            return super().settle_then_claim(claim, outcome, queue)  # a subclass changed settle or claim
        now = self._now()
        ready = self._ready.get(queue)
        if outcome.status is _PROCESSED and ready is not None and self._fast(queue, ready, now):
            # The settle of a processed job, without the lock: only its claimer changes the record now.
            record = self._records.get(claim.job.id or "")
            if record is not None and record.claimed:
                self._finish(record, _PROCESSED, None, now)
            record = self._take(ready, now)
            if record is None:
                return None  # the claim loop's own claim call waits for the next job
            return self._claim_of(record, record.job, record.version, record.flat)
        with self._lock:
            self._settle_locked(claim, outcome, now)
            ready = self._ready.get(queue)
            if ready is None or ready.wakeups:
                return None  # a wake-up is for the claim loop's own claim call
            if self._delayed.get(queue):
                self._promote(queue, ready)
            record = self._take(ready, now)
            if record is None:
                return None
            job, version, flat = record.job, record.version, record.flat
        return self._claim_of(record, job, version, flat)

    def _wait(self, ready: _Ready, timeout: float) -> None:
        # Called with the lock held; returns with it held: ``threading.Condition.wait``'s steps.
        waiter = _allocate_lock()
        waiter.acquire()
        ready.waiters.append(waiter)
        lock = self._lock
        lock.release()
        try:
            if timeout < threading.TIMEOUT_MAX:
                waiter.acquire(True, timeout)
            else:
                waiter.acquire()
        finally:
            lock.acquire()
        try:
            ready.waiters.remove(waiter)  # timed out: nobody took it off
        except ValueError:
            pass  # woken: the notifier took it off

    def settle(self, claim: Claim, outcome: Outcome) -> None:
        now = self._now()  # read before the lock, so the lock is held for less
        with self._lock:
            self._settle_locked(claim, outcome, now)

    def _settle_locked(self, claim: Claim, outcome: Outcome, now: datetime) -> None:
        # Called with the lock held.
        record = self._records.get(claim.job.id or "")
        if record is None or not record.claimed or record.version != claim.token:
            return  # settled before (the claim is stale): the contract makes a second settle a no-op
        status = outcome.status
        if status is not JobStatus.NEW:
            self._finish(record, status, None if status is JobStatus.PROCESSED else outcome.error, now)
            return
        record.claimed = False
        job = record.job
        record.version += 1
        record.job = evolve(
            job,
            error=outcome.error,
            run_after=outcome.run_after or now,
            retries=job.retries if outcome.retries is None else outcome.retries,
        )
        self._schedule(record, now)

    def _finish(self, record: _Record, status: JobStatus, error: str | None, now: datetime) -> None:
        """Store the final outcome of a claimed record's attempt; safe without the lock.

        The order is for the locked readers: the fingerprint is free first (the job counts as
        finished from here) and ``claimed`` is cleared last, so ``prune`` never sees the record
        unclaimed and unfinished; ``cancel_job`` or ``retry_job`` arriving midway act as if called
        just before or just after. The stored ``Job`` is updated in place, in one call.
        """
        job = record.job
        self._unique.pop((job.queue, job.fingerprint or ""), None)
        record.finished_at = now
        job.__dict__.update(status=status, error=error)
        record.claimed = False

    def wakeup(self, queue: str, waiters: int) -> None:
        with self._lock:
            ready = self._ready_queue(queue)
            ready.wakeups += waiters
            self._notify(ready, waiters)

    # -- periodic jobs and retention -------------------------------------------------------

    def enqueue_tick(self, job: Job, key: str, tick: datetime) -> str | None:
        with self._lock:
            if (key, tick) in self._tick_set:
                return None
            job_id = self._store([job])[0]
            self._tick_set.add((key, tick))
            last = self._ticks.get(key)
            if last is None or tick > last:
                self._ticks[key] = tick
            return job_id

    def last_tick(self, key: str) -> datetime | None:
        with self._lock:
            return self._ticks.get(key)

    def prune(self, older_than: dict[JobStatus, datetime], limit: int) -> int:
        deleted = 0
        with self._lock:
            for job_id, record in list(self._records.items()):
                if deleted >= limit:
                    break
                job = record.job
                cutoff = older_than.get(job.status)
                if cutoff is None or record.claimed or record.finished_at is None or record.finished_at >= cutoff:
                    continue
                del self._records[job_id]
                deleted += 1
            known = [cutoff for cutoff in older_than.values() if cutoff is not None]
            if known and self._tick_set:
                floor = self._clock.now() - timedelta(seconds=MIN_TICK_RETENTION)
                oldest = min(*known, floor)
                # A schedule's latest tick stays: last_tick() reads it.
                self._tick_set = {
                    (key, tick) for key, tick in self._tick_set if tick >= oldest or self._ticks.get(key) == tick
                }
        return deleted

    # -- inspecting and managing ---------------------------------------------------------

    def get_job(self, job_id: str) -> Job | None:
        with self._lock:
            record = self._records.get(job_id) if isinstance(job_id, str) else None
            if record is None:
                return None
            job = _shown(record)  # under the lock: claim and settle change record.job in place
            text, flat = record.payload_text, record.flat
        job.__dict__["payload"] = _payload_copy(text, flat)
        return job

    def list_jobs(self, queue: str | None, status: JobStatus | None, limit: int) -> list[Job]:
        with self._lock:
            matching = [
                record
                for record in self._records.values()
                if (queue is None or record.job.queue == queue) and (status is None or _status(record) is status)
            ]
            matching.sort(key=lambda record: record.seq, reverse=True)
            # copied under the lock: claim and settle change record.job in place
            records = [(_shown(record), record.payload_text, record.flat) for record in matching[:limit]]
        jobs = []
        for job, text, flat in records:
            job.__dict__["payload"] = _payload_copy(text, flat)
            jobs.append(job)
        return jobs

    def retry_job(self, job_id: str) -> None:
        with self._lock:
            record = self._get(job_id)
            job = record.job
            if job.status is JobStatus.NEW:
                return
            key = (job.queue, job.fingerprint or "")
            holder = self._unique.get(key)
            if holder is not None:
                raise DuplicateJobError(
                    f"job {holder} of queue {job.queue!r} with the same fingerprint is still new", holder
                )
            now = self._clock.now()
            self._unique[key] = job.id or ""
            record.version += 1
            record.finished_at = None
            record.job = evolve(job, status=JobStatus.NEW, run_after=now, retries=0, attempts=0, error=None)
            self._schedule(record, now)

    def cancel_job(self, job_id: str) -> None:
        with self._lock:
            record = self._get(job_id)
            job = record.job
            if job.status is not JobStatus.NEW:
                return
            try:
                record.ticket.pop()  # not claimed yet: the cancellation owns the job now
            except IndexError:
                running = True  # a claim took it: the runtime stops the attempt
            else:
                running = False
                record.version += 1
                record.job = evolve(job, status=JobStatus.CANCELLED)
                record.finished_at = self._clock.now()
                self._unique.pop((job.queue, job.fingerprint or ""), None)
        if running:
            # Outside the lock: the runtime settles the claim, which takes the lock again.
            self._notify_cancel(job_id)

    def stats(self) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = {}
        with self._lock:
            for record in self._records.values():
                job = record.job
                counts = result.get(job.queue)
                if counts is None:
                    counts = result[job.queue] = dict.fromkeys(_EMPTY_STATS, 0)
                counts[_status(record).value] += 1
        return result

    def _get(self, job_id: str) -> _Record:
        record = self._records.get(job_id) if isinstance(job_id, str) else None
        if record is None:
            raise JobNotFoundError(f"no job has id {job_id!r}")
        return record


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  # built once, not per call


def _dumps(payload: Any) -> str:
    return _ENCODER.encode(payload)


#: The exact types whose values JSON keeps as they are and that cannot change in place.
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _flat_copy(payload: Any) -> dict[str, Any] | None:
    """Return a private copy of ``payload`` if it is a dict of immutable JSON scalars, else None.

    Such a payload's JSON round trip gives back an equal dict (same keys, order and values), so
    a shallow copy isolates a reader as well as decoding would.
    """
    if type(payload) is not dict:
        return None
    scalars = _SCALARS
    for key, value in payload.items():
        if type(key) is not str or type(value) not in scalars:
            return None
        if type(value) is float and (value != value or value in (_INF, -_INF)):
            return None  # NaN and infinities: JSON text keeps them only as non-standard tokens
    return dict(payload)


_INF = float("inf")


def _push_ready(ready: _Ready, entry: _Entry) -> None:
    """Put a due entry in ``ready``: at the end of the deque if it comes after its last entry, else in the heap."""
    # Called with the lock held: the deque's last entry changes only here, or when a claim
    # (perhaps lock-free) empties the deque, after which any entry may start it.
    fifo = ready.fifo
    try:
        in_order = fifo[-1] < entry
    except IndexError:
        in_order = True
    if in_order:
        fifo.append(entry)
    else:
        heappush(ready.heap, entry)


def _status(record: _Record) -> JobStatus:
    """The record's status as readers see it: a claimed job is stored ``NEW`` and reads ``RUNNING``."""
    status = record.job.status
    return _RUNNING if status is _NEW and record.claimed else status


def _shown(record: _Record) -> Job:
    """A copy of the record's job for a reader, with its status as ``_status`` reads it and its
    ``finished_at`` (None until that status is final: ``_finish`` sets the time first). Called
    with the lock held."""
    job = _copy(record.job)
    state = job.__dict__
    status = state["status"] = _status(record)
    state["finished_at"] = None if status is _NEW or status is _RUNNING else record.finished_at
    return job


def _payload_copy(text: str | None, flat: dict[str, Any] | None) -> Any:
    """Return a fresh payload for a reader: a copy of the flat dict, or decoded from the text."""
    if flat is not None:
        return dict(flat)
    assert text is not None
    return json.loads(text)
