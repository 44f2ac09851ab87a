"""The lease engine's outcome flusher: ``settle`` hands an outcome over and returns; one thread
writes every outcome waiting at that moment in one fenced ``LeaseStore.settle_many``.

Every other call of the client that touches the store first waits for the outcomes settled
before it (``barrier``), so the client reads its own writes. An outcome not yet written when the
process dies is lost: its job runs again once its lease expires (at-least-once).
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Any

from ...errors import BackendError, NeoqError
from ...job import JobStatus
from .store import LeaseStore, LeaseToken, Settlement

__all__ = ["Flusher"]

logger = logging.getLogger("neoq.backends.lease")

#: The most outcomes one write carries.
MAX_FLUSH = 500


class Flusher:
    """The outcomes waiting to be written, and the thread that writes them.

    ``lock`` and ``leases`` are the engine's: the lock guards ``leases`` (the leases the heartbeat
    renews), every ``LeaseToken``'s ``settled``/``lost``, and the hand-off here. A lease written
    (or failed to be) is no longer renewed.
    """

    def __init__(self, store: LeaseStore, lock: threading.Lock, leases: dict[Any, LeaseToken], name: str) -> None:
        self._store = store
        self._lock = lock
        self._leases = leases
        #: The error ``submit`` raises once the thread stopped (``name`` names the store).
        self._closed_message = f"the {name} backend is closed; the outcome was not written"
        #: Outcomes waiting, how many were handed over so far (the sequence number of the latest),
        #: and how many of them are retries (a claim waits for those first). Guarded by the lock.
        self._pending: collections.deque[Settlement] = collections.deque()
        self.submitted = 0
        self.pending_retries = 0
        #: False once the thread stopped: ``submit`` then fails instead of losing the outcome silently.
        self._accepting = True
        self._stopping = False
        #: True while the thread sleeps on _gate; whoever sets it back to False releases _gate once.
        self._idle = False
        self._gate = threading.Lock()
        self._gate.acquire()
        #: How many of the submitted outcomes were dealt with; ``barrier`` waits on _written.
        self._flushed = 0
        self._flushing = True
        self._written = threading.Condition(threading.Lock())
        self._thread = threading.Thread(target=self._loop, name="neoq-lease-flusher", daemon=True)
        self._thread.start()

    def submit(self, settlement: Settlement, *, mark: bool = False) -> bool:
        """Hand an outcome to the thread; with ``mark``, mark its lease settled first (False when
        it already was: nothing is handed over). Raises ``BackendError`` once stopped."""
        with self._lock:
            if mark:
                lease = settlement.lease
                if lease.settled:
                    return False
                if not self._accepting:
                    raise BackendError(self._closed_message)
                lease.settled = True
            elif not self._accepting:
                raise BackendError(self._closed_message)
            self.submitted += 1
            if settlement.outcome.status is JobStatus.NEW:
                self.pending_retries += 1
            self._pending.append(settlement)
            wake = self._idle
            self._idle = False
        if wake:
            self._gate.release()
        return True

    def barrier(self) -> None:
        """Wait until every outcome submitted so far was written (or failed to be)."""
        target = self.submitted
        if self._flushed >= target:
            return
        with self._written:
            while self._flushed < target and self._flushing:
                self._written.wait(1.0)

    def stop(self) -> None:
        """Write what is waiting, then stop the thread (call with the engine closing). Idempotent."""
        with self._lock:
            self._stopping = True
            wake = self._idle
            self._idle = False
        if wake:
            self._gate.release()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _loop(self) -> None:
        try:
            while True:
                with self._lock:
                    pending = self._pending
                    if not pending:
                        if self._stopping:
                            return  # stopped, and nothing left to write
                        self._idle = True
                        batch = None
                    else:
                        batch = [pending.popleft() for _ in range(min(MAX_FLUSH, len(pending)))]
                        seq = self.submitted - len(pending)
                if batch is None:
                    self._gate.acquire()  # released once by the next submit() (or stop())
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
                        self.pending_retries -= retries
                    with self._written:
                        self._flushed = seq
                        self._written.notify_all()
        finally:
            with self._lock:
                self._accepting = False
            with self._written:
                self._flushing = False
                self._written.notify_all()

    def _flush(self, batch: list[Settlement]) -> None:
        """Write ``batch``'s outcomes in one fenced step; report the ones whose lease was lost."""
        try:
            written = self._store.settle_many(batch)
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
