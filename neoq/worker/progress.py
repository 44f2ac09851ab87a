"""``ProgressWriter``: the one thread that writes handlers' progress reports, a few a second at most.

``job_context().progress()`` only records the report on its attempt and wakes this thread: the
handler never waits for the store. The thread writes an attempt's latest report at once when the
attempt wrote none in the last ``PROGRESS_INTERVAL``, else when that interval has passed, so a
handler reporting in a tight loop costs the store at most ``1 / PROGRESS_INTERVAL`` writes a second
and its last report is written within ``PROGRESS_INTERVAL`` (plus the write). A report still
pending when the handler returns is written by the handler's thread before the settle
(``finish``), while the claim still holds the job; one pending when the attempt is ended from
outside (timeout, cancellation) is dropped. The thread is started by the first report, so a worker
whose handlers never report has none.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable

from ..backends.base import Backend
from ..defaults import PROGRESS_INTERVAL
from .attempt import Attempt
from .watchdog import LONGEST_WAIT

__all__ = ["ProgressWriter"]

logger = logging.getLogger(__name__)


class ProgressWriter:
    """Writes the progress reports of one worker's attempts through its backend, rate-limited."""

    def __init__(self, backend: Backend, monotonic: Callable[[], float], interval: float = PROGRESS_INTERVAL) -> None:
        self._backend = backend
        self._monotonic = monotonic
        self._interval = interval
        self._cond = threading.Condition(threading.Lock())
        #: Attempts with a report not written yet (the report itself is ``attempt._progress[1]``).
        self._pending: set[Attempt] = set()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def report(self, attempt: Attempt, fraction: float, note: str | None) -> None:
        """Keep ``attempt``'s latest report, to be written as soon as its rate allows."""
        with self._cond:
            state = attempt._progress
            if state is None:
                state = attempt._progress = [-math.inf, None, False]  # [written at, report, writing]
            state[1] = (fraction, note)
            self._pending.add(attempt)
            if self._thread is None:
                self._stopping = False
                self._thread = threading.Thread(target=self._run, name="neoq-progress", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def finish(self, attempt: Attempt) -> None:
        """The handler returned: write its pending report now, before the settle (from its thread)."""
        with self._cond:
            self._pending.discard(attempt)
            state = attempt._progress
            if state is None:
                return
            # A write of an earlier report in flight must land first, or it would overwrite this one.
            self._cond.wait_for(lambda: not state[2], timeout=5.0)
            report, state[1] = state[1], None
        if report is not None:
            self._write(attempt, report)

    def _run(self) -> None:
        while True:
            try:
                if self._flush():
                    return
            except BaseException:  # the thread must outlive a failure, or reports stop
                logger.exception("neoq: the progress writer failed; it goes on")
                with self._cond:
                    if self._stopping:
                        return
                    self._cond.wait(0.1)

    def _flush(self) -> bool:
        """Write the reports that are due; return True once stopped."""
        cond = self._cond
        interval = self._interval
        while True:
            with cond:
                while True:
                    if self._stopping:
                        self._pending.clear()
                        return True
                    now = self._monotonic()
                    ready: list[tuple[Attempt, tuple[float, str | None]]] = []
                    wake = math.inf
                    for attempt in list(self._pending):
                        state = attempt._progress
                        if attempt.taken or state is None or state[1] is None:
                            self._pending.discard(attempt)  # ended (its report is dropped) or finished
                            continue
                        due = state[0] + interval
                        if due <= now:
                            ready.append((attempt, state[1]))
                            state[0], state[1], state[2] = now, None, True
                            self._pending.discard(attempt)
                        elif due < wake:
                            wake = due
                    if ready:
                        break
                    cond.wait(LONGEST_WAIT if wake == math.inf else min(wake - now, LONGEST_WAIT))
            for attempt, report in ready:
                try:
                    self._write(attempt, report)
                finally:
                    with cond:
                        state = attempt._progress
                        if state is not None:
                            state[2] = False
                        cond.notify_all()

    def _write(self, attempt: Attempt, report: tuple[float, str | None]) -> None:
        job = attempt.job
        try:
            self._backend.progress(attempt._claim, report[0], report[1])
        except Exception as exc:  # a lost report is not worth an attempt: log it and go on
            logger.warning("neoq: job %s (queue %r): its progress could not be stored: %s", job.id, job.queue, exc)

    def stop(self) -> None:
        """Stop the thread (pending reports are dropped: their attempts have ended). Idempotent."""
        with self._cond:
            thread, self._thread = self._thread, None
            self._stopping = True
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join()
