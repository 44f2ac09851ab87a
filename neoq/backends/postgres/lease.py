"""The lease mode of the PostgreSQL backend: no transaction is held while a handler runs.

How it works (see docs/lease-mode.md and ``sql/lease.sql``):

- **Claims in batches.** A claim leases up to as many due jobs as the queue has idle claim loops,
  in one statement (``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED LIMIT n)``), and
  commits at once. The lease is the job's ``run_after`` moved to ``now() + lease``, with a fresh
  fencing token (``lease_token``); the attempt is counted in the same statement. The first loop
  gets the first job; the others wait in a per-queue buffer for the loops that asked with it.
- **Heartbeat.** One thread per client renews every running lease of the client in one batched
  UPDATE, so a lease lives as long as its process does, however long the handler runs. The same
  statement reports leases this client lost: cancelled ones reach the runtime as cancellations.
- **Batched outcomes.** ``settle`` hands the outcome to one flusher thread and returns; the flusher
  writes every outcome waiting at that moment in one fenced statement, within a few milliseconds.
  Every other call of this client that touches the database first waits for the outcomes settled
  before it (``barrier``), so the client reads its own writes (a finished job's fingerprint is
  free for its next ``enqueue``). An outcome not yet written when the process dies is simply
  lost: the job runs again once its lease expires (at-least-once).
- **Prefetch.** A claim leases jobs for the idle claim loops plus up to ``concurrency`` more, kept
  in a buffer for loops that finish soon; a buffered job nobody started within a heartbeat
  interval is put back, so a busy process does not sit on jobs that others could run.
- **Read-ahead.** While the buffer turns over fast (its jobs wait a small part of a heartbeat
  interval), the loop that takes a job from a buffer that is running low first leases the next
  batch (up to three times ``concurrency``), so claim statements overlap with the handlers; at
  most two claim statements of a queue run at once. A job is taken from the buffer without a lock.
- **Crash recovery without a leader.** A dead or frozen worker stops renewing; when its lease
  expires the job is simply due again (``run_after <= now()``) for any worker. Its fencing token
  no longer matches, so a late outcome from the old holder changes nothing.

The guarantee is at-least-once with fencing: ``Claim.transaction`` is ``None`` in this mode, and
exactly-once effects through the job's transaction are a feature of the transaction mode.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from importlib import resources
from typing import Any, Protocol

import psycopg
from psycopg.abc import Buffer
from psycopg.adapt import Loader
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolTimeout

from ...errors import BackendConnectionError, BackendError, NeoqError
from ...job import Job, JobStatus
from ..base import Claim, Outcome
from . import forking
from .common import CHANNEL, _utc_session
from .queries import parse_queries
from .state import _QueueState

__all__ = ["LeaseEngine", "LeaseToken", "heartbeat_interval"]

logger = logging.getLogger(__name__)

#: The named queries of the lease mode.
LEASE_QUERIES: dict[str, str] = parse_queries(
    resources.files(__package__).joinpath("sql").joinpath("lease.sql").read_text(encoding="utf-8")
)

#: The longest pause between two heartbeats (seconds): it also bounds how long a cancellation
#: of a running job takes to reach its handler, since in this mode the job row is not locked.
_HEARTBEAT_MAX = 0.5

#: The most jobs one claim statement leases.
_MAX_BATCH = 100

#: The most outcomes one flush writes.
_MAX_FLUSH = 500

#: How long a claim loop waits for another loop's claim statement before looking again.
_FETCH_WAIT = 1.0

#: Claim statements one queue may have running at once in this client (a read-ahead and a loop
#: that found the buffer empty, or two read-aheads): the next batch is on its way while the
#: previous one is being leased, so fetching keeps up with fast handlers.
_MAX_FETCHING = 2

#: A loop that takes a buffered job reads ahead when fewer than half a ``prefetch`` are left in the
#: buffer, and leases enough for the idle loops plus up to three ``prefetch``es: fewer, larger
#: claim statements (benchmarks.lease, concurrency 10, no-op jobs: about 20 jobs a statement
#: without read-ahead, 33 with it).
_READ_AHEAD_BELOW = 0.5
_READ_AHEAD_SIZE = 3

#: Reading ahead only while the buffer turns over fast: the job just taken waited less than this
#: part of a heartbeat interval. With slow handlers the buffer is filled only when it runs dry
#: (leased jobs left unstarted for a whole interval are put back, which would be wasted work).
_READ_AHEAD_AGE = 0.25

Conn = psycopg.Connection[TupleRow]


def heartbeat_interval(lease: float) -> float:
    """Seconds between heartbeats for a lease of ``lease`` seconds: a third of it, at most 0.5 s."""
    return max(0.01, min(_HEARTBEAT_MAX, lease / 3.0))


#: lease_claim with its LIMIT written in, by limit: a prepared statement whose LIMIT is a
#: parameter gets a generic plan that expects a tenth of the table (a hash join over a sequential
#: scan, twice the CPU of the custom plan), so PostgreSQL plans it anew on every execution; with
#: the number in the text, the generic plan is the right one and is reused.
_CLAIM_BY_LIMIT: dict[int, str] = {}


def _job_template() -> dict[str, Any] | None:
    """The defaults of the ``Job`` fields a claim does not set, if a plain dict copy can build a Job.

    None when ``Job`` grows a ``__post_init__``, ``__slots__`` or an unset field whose default is
    made per instance: then the claim calls ``Job(...)``.
    """
    set_by_claim = {"queue", "payload", "run_after", "deadline", "max_retries", "fingerprint", "id", "status"}
    set_by_claim |= {"retries", "attempts", "error", "created_at", "ran_at"}
    if hasattr(Job, "__post_init__") or hasattr(Job, "__slots__"):
        return None
    for item in dataclasses.fields(Job):
        if item.name not in set_by_claim and (item.default_factory is not dataclasses.MISSING or not item.init):
            return None
    return {name: value for name, value in Job(queue="template").__dict__.items() if name not in set_by_claim}


#: The defaults of the Job fields a claim does not set (see _job_template).
_JOB_TEMPLATE = _job_template()

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(eq=False)
class LeaseToken:
    """``Claim.token`` of a lease-mode claim: which lease the claim holds."""

    #: The engine that made the claim (it settles it, even after the backend reopened).
    engine: LeaseEngine = field(repr=False)
    job_id: int
    queue: str
    #: The fencing token: the job's ``lease_token`` when this claim leased it.
    token: int
    #: When the job was due before it was leased (a finished job gets it back).
    due_at: datetime
    #: Set once by ``settle``; later calls change nothing.
    settled: bool = False
    #: Set when the heartbeat found the lease gone.
    lost: bool = False
    #: When the claim was made (monotonic): a buffered claim left unstarted too long is put back.
    leased_at: float = 0.0


class _Pending:
    """One outcome waiting for the flusher."""

    __slots__ = ("lease", "outcome")

    def __init__(self, lease: LeaseToken, outcome: Outcome) -> None:
        self.lease = lease
        self.outcome = outcome


class _LeaseQueue:
    """The claim loops of one lease-mode queue in this client, and the jobs leased for them."""

    __slots__ = ("buffer", "fetching", "idle", "short")

    def __init__(self) -> None:
        #: Claims leased by one loop for the others (popped without a lock: deque ops are atomic).
        self.buffer: collections.deque[Claim] = collections.deque()
        #: Loops inside claim() now, waiting for a job.
        self.idle = 0
        #: Claim statements of this queue running now (at most _MAX_FETCHING).
        self.fetching = 0
        #: The queue's signal generation when a read-ahead last found fewer due jobs than it asked
        #: for: no read-ahead until a signal (or a full claim) says there may be more.
        self.short = -1


class LeaseHost(Protocol):
    """What ``LeaseEngine`` uses of its ``PostgresBackend`` (so lease.py needs no import of backend.py)."""

    @property
    def _url(self) -> str: ...
    @property
    def _aux_kwargs(self) -> dict[str, Any]: ...
    @property
    def _connect_timeout(self) -> float: ...
    @property
    def _safe_url(self) -> str: ...
    @property
    def _poll_interval(self) -> float: ...
    @property
    def _pools(self) -> object:
        """None once the backend is closed."""

    def _wrap(self, exc: BaseException, doing: str) -> BackendError: ...
    def _state(self, queue: str) -> _QueueState: ...
    def _notify_cancel(self, job_id: str) -> None: ...


class LeaseEngine:
    """The lease mode of one open ``PostgresBackend``: claims, heartbeat and the outcome flusher.

    Created by the backend when a lease-mode queue first claims, closed by ``backend.close()``.
    It has a connection pool of its own (autocommit; no connection is held between statements),
    a heartbeat thread and a flusher thread.
    """

    def __init__(self, backend: LeaseHost, lease: float) -> None:
        self._backend = backend
        self._lease = lease
        self._interval = heartbeat_interval(lease)
        self._read_ahead_age = self._interval * _READ_AHEAD_AGE
        #: Who holds the leases this engine takes, as stored in ``lease_owner``.
        self.owner = f"{socket.gethostname()[:64]}:{os.getpid()}:{secrets.token_hex(4)}"
        #: Guards _leases, every LeaseToken's settled/lost, and the outcome hand-off below.
        self._lock = threading.Lock()
        self._queues: dict[str, _LeaseQueue] = {}
        #: Leases this client holds and renews: running, or waiting in a buffer.
        self._leases: dict[int, LeaseToken] = {}
        #: Outcomes waiting for the flusher, how many were handed to it so far (the sequence
        #: number of the latest), and how many of them are retries or put-backs (a claim writes
        #: them first). Guarded by _lock.
        self._pending: collections.deque[_Pending] = collections.deque()
        self._submitted = 0
        self._pending_retries = 0
        #: False once the flusher stopped: settle() then fails instead of losing the outcome silently.
        self._accepting = True
        #: True while the flusher sleeps on _gate; whoever sets it back to False releases _gate once.
        self._flusher_idle = False
        self._gate = threading.Lock()
        self._gate.acquire()
        #: How many of the submitted outcomes the flusher has dealt with; barrier() waits on _written.
        self._flushed = 0
        self._flushing = True
        self._written = threading.Condition(threading.Lock())
        self._closed = threading.Event()
        self._pool: ConnectionPool[Conn] = ConnectionPool(
            backend._url,
            kwargs=backend._aux_kwargs,
            min_size=1,
            max_size=4,
            open=False,
            timeout=backend._connect_timeout,
            reconnect_timeout=3.0,
            name="neoq-lease",
            configure=_configure,
        )
        self._pool.open(wait=False)
        self._flusher = threading.Thread(target=self._flush_loop, name="neoq-pg-lease-flusher", daemon=True)
        self._heart = threading.Thread(target=self._heartbeat_loop, name="neoq-pg-lease-heartbeat", daemon=True)
        self._flusher.start()
        self._heart.start()

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Write the outcomes still waiting, put unstarted leased jobs back, stop. Idempotent."""
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
            wake = self._flusher_idle
            self._flusher_idle = False
        if wake:
            self._gate.release()
        for thread in (self._flusher, self._heart):
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join()
        unstarted: list[LeaseToken] = []
        for state in list(self._queues.values()):
            while True:
                try:
                    claim = state.buffer.popleft()  # atomic: a loop may pop the same deque meanwhile
                except IndexError:
                    break
                if isinstance(claim.token, LeaseToken):
                    unstarted.append(claim.token)
        if unstarted:
            self._put_back(unstarted)
        # Leases of handlers still running (abandoned at shutdown) expire on their own.
        self._pool.close(timeout=5.0)

    @contextmanager
    def _conn(self, doing: str) -> Iterator[Conn]:
        backend = self._backend
        try:
            with self._pool.connection(timeout=backend._connect_timeout) as conn:
                yield conn
        except PoolTimeout as exc:
            raise BackendConnectionError(
                f"no PostgreSQL connection to {backend._safe_url} within {backend._connect_timeout:g}s while {doing}"
            ) from exc
        except psycopg.Error as exc:
            raise backend._wrap(exc, doing) from exc

    # -- claiming --------------------------------------------------------------------------

    def claim(self, queue: str, timeout: float, prefetch: int = 0) -> Claim | None:
        """``Backend.claim`` for a lease-mode queue: a leased job, or None after ``timeout``.

        ``prefetch``: how many jobs beyond the idle claim loops one claim statement may lease.
        A job waiting in the buffer is taken without a lock; when that leaves the buffer low,
        this loop leases the next batch before it runs its job (a read-ahead), so the claim
        statement overlaps with the other loops' handlers instead of following them.
        """
        return self._take(queue, prefetch) or self._claim(queue, timeout, prefetch)

    def settle_then_claim(self, claim: Claim, outcome: Outcome, queue: str, prefetch: int = 0) -> Claim | None:
        """``Backend.settle_then_claim`` for a lease-mode claim: ``settle``, then a job of
        ``queue`` already leased into the buffer, if any (else None: the loop calls ``claim``).
        """
        self.settle(claim, outcome)
        return self._take(queue, prefetch)

    def _take(self, queue: str, prefetch: int) -> Claim | None:
        """A job from ``queue``'s buffer, without a lock (deque.popleft is atomic), or None."""
        mine = self._queues.get(queue)
        if mine is None:
            return None
        buffer = mine.buffer
        try:
            claim = buffer.popleft()
        except IndexError:
            return None
        if (
            len(buffer) < _READ_AHEAD_BELOW * prefetch
            and mine.fetching < _MAX_FETCHING
            and claim.token.leased_at > time.monotonic() - self._read_ahead_age
        ):
            try:
                self._read_ahead(queue, mine, prefetch)
            except Exception:  # pragma: no cover - a bug; the claim taken must still run
                logger.exception("neoq: reading ahead on queue %r failed", queue)
        return claim

    def _read_ahead(self, queue: str, mine: _LeaseQueue, prefetch: int) -> None:
        """Lease the next batch for the buffer now, before the loops run out of jobs."""
        state = self._backend._state(queue)
        cond = state.cond
        with cond:
            if (
                mine.fetching >= _MAX_FETCHING
                or mine.short == state.generation
                or self._closed.is_set()
                or self._backend._pools is None
            ):
                return
            limit = min(_MAX_BATCH, mine.idle + max(1, _READ_AHEAD_SIZE * prefetch - len(mine.buffer)))
            mine.fetching += 1
            generation = state.generation
        claims: list[Claim] = []
        try:
            claims, _ = self._fetch(queue, limit)
        except NeoqError as exc:
            # The loops fetch again themselves when the buffer runs dry (and report errors then).
            logger.debug("neoq: reading ahead on queue %r failed: %s", queue, exc)
        finally:
            closed = self._closed.is_set()
            with cond:
                mine.fetching -= 1
                if not closed:
                    mine.buffer.extend(claims)
                mine.short = generation if len(claims) < limit else -1
                cond.notify_all()
            if closed and claims:
                # close() may have emptied the buffers already: give these back too.
                self._put_back([claim.token for claim in claims])

    def _claim(self, queue: str, timeout: float, prefetch: int) -> Claim | None:
        """``claim`` when the buffer is empty: lease jobs for every idle loop, or wait for some."""
        backend = self._backend
        state = backend._state(queue)
        cond = state.cond
        clock = time.monotonic
        end = clock() + max(0.0, timeout)
        with cond:
            mine = self._queues.get(queue)
            if mine is None:
                mine = self._queues[queue] = _LeaseQueue()
            mine.idle += 1
        try:
            while True:
                with cond:
                    while True:
                        try:
                            return mine.buffer.popleft()  # lock-free poppers may empty it any time
                        except IndexError:
                            pass
                        if self._closed.is_set() or backend._pools is None:
                            return None
                        if not mine.fetching:
                            break
                        # Another loop is leasing jobs for every idle loop, this one included.
                        cond.wait(_FETCH_WAIT)
                    mine.fetching += 1
                    limit = min(_MAX_BATCH, max(1, mine.idle + prefetch))
                    generation = state.generation
                claims: list[Claim] = []
                next_due: float | None = None
                try:
                    claims, next_due = self._fetch(queue, limit)
                finally:
                    with cond:
                        mine.fetching -= 1
                        if claims:
                            mine.buffer.extend(claims[1:])
                            mine.short = generation if len(claims) < limit else -1
                        # Loops that waited for this fetch look at the buffer (or fetch again).
                        cond.notify_all()
                if claims:
                    return claims[0]
                now = clock()
                if now >= end or self._closed.is_set():
                    return None
                wait = min(end - now, backend._poll_interval)
                if next_due is not None:
                    # A millisecond past the due time (a lease expiry too): then now() is surely past it.
                    wait = min(wait, max(0.0, next_due) + 0.001)
                with cond:
                    if state.generation != generation or mine.buffer:
                        continue  # signalled while leasing: look again at once
                    if state.wakeups:
                        state.wakeups -= 1
                        return None
                    state.waiting += 1
                    try:
                        # Until a job is buffered, the queue is signalled, a wake-up comes or the
                        # wait is over; not at every other loop's fetch (its notify_all wakes this
                        # wait too): idle loops would take turns leasing nothing, back to back.
                        wait_end = clock() + wait
                        while not mine.buffer and state.generation == generation and not state.wakeups:
                            remaining = wait_end - clock()
                            if remaining <= 0 or self._closed.is_set():
                                break
                            cond.wait(remaining)
                    finally:
                        state.waiting -= 1
                    if mine.buffer:
                        continue
                    if state.wakeups:
                        state.wakeups -= 1
                        return None
        finally:
            with cond:
                mine.idle -= 1

    def _fetch(self, queue: str, limit: int) -> tuple[list[Claim], float | None]:
        """Lease up to ``limit`` due jobs; return their claims, or when the next job comes due."""
        if self._pending_retries:
            self.barrier()  # a retry due now that this client settled must be claimable
        params = {"queue": queue, "lease": self._lease, "owner": self.owner}
        statement = _CLAIM_BY_LIMIT.get(limit)
        if statement is None:
            statement = _CLAIM_BY_LIMIT[limit] = LEASE_QUERIES["lease_claim"].replace("%(limit)s", str(int(limit)))
        with self._conn(f"leasing jobs of queue {queue!r}") as conn:
            # One autocommit statement: it turns synchronous_commit off for its own transaction.
            rows = conn.execute(statement, params).fetchall()
        if len(rows) == 1 and rows[0][0] is None:
            return [], rows[0][14]
        rows.sort(key=_row_order)
        claims: list[Claim] = []
        cancelled: list[_Pending] = []
        now = time.monotonic()
        utc = timezone.utc
        new_job = object.__new__
        template = _JOB_TEMPLATE
        leases = self._leases
        running = JobStatus.RUNNING
        for row in rows:
            job_id, due_at, deadline = row[0], row[4].astimezone(utc), row[5]
            lease = LeaseToken(self, job_id, row[1], row[10], due_at, leased_at=now)
            values = {
                "queue": row[1],
                "payload": row[3],
                "run_after": due_at,
                "deadline": None if deadline is None else deadline.astimezone(utc),
                "max_retries": row[6],
                "fingerprint": row[2],
                "id": str(job_id),
                "status": running,
                "retries": row[7],
                "attempts": row[11],
                "error": row[8],
                "created_at": row[9].astimezone(utc),
                "ran_at": row[12].astimezone(utc),
            }
            if template is None:
                job = Job(**values)
            else:
                # Job(**values) without the frozen dataclass's per-field __setattr__.
                job = new_job(Job)
                fields = job.__dict__
                fields.update(template)
                fields.update(values)
            if row[13]:
                # A cancellation request left by the transaction mode: never run it.
                lease.settled = True
                cancelled.append(_Pending(lease, Outcome(JobStatus.CANCELLED, job.error)))
                continue
            claims.append(Claim(job, transaction=None, token=lease))
        with self._lock:
            for claim in claims:
                lease = claim.token
                leases[lease.job_id] = lease
            for pending in cancelled:
                leases[pending.lease.job_id] = pending.lease
        for pending in cancelled:
            self._submit(pending)
            logger.info("neoq: job %s queue=%r was cancelled before it could start", pending.lease.job_id, queue)
        return claims, None

    # -- settling --------------------------------------------------------------------------

    def settle(self, claim: Claim, outcome: Outcome) -> None:
        """``Backend.settle``: queue the outcome for the flusher (one fenced write for many).

        Returns at once; this client's next database call waits for the write (``barrier``).
        A lease lost meanwhile (the job was claimed again elsewhere) makes the write a no-op.
        """
        lease = claim.token
        assert isinstance(lease, LeaseToken)
        with self._lock:
            if lease.settled:
                return
            if not self._accepting:
                raise BackendError("the PostgreSQL backend is closed; the outcome was not written")
            lease.settled = True
            self._submitted += 1
            if outcome.status is JobStatus.NEW:
                self._pending_retries += 1
            self._pending.append(_Pending(lease, outcome))
            wake = self._flusher_idle
            self._flusher_idle = False
        if wake:
            self._gate.release()

    def _submit(self, pending: _Pending) -> None:
        """Hand an outcome to the flusher (its lease already marked settled)."""
        with self._lock:
            if not self._accepting:
                raise BackendError("the PostgreSQL backend is closed; the outcome was not written")
            self._submitted += 1
            if pending.outcome.status is JobStatus.NEW:
                self._pending_retries += 1
            self._pending.append(pending)
            wake = self._flusher_idle
            self._flusher_idle = False
        if wake:
            self._gate.release()

    def barrier(self) -> None:
        """Wait until every outcome settled so far was written (or failed to be)."""
        target = self._submitted
        if self._flushed >= target:
            return
        with self._written:
            while self._flushed < target and self._flushing:
                self._written.wait(1.0)

    def release(self, claim: Claim) -> None:
        """``Backend.release``: an unsettled claim's lease is no longer renewed, so it expires."""
        lease = claim.token
        if not isinstance(lease, LeaseToken) or lease.settled:
            return  # settled: the flusher stops renewing it once written
        with self._lock:
            if not lease.settled and self._leases.get(lease.job_id) is lease:
                del self._leases[lease.job_id]

    def _flush_loop(self) -> None:
        try:
            while True:
                with self._lock:
                    pending = self._pending
                    if not pending:
                        if self._closed.is_set():
                            return  # closed, and nothing left to write
                        self._flusher_idle = True
                        batch = None
                    else:
                        batch = [pending.popleft() for _ in range(min(_MAX_FLUSH, len(pending)))]
                        seq = self._submitted - len(pending)
                if batch is None:
                    self._gate.acquire()  # released once by the next settle() (or close())
                    continue
                try:
                    self._flush(batch)
                except Exception:  # pragma: no cover - keep flushing whatever happens
                    logger.exception("neoq: writing lease outcomes failed")
                finally:
                    retries = sum(1 for p in batch if p.outcome.status is JobStatus.NEW)
                    with self._lock:
                        leases = self._leases
                        for item in batch:
                            lease = item.lease
                            if leases.get(lease.job_id) is lease:
                                del leases[lease.job_id]  # written (or its lease expires): stop renewing
                        self._pending_retries -= retries
                    with self._written:
                        self._flushed = seq
                        self._written.notify_all()
        finally:
            with self._lock:
                self._accepting = False
            with self._written:
                self._flushing = False
                self._written.notify_all()

    def _flush(self, batch: list[_Pending]) -> None:
        """Write ``batch``'s outcomes in one statement (fenced by each lease's token)."""
        ids: list[str] = []
        tokens: list[str] = []
        statuses: list[str] = []
        errors: list[str] = []
        run_afters: list[str] = []
        retries: list[str] = []
        processed = JobStatus.PROCESSED
        for pending in batch:
            lease, outcome = pending.lease, pending.outcome
            status = outcome.status
            ids.append(str(lease.job_id))
            tokens.append(str(lease.token))
            if status is processed:
                statuses.append("processed")
                errors.append("NULL")
                run_afters.append(str((lease.due_at - _EPOCH) // _MICROSECOND))
                retries.append("NULL")
                continue
            retry = status is JobStatus.NEW
            # A retry is due at its own time; a finished job gets back the time it was due.
            run_after = outcome.run_after if retry and outcome.run_after else lease.due_at
            statuses.append(status.value)
            errors.append(_text_element(outcome.error))
            run_afters.append(str((run_after - _EPOCH) // _MICROSECOND))
            retries.append(str(outcome.retries) if retry and outcome.retries is not None else "NULL")
        # Array literals ('{1,2}') built here: psycopg adapts a list element by element in Python.
        params = {
            "ids": "{" + ",".join(ids) + "}",
            "tokens": "{" + ",".join(tokens) + "}",
            "statuses": "{" + ",".join(statuses) + "}",
            "errors": "{" + ",".join(errors) + "}",
            "run_afters": "{" + ",".join(run_afters) + "}",
            "retries": "{" + ",".join(retries) + "}",
            "channel": _channel(),
        }
        try:
            with self._conn(f"writing the outcomes of {len(batch)} jobs") as conn:
                written = {row[0] for row in conn.execute(LEASE_QUERIES["lease_settle"], params).fetchall()}
        except NeoqError as exc:
            # The jobs are not lost: their leases expire and they run again (at-least-once).
            logger.error(
                "neoq: the outcomes of %d jobs could not be written (%s); they run again once their leases expire",
                len(batch),
                exc,
            )
            return
        if len(written) == len(batch):
            return
        for pending in batch:
            lease = pending.lease
            if lease.job_id not in written and pending.outcome.status is not JobStatus.CANCELLED:
                logger.warning(
                    "neoq: job %s queue=%r lost its lease before its outcome (%s) was written: it was claimed "
                    "again or changed meanwhile, so this outcome is discarded",
                    lease.job_id,
                    lease.queue,
                    pending.outcome.status.value,
                )

    # -- the heartbeat ---------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        while not self._closed.wait(self._interval):
            try:
                self._heartbeat()
            except NeoqError as exc:
                # The leases run out if this goes on; their jobs then run again elsewhere.
                logger.warning("neoq: renewing leases failed (%s); trying again in %.2fs", exc, self._interval)
            except Exception:  # pragma: no cover - keep renewing whatever happens
                logger.exception("neoq: the lease heartbeat failed")

    def _heartbeat(self) -> None:
        """Renew this client's leases in one statement; act on the ones it lost."""
        self._return_stale()
        with self._lock:
            leases = list(self._leases.values())
        if not leases:
            return
        params = {
            "ids": "{" + ",".join([str(lease.job_id) for lease in leases]) + "}",
            "tokens": "{" + ",".join([str(lease.token) for lease in leases]) + "}",
            "lease": self._lease,
            # Renew once a third of the lease has passed: fewer row versions for short jobs.
            "renew_below": self._lease * 2.0 / 3.0,
        }
        with self._conn("renewing leases") as conn:
            lost = conn.execute(LEASE_QUERIES["lease_heartbeat"], params).fetchall()
        for job_id, status in lost:
            self._lost(int(job_id), status)

    def _return_stale(self) -> None:
        """Put back prefetched jobs that waited a whole heartbeat interval for a free claim loop."""
        cutoff = time.monotonic() - self._interval
        stale: list[LeaseToken] = []
        with self._lock:
            for state in self._queues.values():
                buffer = state.buffer
                while buffer and buffer[0].token.leased_at < cutoff:
                    try:
                        claim = buffer.popleft()  # a claim loop may take the same one meanwhile
                    except IndexError:
                        break
                    lease = claim.token
                    if lease.leased_at >= cutoff:
                        buffer.appendleft(claim)  # a loop took the stale one first: keep this one
                        break
                    lease.settled = True
                    self._leases.pop(lease.job_id, None)
                    stale.append(lease)
        if stale:
            self._put_back(stale)

    def _put_back(self, tokens: list[LeaseToken]) -> None:
        """Give unstarted leased jobs back (due as before, attempt uncounted); else their leases expire."""
        try:
            with self._conn("putting unstarted leased jobs back") as conn:
                conn.execute(
                    LEASE_QUERIES["lease_return"],
                    {
                        "ids": [t.job_id for t in tokens],
                        "tokens": [t.token for t in tokens],
                        "due_ats": [t.due_at for t in tokens],
                        "channel": _channel(),
                    },
                )
        except NeoqError as exc:
            logger.warning(
                "neoq: %d leased jobs could not be put back (%s); they run once their leases expire", len(tokens), exc
            )

    def _lost(self, job_id: int, status: str | None) -> None:
        with self._lock:
            lease = self._leases.get(job_id)
            if lease is None or lease.settled or lease.lost:
                return  # settled meanwhile: the heartbeat's list was older than the outcome
            lease.lost = True
            del self._leases[job_id]
            buffered = None
            state = self._queues.get(lease.queue)
            if state is not None:
                buffered = next((c for c in list(state.buffer) if c.token is lease), None)
                if buffered is not None:
                    try:
                        state.buffer.remove(buffered)
                    except ValueError:
                        buffered = None  # a claim loop took it meanwhile: it has started
        if buffered is not None:
            return  # never started: nothing to stop
        if status == JobStatus.CANCELLED.value:
            # cancel_job() found the job unlocked and cancelled it: stop its handler.
            self._backend._notify_cancel(str(job_id))
            return
        logger.warning(
            "neoq: job %s queue=%r lost its lease (the job is now %s): this process was too slow to renew it, "
            "so another run may have started; this run's outcome will be discarded",
            job_id,
            lease.queue,
            status or "deleted",
        )


_decode_json = json.JSONDecoder().decode


class _JsonLoader(Loader):
    """A ``json`` column as ``json.loads`` gives it, without its encoding detection (half the cost)."""

    def load(self, data: Buffer) -> Any:
        return _decode_json(str(data, "utf-8", "surrogatepass"))


def _configure(conn: Conn) -> None:
    """The lease pool's configure hook: the connection is this process's (``forking``), its session
    is in UTC (as every session of neoq's); the cheaper loader for the payloads a claim returns."""
    forking.track(conn)
    _utc_session(conn)
    conn.adapters.register_loader("json", _JsonLoader)


def _row_order(row: TupleRow) -> tuple[Any, Any]:
    return row[4], row[0]


def _text_element(text: str | None) -> str:
    """``text`` as an element of a PostgreSQL array literal; NUL and lone surrogates shown escaped."""
    if text is None:
        return "NULL"
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _channel() -> str:
    return CHANNEL
