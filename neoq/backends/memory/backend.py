"""``MemoryBackend``: the store, its claims (a look, through ``neoq.waiting``) and its readers."""

from __future__ import annotations

import functools
import itertools
import json
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

from ...clock import SYSTEM_CLOCK, Clock
from ...errors import ConfigurationError, DuplicateJobError, JobNotFoundError
from ...job import Job, JobStatus, evolve
from ...job import copy_job as _copy
from ...waiting import Look
from ..base import Backend, Claim, Outcome
from ..capabilities import DASHBOARD, GLOBAL_LIMIT, NOTIFY, PAUSE, PRIORITY, RATE_LIMIT, SNOOZE, UNIQUE_FOR, WORKERS
from .flow import MemoryFlow
from .queues import LOCK_FREE, Entry, QueueJobs
from .records import Record, count_statuses, key_of, payload_copy, shown, status_of
from .search import MemorySearch
from .upkeep import MemoryUpkeep

__all__ = ["MemoryBackend"]

_new_job = object.__new__
_NEW = JobStatus.NEW
_RUNNING = JobStatus.RUNNING
_PROCESSED = JobStatus.PROCESSED
_NOTHING: Look[Claim] = Look(due_in=None)
#: What ``_finish`` writes into a processed job, built once (it is only read).
_PROCESSED_STATE: dict[str, Any] = {"status": _PROCESSED, "error": None, "traceback": None}

#: What ``retry_job`` clears: the outcome of the job's earlier run.
_NO_OUTCOME: dict[str, Any] = {"traceback": None, "progress": None, "progress_note": None}

#: What a change asks of the waiting claim loops, by queue: 0.0 a signal (a job is due now), else
#: the delay until the earliest job it stored for later comes due.
_Wake = dict[str, float]


