"""The lease engine: leased claims for every store that cannot hold a transaction across a handler.

Nothing is held in the store while a handler runs. A claim *leases* its job (its due time moved to
the lease's expiry, a fresh fencing token), the engine's heartbeat renews the leases of running
jobs, and outcomes are written later in batches, each fenced by its token, so that a holder whose
lease expired changes nothing. PostgreSQL's lease mode runs on it (``neoq.backends.postgres.
leasestore``); so may any store that implements the five calls below (docs/lease-mode.md).

How it works:

- **Claims in batches, through the waiting seam.** ``look(queue)`` is the store's half of a claim
  (``Backend.look``; ``neoq.waiting`` decides who looks when). A job waiting in the queue's buffer
  is the answer at once, with ``more``: the next waiting loop takes the next one. Else one
  ``fetch`` leases jobs for every loop claiming now (``QueueWaiting.claiming``) plus ``prefetch``
  more; the first is the answer, the rest wait in the buffer. Nothing due: the store's ``due_in``
  (a lease expiry included) and ``held``, which the waiting keeps.
- **Heartbeat** (``heartbeat``). One thread renews every lease of the engine in one call, each
  ``min(lease / 3, 0.5 s)``; the same call reports the leases lost, a cancelled job's among them,
  whose handler is then stopped (``notify_cancel``).
- **Batched outcomes** (``flusher``). ``settle`` hands the outcome to one thread and returns; it
  writes every outcome waiting at that moment in one fenced call. ``barrier`` waits for the
  outcomes settled before it, so the backend reads its own writes.
- **Prefetch and read-ahead.** A buffered job nobody started within a heartbeat interval is given
  back (due as before, attempt uncounted). While the buffer turns over fast, the loop that takes a
  job from a buffer running low first leases the next batch (a read-ahead: up to three
  prefetches), so fetches overlap with handlers; ``settle_then_claim`` takes the next buffered
  job as a chained look (``QueueWaiting.chain``). At most one read-ahead per queue runs at a time.
- **Give-back at close.** ``close`` writes the outcomes waiting, gives back the buffered jobs, and
  closes the store. Leases of handlers still running expire on their own.
- **Crash recovery without a leader.** A dead or frozen process stops renewing; its leases expire
  and the jobs are due again for anyone. Their tokens no longer match, so a late outcome from the
  old holder changes nothing. The guarantee is at-least-once (``Claim.transaction`` is ``None``).

What a store implements to get leases
=====================================

A ``LeaseStore`` (``neoq.backends.lease.store``). A store keeps, per job, besides the job itself:
**the lease's expiry** (PostgreSQL keeps it in ``run_after``, so a job whose lease expired is
simply due again, for any client, with no leader and no rescuer) and **a fencing token**, an
integer that grows by one at every lease of the job and is never reset. The job's due time before
the lease is kept by the engine (``LeaseToken.due_at``) and handed back with the outcome.

Each call may come from any thread, concurrently; each is one round trip where the store can
make it one; each raises ``NeoqError`` only (a driver's errors wrapped in ``BackendError`` or
``BackendConnectionError``); none waits for a job.

``fetch(queue, limit, lease, owner) -> (leased, due_in, held)``
    Lease up to ``limit`` due jobs of ``queue`` (due, not held), oldest due first, for ``lease``
    seconds: each one's token incremented, its holder recorded as ``owner``, its attempt counted
    durably (``attempts + 1``, ``ran_at`` now) in the same step. ``leased`` lists, in claim
    order, one ``Leased`` tuple per job, ``(job, key, token, due_at, cancel_requested)``: the
    ``Job`` as claimed (status ``RUNNING``, ``attempts`` counting this one), the store's key of
    the job (``LeaseToken.job_id``), the new token, the job's due time before the lease, and
    whether a cancellation of it is waiting (the engine then settles it ``CANCELLED`` unrun).
    When nothing was leased: ``due_in``, the seconds until the queue's next job (a lease expiry
    included) comes due by the store's clock, ``None`` when nothing is scheduled; ``held``, due
    jobs exist that others hold. With jobs leased, the engine reads neither.
``settle_many(batch) -> written``
    Write every ``Settlement`` (a ``LeaseToken`` and its ``Outcome``) in one step, each only if
    the job still carries that token and is still leased (fenced). ``PROCESSED``, ``FAILED`` and
    ``CANCELLED`` finish the job (``finished_at`` now, ``run_after`` back to ``lease.due_at``);
    ``NEW`` is a retry, due at ``outcome.run_after`` (else ``lease.due_at``) with
    ``outcome.retries``, and wakes the queue's claimers in every process. Drop the waiting
    cancellation request of every job written. Return the set of keys written: a key missing is
    a lease lost meanwhile, whose outcome the engine reports and discards.
``renew(leases, lease) -> lost``
    Extend each lease of ``leases`` to ``lease`` seconds from now, fenced by its token. A store
    may skip a lease with more than two thirds of ``lease`` left (fewer writes), or one it cannot
    renew without waiting (the next beat renews it). Return ``(key, status)`` for each lease no
    longer this holder's: the job's stored status (``"cancelled"``: ``cancel_job`` reached it),
    or ``None`` when the job is gone.
``give_back(leases)``
    Put jobs leased but never started back as they were: due at ``lease.due_at``, their attempt
    uncounted, fenced by token; wake their queues' claimers.
``close()``
    Release what the store opened for the engine (a connection pool); the engine calls it last.
``progress(lease, fraction, note)`` (optional)
    Store a running job's progress report, fenced by token like ``settle_many``. Without it the
    engine drops the reports (``LeaseEngine.progress``). ``Outcome.result``/``traceback`` travel
    in ``settle_many`` (see ``neoq.backends.base.Outcome``).

Beside the store, the engine takes narrow callbacks from its backend (``LeaseEngine``): the
queue's claim loops (``loops``, the backend's ``waiting.queue``), ``prefetch`` per queue, and
``notify_cancel``. The store is given its own (PostgreSQL: how to wrap a driver error). A backend
routes ``look``, ``settle``, ``settle_then_claim``, ``progress`` and ``release`` of a leased claim (its token
is a ``LeaseToken``) to the engine, calls ``barrier`` before its other store calls, and
``close`` when it closes.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from ...errors import NeoqError
from ...job import JobStatus
from ...waiting import Look
from ..base import Claim, Outcome
from .flusher import Flusher
from .heartbeat import heartbeat_interval, start_heartbeat
from .store import Leased, LeaseStore, LeaseToken, Loops, Settlement

__all__ = ["LeaseEngine"]

logger = logging.getLogger("neoq.backends.lease")

#: The most jobs one fetch leases.
_MAX_BATCH = 100

#: A loop that takes a buffered job reads ahead when fewer than half a ``prefetch`` are left in the
#: buffer, and leases enough for the claiming loops plus up to three ``prefetch``es: fewer, larger
#: fetches (benchmarks.lease, concurrency 10, no-op jobs: about 20 jobs a statement without
#: read-ahead, 33 with it).
_READ_AHEAD_BELOW = 0.5
_READ_AHEAD_SIZE = 3

#: Reading ahead only while the buffer turns over fast: the job just taken waited less than this
#: part of a heartbeat interval. With slow handlers the buffer is filled only when it runs dry
#: (leased jobs left unstarted for a whole interval are put back, which would be wasted work).
_READ_AHEAD_AGE = 0.25

#: The answer of a look at a closed engine: nothing (the backend's close wakes the claim loops).
_NOTHING: Look[Claim] = Look()


class _LeaseQueue:
    """The jobs leased for the claim loops of one queue in this process."""

    __slots__ = ("buffer", "lock", "reading", "short")

    def __init__(self) -> None:
        #: Claims leased by one look for the loops that follow (popped without a lock: deque ops
        #: are atomic); a read-ahead and close() extend and empty it under ``lock``.
        self.buffer: collections.deque[Claim] = collections.deque()
        self.lock = threading.Lock()
        #: A read-ahead is under way (at most one per queue: with the leader's fetch, at most two
        #: fetches of a queue run at once).
        self.reading = False
        #: The last fetch found fewer due jobs than it asked for: no read-ahead until a fetch
        #: fills its limit (the loops fetch when the buffer runs dry, and a signal makes them).
        self.short = False


class LeaseEngine:
    """Leased claims of one open backend over a ``LeaseStore``: buffers, heartbeat, flusher.

    Created by the backend when a lease-mode queue first claims, closed by the backend's
    ``close()``. ``loops(queue)`` gives the queue's claim loops (``backend.waiting.queue``);
    ``prefetch(queue)`` how many jobs beyond the claiming loops one fetch may lease;
    ``notify_cancel(job_id)`` stops a running handler whose job was cancelled; ``name`` names the
    store in errors.
    """

    def __init__(
        self,
        store: LeaseStore,
        lease: float,
        *,
        loops: Callable[[str], Loops],
        prefetch: Callable[[str], int],
        notify_cancel: Callable[[str], None],
        name: str = "lease",
    ) -> None:
        self._store = store
        self._lease = lease
        self._loops = loops
        self._prefetch = prefetch
        self._notify_cancel = notify_cancel
        self.lease = lease  #: seconds
        self._interval = heartbeat_interval(lease)
        self._read_ahead_age = self._interval * _READ_AHEAD_AGE
        #: Who holds the leases this engine takes, as the store records it.
        self.owner = f"{socket.gethostname()[:64]}:{os.getpid()}:{secrets.token_hex(4)}"
        #: Guards _leases, every LeaseToken's settled/lost, and the flusher's hand-off.
        self._lock = threading.Lock()
        self._queues: dict[str, _LeaseQueue] = {}
        #: Leases this client holds and renews: running, or waiting in a buffer.
        self._leases: dict[Any, LeaseToken] = {}
        self._closed = threading.Event()
        self._flusher = Flusher(store, self._lock, self._leases, name)
        self._heart = start_heartbeat(self._interval, self._heartbeat, self._closed)

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Write the outcomes still waiting, give unstarted leased jobs back, stop. Idempotent."""
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
        self._flusher.stop()
        if self._heart.is_alive() and self._heart is not threading.current_thread():
            self._heart.join()
        unstarted: list[LeaseToken] = []
        for mine in list(self._queues.values()):
            with mine.lock:  # a read-ahead that ends later sees the engine closed
                while True:
                    try:
                        claim = mine.buffer.popleft()  # atomic: a loop may pop the same deque meanwhile
                    except IndexError:
                        break
                    unstarted.append(claim.token)
        if unstarted:
            self._give_back(unstarted)
        # Leases of handlers still running (abandoned at shutdown) expire on their own.
        self._store.close()

    # -- claiming --------------------------------------------------------------------------

    def look(self, queue: str) -> Look[Claim]:
        """``Backend.look`` for a leased queue: a buffered job, else one fetch for the loops.

        A buffered job is ``Look(claim, more=True)``: the next waiting loop looks too, and takes
        the next one. Else one fetch leases jobs for every claiming loop plus ``prefetch`` more;
        the first is this look's claim, the rest wait in the buffer (``more=True``). When nothing
        was due: ``due_in`` (a lease expiry included) and ``held`` as the store said them.
        """
        mine = self._queues.get(queue)
        if mine is None:
            mine = self._queues.setdefault(queue, _LeaseQueue())
        claim = self._take(queue, mine)
        if claim is not None:
            return Look(claim)
        if self._closed.is_set():
            return _NOTHING
        limit = min(_MAX_BATCH, max(1, self._loops(queue).claiming + self._prefetch(queue)))
        claims, due_in, held = self._fetch(queue, limit)
        if not claims:
            return Look(due_in=due_in, held=held)
        self._keep(mine, claims[1:], len(claims) < limit)
        return Look(claims[0])

    def settle_then_claim(self, claim: Claim, outcome: Outcome, queue: str) -> Claim | None:
        """``Backend.settle_then_claim`` for a leased claim: ``settle``, then a job of ``queue``
        already leased into the buffer, if any, as a chained look (else None: the loop claims)."""
        self.settle(claim, outcome)
        mine = self._queues.get(queue)
        if mine is None or not mine.buffer:
            return None
        return self._loops(queue).chain(functools.partial(self._chained, queue, mine))

    def _chained(self, queue: str, mine: _LeaseQueue) -> Look[Claim] | None:
        claim = self._take(queue, mine)
        return None if claim is None else Look(claim)

    def _take(self, queue: str, mine: _LeaseQueue) -> Claim | None:
        """A job from ``queue``'s buffer, without a lock (deque.popleft is atomic), or None.

        When that leaves the buffer low while it turns over fast, this loop leases the next batch
        before it runs its job (a read-ahead): the fetch overlaps with the other loops' handlers
        instead of following them.
        """
        buffer = mine.buffer
        try:
            claim = buffer.popleft()
        except IndexError:
            return None
        if mine.reading or mine.short:
            return claim
        prefetch = self._prefetch(queue)
        young = claim.token.leased_at > time.monotonic() - self._read_ahead_age
        if young and len(buffer) < _READ_AHEAD_BELOW * prefetch:
            try:
                self._read_ahead(queue, mine, prefetch)
            except Exception:  # pragma: no cover - a bug; the claim taken must still run
                logger.exception("neoq: reading ahead on queue %r failed", queue)
        return claim

    def _read_ahead(self, queue: str, mine: _LeaseQueue, prefetch: int) -> None:
        """Lease the next batch for the buffer now, before the loops run out of jobs."""
        with mine.lock:
            if mine.reading or mine.short or self._closed.is_set():
                return
            mine.reading = True
        loops = self._loops(queue)
        limit = min(_MAX_BATCH, loops.claiming + max(1, _READ_AHEAD_SIZE * prefetch - len(mine.buffer)))
        claims: list[Claim] = []
        try:
            claims = self._fetch(queue, limit)[0]
        except NeoqError as exc:
            # The loops fetch again themselves when the buffer runs dry (and report errors then).
            logger.debug("neoq: reading ahead on queue %r failed: %s", queue, exc)
        finally:
            kept = self._keep(mine, claims, len(claims) < limit, reading=True)
        if claims and kept:
            loops.signal()  # a waiting loop takes one (and hands the turn on while there are more)

    def _keep(self, mine: _LeaseQueue, claims: list[Claim], short: bool, *, reading: bool = False) -> bool:
        """Buffer ``claims`` (a fetch's ``short`` noted; a read-ahead ended), unless the engine
        closed meanwhile: then give them back, since close() emptied the buffers already."""
        with mine.lock:
            if reading:
                mine.reading = False
            closed = self._closed.is_set()
            if not closed:
                mine.buffer.extend(claims)
            mine.short = short
        if closed and claims:
            self._give_back([claim.token for claim in claims])
        return not closed

    def _fetch(self, queue: str, limit: int) -> tuple[list[Claim], float | None, bool]:
        """Lease up to ``limit`` due jobs; return their claims, or the store's ``due_in``, ``held``."""
        flusher = self._flusher
        if flusher.pending_retries:
            flusher.barrier()  # a retry due now that this client settled must be claimable
        leased, due_in, held = self._store.fetch(queue, limit, self._lease, self.owner)
        if not leased:
            return [], due_in, held
        claims = self._claims(queue, leased)
        # Only cancelled jobs leased: others may be due behind them, so the loops look again now.
        return claims, (0.0 if not claims else None), False

    def _claims(self, queue: str, leased: list[Leased]) -> list[Claim]:
        """Claims of jobs just leased, renewed from now on (a cancelled one is settled instead)."""
        flusher = self._flusher
        claims: list[Claim] = []
        cancelled: list[Settlement] = []
        now = time.monotonic()
        for job, key, token, due_at, cancel_requested in leased:
            lease = LeaseToken(self, key, queue, token, due_at, leased_at=now)
            if cancel_requested:
                # A cancellation request left while the job waited: never run it.
                lease.settled = True
                cancelled.append(Settlement(lease, Outcome(JobStatus.CANCELLED, job.error)))
                continue
            claims.append(Claim(job, None, lease))
        leases = self._leases
        with self._lock:
            for claim in claims:
                lease = claim.token
                leases[lease.job_id] = lease
            for settlement in cancelled:
                leases[settlement.lease.job_id] = settlement.lease
        for settlement in cancelled:
            flusher.submit(settlement)
            logger.info("neoq: job %s queue=%r was cancelled before it could start", settlement.lease.job_id, queue)
        return claims

    # -- settling --------------------------------------------------------------------------

    def settle(self, claim: Claim, outcome: Outcome) -> None:
        """``Backend.settle``: hand the outcome to the flusher (one fenced write for many).

        Returns at once; this client's next store call waits for the write (``barrier``). A lease
        lost meanwhile (the job was claimed again elsewhere) makes the write a no-op.
        """
        self._flusher.submit(Settlement(claim.token, outcome), mark=True)

    def progress(self, claim: Claim, fraction: float, note: str | None) -> None:
        """``Backend.progress``: the store's optional fenced ``progress`` write; dropped without one,
        or once the lease is settled or lost."""
        lease = claim.token
        write = getattr(self._store, "progress", None)
        if write is not None and isinstance(lease, LeaseToken) and not lease.settled and not lease.lost:
            write(lease, fraction, note)

    def barrier(self) -> None:
        """Wait until every outcome settled so far was written (or failed to be)."""
        self._flusher.barrier()

    def release(self, claim: Claim) -> None:
        """``Backend.release``: an unsettled claim's lease is no longer renewed, so it expires."""
        lease = claim.token
        if not isinstance(lease, LeaseToken) or lease.settled:
            return  # settled: the flusher stops renewing it once written
        with self._lock:
            if not lease.settled and self._leases.get(lease.job_id) is lease:
                del self._leases[lease.job_id]

    # -- the heartbeat (on its own thread) -------------------------------------------------

    def _heartbeat(self) -> None:
        """Give stale buffered jobs back; renew this client's leases in one call; act on lost ones."""
        self._return_stale()
        with self._lock:
            leases = list(self._leases.values())
        if not leases:
            return
        for key, status in self._store.renew(leases, self._lease):
            self._lost(key, status)

    def _return_stale(self) -> None:
        """Give back prefetched jobs that waited a whole heartbeat interval for a free claim loop."""
        cutoff = time.monotonic() - self._interval
        stale: list[LeaseToken] = []
        with self._lock:
            for mine in self._queues.values():
                buffer = mine.buffer
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
            self._give_back(stale)

    def _give_back(self, leases: list[LeaseToken]) -> None:
        """Give unstarted leased jobs back (due as before, attempt uncounted); else their leases expire."""
        try:
            self._store.give_back(leases)
        except NeoqError as exc:
            logger.warning(
                "neoq: %d leased jobs could not be put back (%s); they run once their leases expire", len(leases), exc
            )

    def _lost(self, key: Any, status: str | None) -> None:
        with self._lock:
            lease = self._leases.get(key)
            if lease is None or lease.settled or lease.lost:
                return  # settled meanwhile: the heartbeat's list was older than the outcome
            lease.lost = True
            del self._leases[key]
            buffered = None
            mine = self._queues.get(lease.queue)
            if mine is not None:
                buffered = next((c for c in list(mine.buffer) if c.token is lease), None)
                if buffered is not None:
                    try:
                        mine.buffer.remove(buffered)
                    except ValueError:
                        buffered = None  # a claim loop took it meanwhile: it has started
        if buffered is not None:
            return  # never started: nothing to stop
        if status == JobStatus.CANCELLED.value:
            # cancel_job() found the job leased and cancelled it: stop its handler.
            self._notify_cancel(str(key))
            return
        logger.warning(
            "neoq: job %s queue=%r lost its lease (the job is now %s): this process was too slow to renew it, "
            "so another run may have started; this run's outcome will be discarded",
            key,
            lease.queue,
            status or "deleted",
        )
