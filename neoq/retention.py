"""Retention: finished jobs are deleted after an age, by every worker, with no leader.

Each client that runs handlers has one ``neoq-pruner`` thread. At a jittered interval it asks
the backend to delete finished jobs older than their retention, in small batches
(``Backend.prune``), so no batch holds rows or locks for long and claims never wait on it.
Every worker prunes; deleting is idempotent and the backend skips rows another pruner holds,
so several pruners only share the work. The thread runs no handler and takes no claim: a slow
or failing store delays pruning, never jobs.
"""

from __future__ import annotations

import logging
import random
import threading
from datetime import datetime, timedelta

from .backends.base import Backend
from .clock import Clock
from .defaults import DEFAULT_PRUNE_BATCH, DEFAULT_PRUNE_INTERVAL
from .errors import NeoqError
from .job import JobStatus

__all__ = ["Pruner", "prune_interval"]

#: The shortest pause between pruning rounds, in seconds, whatever the retention.
MIN_PRUNE_INTERVAL = 0.1

#: The most batches one round deletes before it pauses, so a large backlog is spread out.
MAX_BATCHES_PER_ROUND = 20

#: How long ``shutdown()`` waits for a pruning batch in progress, in seconds.
PRUNER_JOIN_TIMEOUT = 10.0


def prune_interval(processed: float | None, failed: float | None) -> float:
    """Return the pause between pruning rounds for these retentions (seconds; ``None`` = keep).

    A tenth of the shortest retention, between ``MIN_PRUNE_INTERVAL`` and
    ``DEFAULT_PRUNE_INTERVAL``: a job outlives its retention by at most about 15 %
    (with jitter), however short the retention.
    """
    ages = [age for age in (processed, failed) if age is not None]
    if not ages:
        return DEFAULT_PRUNE_INTERVAL
    return min(DEFAULT_PRUNE_INTERVAL, max(MIN_PRUNE_INTERVAL, min(ages) / 10.0))


class Pruner:
    """The background thread of one client that deletes jobs past their retention."""

    def __init__(
        self,
        backend: Backend,
        *,
        processed: float | None,
        failed: float | None,
        clock: Clock,
        log: logging.Logger,
        batch: int = DEFAULT_PRUNE_BATCH,
    ) -> None:
        self._backend = backend
        self._processed = processed
        self._failed = failed
        self._clock = clock
        self._log = log
        self._batch = batch
        self._interval = prune_interval(processed, failed)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        #: Jobs deleted by this pruner so far.
        self.deleted = 0
        #: Pruning rounds completed so far (failed ones included).
        self.rounds = 0

    @property
    def enabled(self) -> bool:
        """False when both retentions are ``None`` (keep everything): then ``start`` does nothing."""
        return self._processed is not None or self._failed is not None

    def start(self) -> None:
        """Start the thread, once; later calls, and calls after ``stop``, do nothing."""
        with self._lock:
            if self._thread is not None or self._stopping.is_set() or not self.enabled:
                return
            self._thread = threading.Thread(target=self._run, name="neoq-pruner", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Ask the thread to stop after its current batch; does not wait (see ``join``)."""
        self._stopping.set()

    def join(self, timeout: float | None = PRUNER_JOIN_TIMEOUT) -> None:
        """Wait up to ``timeout`` seconds for the thread to end (after ``stop``).

        Bounded: a store that hangs mid-batch must not hang ``shutdown()``; the thread is a
        daemon and ends with its batch.
        """
        with self._lock:
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def cutoffs(self) -> dict[JobStatus, datetime]:
        """Return the ``older_than`` argument of ``Backend.prune`` for now."""
        now = self._clock.now()
        older_than: dict[JobStatus, datetime] = {}
        if self._processed is not None:
            cutoff = now - timedelta(seconds=self._processed)
            older_than[JobStatus.PROCESSED] = cutoff
            older_than[JobStatus.CANCELLED] = cutoff
        if self._failed is not None:
            older_than[JobStatus.FAILED] = now - timedelta(seconds=self._failed)
        return older_than

    def prune_once(self) -> int:
        """Run one round: delete batches until one comes back short; return how many were deleted."""
        total = 0
        for _ in range(MAX_BATCHES_PER_ROUND):
            if self._stopping.is_set():
                break
            deleted = self._backend.prune(self.cutoffs(), self._batch)
            total += deleted
            if deleted < self._batch:
                break
        self.deleted += total
        return total

    def _run(self) -> None:
        stopping = self._stopping
        # A random first delay spreads the rounds of workers that start together.
        delay = random.uniform(0.1, 1.0) * self._interval
        failures = 0
        while not stopping.wait(delay):
            try:
                deleted = self.prune_once()
            except NeoqError as exc:
                failures += 1
                self._log.warning("neoq: pruning finished jobs failed (%s); trying again later", exc)
            except Exception:  # a backend bug: log it, keep the thread (and the workers) alive
                failures += 1
                self._log.exception("neoq: backend %r raised while pruning finished jobs", self._backend)
            else:
                failures = 0
                if deleted:
                    self._log.debug("neoq: pruned %d finished jobs past their retention", deleted)
            self.rounds += 1
            # Jitter keeps workers from pruning in lockstep; failures back off up to 8 intervals.
            delay = self._interval * random.uniform(0.75, 1.25) * min(8, 2**failures)