class MemoryBackend(MemorySearch, MemoryFlow, MemoryUpkeep, Backend):
    """Jobs in this process's memory: fast, private to one client, gone when the process ends.

    Capabilities: ``"notify"`` (every job made due is signalled by the change itself, and the next
    future job's time is in every answer: no polling), ``"dashboard"`` and ``"workers"``
    (``search.MemorySearch``). Private to its client (not ``"shared"``), with no transaction.
    """

    capabilities = frozenset(
        {NOTIFY, PRIORITY, PAUSE, SNOOZE, UNIQUE_FOR, GLOBAL_LIMIT, RATE_LIMIT, DASHBOARD, WORKERS}
    )
    #: Its claims hold nothing to free: the runtime skips ``release`` after each attempt.
    needs_release = False

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._clock = clock or SYSTEM_CLOCK
        #: The waiting keeps time on the client's clock: a test's fake clock drives both.
        self.waiting_clock = self._clock
        # The system clock's own function: one call less on every claim and settle.
        self._now: Callable[[], datetime] = (
            functools.partial(datetime.now, timezone.utc) if type(self._clock) is Clock else self._clock.now
        )
        cls = type(self)
        #: False when a subclass changed how a job is claimed or settled: the chained step then
        #: settles only, and the claim loop claims through the subclass.
        self._plain = (
            cls.settle is MemoryBackend.settle and cls.look is MemoryBackend.look and cls.claim is Backend.claim
        )
        #: Guards the records, the uniqueness keys, the future heaps and the ticks. A claim does
        #: not take it unless a future job came due, nor does the settle of a processed job.
        self._lock = threading.Lock()
        self._records: dict[str, Record] = {}
        self._unique: dict[tuple[str, str], str] = {}
        self._queues: dict[str, QueueJobs] = {}
        #: The entry of each job's current scheduling, to its record. Whoever pops an entry owns
        #: that scheduling: a claim (``dict.pop`` is atomic, so without the lock) or a cancellation.
        #: An entry that is not here (the job was claimed, cancelled or rescheduled since) is stale.
        self._live: dict[Entry, Record] = {}
        self._looks: dict[str, Callable[[], Look[Claim]]] = {}
        self._ids = itertools.count(1)
        self._ticks: dict[str, datetime] = {}
        self._tick_set: set[tuple[str, datetime]] = set()
        self._flow_init()

    def __repr__(self) -> str:
        return "MemoryBackend()"

    @classmethod
    def from_url(cls, url: str, *, clock: Clock | None = None, **options: Any) -> MemoryBackend:
        """``memory://``: a new private store. It takes no options; ``clock`` is the client's."""
        if options:
            raise ConfigurationError(f"memory:// takes no backend options; got {', '.join(sorted(options))}")
        return cls(clock=clock)

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        self.reset_waiting()  # blocked claims return; the jobs stay, for an open() again

    # -- producing -------------------------------------------------------------------------

    def enqueue(self, jobs: Sequence[Job], *, connection: Any = None) -> list[str]:
        if connection is not None:
            raise ConfigurationError(
                "enqueue(connection=...) needs a backend with the 'enqueue_in_transaction' capability; "
                "memory:// has no transactions"
            )
        if len(jobs) == 1:
            return [self._enqueue_one(jobs[0])]  # _store, _schedule and _wake without what a batch needs
        wake: _Wake = {}
        with self._lock:
            ids = self._store(jobs, wake)
        self._wake(wake)
        return ids

    def _enqueue_one(self, job: Job) -> str:
        queue = job.queue
        key = (queue, job.fingerprint or "")
        with self._lock:
            now = self._now()  # read first, as in _store (a test's clock may count its readings)
            existing = self._unique.get(key)
            if existing is not None:
                message = f"job 0 duplicates job {existing} of queue {queue!r}, which is still new"
                raise DuplicateJobError(message, existing)
            windowed = job.unique_for is not None
            if windowed:  # flow.py
                self._check_windows((job,), now.timestamp())
            job_id = str(seq := next(self._ids))
            run_after = job.run_after or now
            record = self._records[job_id] = Record(evolve(job, id=job_id, created_at=now, run_after=run_after), seq)
            self._unique[key] = job_id
            if windowed:
                self._open_windows((job,), (job_id,), now.timestamp())
            entry = record.entry = (-job.priority, run_after.timestamp(), seq, 0)
            self._live[entry] = record
            delay = (run_after - now).total_seconds()
            if delay <= 0:
                self._jobs_of(queue).due.put_entry(entry)
            else:
                self._jobs_of(queue).push_future(entry)
        if delay <= 0:  # outside the lock, as in _wake
            self.waiting.signal(queue)
        else:
            self.waiting.due(queue, delay)
        return job_id

    def _store(self, jobs: Sequence[Job], wake: _Wake) -> list[str]:
        # Called with the lock held: checks every job, then stores all of them.
        now = self._now()
        keys: dict[tuple[str, str], int] = {}
        windowed = False  # a job with unique_for: flow.py's checks, else none
        for index, job in enumerate(jobs):
            windowed = windowed or job.unique_for is not None
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
        if windowed:
            self._check_windows(jobs, now.timestamp())
        ids: list[str] = []
        due: dict[str, list[Entry]] = {}
        for job in jobs:
            seq = next(self._ids)
            job_id = str(seq)
            stored = evolve(job, id=job_id, created_at=now, run_after=job.run_after or now)
            record = self._records[job_id] = Record(stored, seq)
            self._unique[key_of(job)] = job_id
            self._schedule(record, now, wake, due)
            ids.append(job_id)
        for queue, entries in due.items():
            self._jobs_of(queue).due.put_many(entries)  # one turn of each queue's mutex per batch
        if windowed:
            self._open_windows(jobs, ids, now.timestamp())
        return ids

    def _schedule(self, record: Record, now: datetime, wake: _Wake, due: dict[str, list[Entry]] | None = None) -> None:
        """Make the record's current version wait: due now, or in its queue's future heap (the lock held).

        Due entries go to ``due`` (by queue) when given, for the caller to put, else to the queue.
        """
        job = record.job
        queue = job.queue
        run_after = job.run_after or now
        entry = record.entry = (-job.priority, run_after.timestamp(), record.seq, record.version)
        self._live[entry] = record
        delay = (run_after - now).total_seconds()
        if delay <= 0:
            if due is None:
                self._jobs_of(queue).due.put_entry(entry)
            else:
                due.setdefault(queue, []).append(entry)
            wake[queue] = 0.0
        else:
            self._jobs_of(queue).push_future(entry)
            wake[queue] = min(wake.get(queue, delay), delay)

    def _jobs_of(self, queue: str) -> QueueJobs:
        # Called with the lock held.
        jobs = self._queues.get(queue)
        if jobs is None:
            jobs = self._queues[queue] = QueueJobs()
        return jobs

    def _wake(self, wake: _Wake) -> None:
        """Tell the waiting what a change made due (outside the lock: the woken loop looks at once)."""
        if not wake:
            return
        waiting = self.waiting
        for queue, delay in wake.items():
            if delay > 0:
                waiting.due(queue, delay)
            else:
                waiting.signal(queue)

    # -- consuming -------------------------------------------------------------------------

    def look(self, queue: str) -> Look[Claim]:
        """Claim the first due job of ``queue`` without waiting, or say when its next job comes due."""
        jobs = self._queues.get(queue)
        if jobs is None:
            return _NOTHING
        now = self._now()
        if jobs.future and jobs.next_due() <= now.timestamp():
            with self._lock:
                jobs.move_due(now.timestamp())
        due = jobs.due
        record: Record | None = due.take_live(self._live)
        if record is not None and queue in self._gated:  # paused, or limited (flow.py)
            record, held = self._gated_take(queue, jobs, record, now)
            if record is None:
                return held
        if record is None:
            return Look(due_in=self._due_in(jobs, now))
        claim = self._claimed(record, now)
        if due.left():
            return Look(claim)  # more may be due (or stale entries wait): a follower looks
        return Look(claim, due_in=self._due_in(jobs, now), more=False)

    def _due_in(self, jobs: QueueJobs, now: datetime) -> float | None:
        if not jobs.future:
            return None
        with self._lock:
            return jobs.due_in(now.timestamp())

    def _claimed(self, record: Record, now: datetime) -> Claim:
        """Mark the record's job claimed at ``now`` (its entry is ours) and return the handler's claim."""
        record.claimed = True
        # ``record.job`` is this backend's own object (readers copy it under the lock), so it is
        # updated in place, in one call: a reader sees the claim whole or not at all.
        job = record.job
        job.__dict__.update(attempts=job.attempts + 1, ran_at=now)
        # The handler's copy: only this claim's settle changes the record now.
        if type(job) is Job:
            claimed = _new_job(Job)
            state = claimed.__dict__
            state.update(job.__dict__)
        else:
            claimed = _copy(job)
            state = claimed.__dict__
        # The handler's own payload: a fresh dict of immutable values, or decoded from the text.
        flat = record.flat
        state["payload"] = dict(flat) if flat is not None else json.loads(record.payload_text or "null")
        state["status"] = _RUNNING
        return Claim(claimed, None, record.version)  # (job, transaction, token)

    def settle_then_claim(self, claim: Claim, outcome: Outcome, queue: str) -> Claim | None:
        if not self._plain:
            return super().settle_then_claim(claim, outcome, queue)
        if queue in self._gated:
            return self._gated_then_claim(claim, outcome, queue, functools.partial(self.look, queue))
        now = self._now()
        if outcome.status is _PROCESSED and LOCK_FREE:
            # ``_settle``'s first step, inlined: it runs once per job.
            record: Record | None = self._records.get(claim.job.id or "")
            if record is not None and record.claimed and record.version == claim.token:
                record.result_text = outcome.result
                self._finish(record, _PROCESSED_STATE, now)  # only its claimer changes the record now
        else:
            self._settle(claim, outcome, now)
        jobs = self._queues.get(queue)
        if jobs is not None and not jobs.future:
            # The busy loop's step: nothing can have come due, so the due queue is the whole look.
            # A job taken here is a look that answers ``more=True``, which the waiting's ``chain``
            # would neither keep nor pass on: it is skipped, and so is building the answer.
            record = jobs.due.take_live(self._live)
            if record is not None:
                return self._claimed(record, now)
        look = self._looks.get(queue)
        if look is None:
            look = self._looks[queue] = functools.partial(self.look, queue)
        return self.waiting.queue(queue).chain(look)  # nothing due, or future jobs: a look, kept

    def settle(self, claim: Claim, outcome: Outcome) -> None:
        if self._gated and claim.job.queue in self._gated:
            return self._settle_gated(claim, outcome)
        self._settle(claim, outcome, self._now())

    def _settle(self, claim: Claim, outcome: Outcome, now: datetime) -> None:
        record = self._records.get(claim.job.id or "")
        if record is None or not record.claimed or record.version != claim.token:
            return  # settled before (the claim is stale): the contract makes a second settle a no-op
        status = outcome.status
        if status is _PROCESSED and LOCK_FREE:
            record.result_text = outcome.result
            self._finish(record, _PROCESSED_STATE, now)  # only its claimer changes the record now
            return
        wake: _Wake = {}
        with self._lock:
            if not record.claimed or record.version != claim.token:
                return
            if status is not _NEW:
                if status is _PROCESSED:
                    record.result_text = outcome.result
                    self._finish(record, _PROCESSED_STATE, now)
                else:
                    failed = {"status": status, "error": outcome.error, "traceback": outcome.traceback}
                    self._finish(record, failed, now)
                return
            job = record.job
            record.claimed = False
            record.version += 1
            retries = job.retries if outcome.retries is None else outcome.retries
            after, error, traceback = outcome.run_after or now, outcome.error, outcome.traceback
            snoozes = job.snoozes + outcome.snoozed
            record.job = evolve(
                job, error=error, traceback=traceback, run_after=after, retries=retries, snoozes=snoozes
            )
            self._schedule(record, now, wake)
        self._wake(wake)

    def progress(self, claim: Claim, fraction: float, note: str | None) -> None:
        record = self._records.get(claim.job.id or "")
        if record is not None and record.claimed and record.version == claim.token:
            record.job.__dict__.update(progress=fraction, progress_note=note)  # one call: read whole or not

    def _finish(self, record: Record, outcome: dict[str, Any], now: datetime) -> None:
        """Store the final outcome of a claimed record's attempt (its ``status`` and ``error``,
        ``_PROCESSED_STATE`` for a processed one); safe without the lock.

        The order is for the locked readers: the fingerprint is free first (the job counts as
        finished from here) and ``claimed`` is cleared last, so ``prune`` never sees the record
        unclaimed and unfinished; ``cancel_job`` or ``retry_job`` arriving midway act as if called
        just before or just after. The stored ``Job`` is updated in place, in one call.
        """
        job = record.job
        self._unique.pop((job.queue, job.fingerprint or ""), None)  # ``key_of(job)``, inlined
        record.finished_at = now
        job.__dict__.update(outcome)
        record.claimed = False

    # -- inspecting and managing ---------------------------------------------------------

    def get_job(self, job_id: str) -> Job | None:
        with self._lock:
            record = self._records.get(job_id) if isinstance(job_id, str) else None
            if record is None:
                return None
            job = shown(record)  # under the lock: claim and settle change record.job in place
        job.__dict__["payload"] = record.payload()
        return job

    def list_jobs(self, queue: str | None, status: JobStatus | None, limit: int) -> list[Job]:
        with self._lock:
            matching = [
                record
                for record in self._records.values()
                if (queue is None or record.job.queue == queue) and (status is None or status_of(record) is status)
            ]
            matching.sort(key=lambda record: record.seq, reverse=True)
            # copied under the lock: claim and settle change record.job in place
            shown_jobs = [(shown(record), record.payload_text, record.flat) for record in matching[:limit]]
        jobs = []
        for job, text, flat in shown_jobs:
            job.__dict__["payload"] = payload_copy(text, flat)
            jobs.append(job)
        return jobs

    def retry_job(self, job_id: str) -> None:
        wake: _Wake = {}
        with self._lock:
            record = self._get(job_id)
            job = record.job
            if job.status is JobStatus.NEW:
                return
            key = key_of(job)
            holder = self._unique.get(key)
            if holder is not None:
                raise DuplicateJobError(
                    f"job {holder} of queue {job.queue!r} with the same fingerprint is still new", holder
                )
            now = self._clock.now()
            self._unique[key] = job.id or ""
            record.version += 1
            record.finished_at = record.result_text = None
            record.job = evolve(
                job, status=_NEW, run_after=now, retries=0, attempts=0, snoozes=0, error=None, **_NO_OUTCOME
            )
            self._schedule(record, now, wake)
        self._wake(wake)

    def cancel_job(self, job_id: str) -> None:
        with self._lock:
            record = self._get(job_id)
            job = record.job
            if job.status is not JobStatus.NEW:
                return
            entry = record.entry
            running = entry is None or self._live.pop(entry, None) is None  # else the cancellation owns it
            if not running:
                record.version += 1  # its entry, wherever it waits, is stale now
                record.job = evolve(job, status=JobStatus.CANCELLED)
                record.finished_at = self._clock.now()
                self._unique.pop(key_of(job), None)
        if running:
            # A claim took it: the runtime stops the attempt. Outside the lock: the runtime
            # settles the claim, which may take the lock again.
            self._notify_cancel(job_id)

    def stats(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return count_statuses(self._records.values())

    def _get(self, job_id: str) -> Record:
        if (record := self._records.get(job_id) if isinstance(job_id, str) else None) is None:
            raise JobNotFoundError(f"no job has id {job_id!r}")
        return record
