"""``AttemptRunner``: one attempt from its claim to its settle, and the ends that come from outside.

A claim loop hands it each claimed job (``run``): the runner checks that the job may still
start, runs the handler, decides the outcome (processed, a retry with backoff, failed) and
settles it through the backend. The watchdog (at an attempt's timeout or deadline), the
backend's cancel callback and a forced shutdown end a running attempt from outside: they set
``JobContext.cancelled``, interrupt the claim's store work and settle the attempt without waiting
for the handler. Whichever comes first decides the outcome (``Attempt.take``).

Nothing that escapes an attempt ends a neoq thread: a handler's ``BaseException`` fails the
attempt like any exception, and a failure of neoq's own machinery (a backend, a backoff, a hook,
a bug) is logged at ERROR with its traceback and puts the job back.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from ..backends.base import Backend, Claim, Outcome
from ..backends.capabilities import SNOOZE
from ..clock import Clock
from ..context import LAZY_DEADLINE, _local
from ..defaults import MAX_SNOOZES
from ..errors import DeadlineExceededError, InvalidJobError, JobTimeoutError, NeoqError
from ..flow import Snooze
from ..handler import Handler
from ..job import Job, JobStatus
from ..outcomes import error_text, result_text, running_stack_text, traceback_text
from .attempt import Attempt
from .progress import ProgressWriter
from .report import report
from .watchdog import Watchdog

__all__ = ["AttemptRunner", "RecoveryCallback"]

#: The retry delay, in seconds, when a handler's backoff raises or returns no valid delay.
BACKOFF_FALLBACK = 1.0

RecoveryCallback = Callable[[Job, BaseException], Any]

#: The outcome of every attempt that returned: immutable, so one object serves them all.
_PROCESSED = Outcome(JobStatus.PROCESSED)


class AttemptRunner:
    """Runs the attempts of one worker's claim loops, and ends running ones from outside."""

    def __init__(
        self, backend: Backend, clock: Clock, log: logging.Logger, recovery: RecoveryCallback | None, events: Any
    ) -> None:
        self._backend = backend
        self._log = log
        self._recovery_callback = recovery
        self._events = events
        #: The running attempts by job id: at most the sum of the started queues' concurrency.
        self.running: dict[str, Attempt] = {}
        # The system clock's functions themselves: one call less per read, twice per attempt.
        system = type(clock) is Clock
        self._monotonic: Callable[[], float] = time.monotonic if system else clock.monotonic
        self._now: Callable[[], datetime] = functools.partial(datetime.now, timezone.utc) if system else clock.now
        #: Ends running attempts at their timeout or deadline.
        self.watchdog = Watchdog(self.running, self._expire, self._monotonic)
        #: Writes the handlers' progress reports (its thread starts with the first report).
        self.progress = ProgressWriter(backend, self._monotonic)
        self._report_progress = self.progress.report
        #: Whether ``release`` must be called after each attempt (the backend says).
        self._releases = bool(backend.needs_release)
        #: Whether ``raise Snooze`` snoozes (else it fails the attempt like any exception).
        self._snoozes = SNOOZE in backend.capabilities
        backend.set_cancel_callback(self._cancel_running)

    # -- running -------------------------------------------------------------------------

    def run(
        self, handler: Handler, claim: Claim, chain: str | None = None, stopping: threading.Event | None = None
    ) -> Claim | None:
        """Run one attempt; with ``chain`` (the queue), maybe return the next job, claimed as it settled.

        Not once ``stopping`` is set, even when it was set while the handler ran: a loop told to stop
        takes no new job.
        """
        job = claim.job
        deadline = job.deadline
        now = None
        if deadline is not None:
            now = self._now()
            if deadline <= now:
                late = DeadlineExceededError("the deadline passed before the job could start")
                self._settle_unrun(claim, Outcome(JobStatus.FAILED, error_text(late)), late)
                return None
        attempts = job.attempts - job.snoozes  # a snoozed attempt is neither a failure nor a retry
        if attempts > 1:  # at most max_retries + 1 attempts, and max_retries >= 0
            max_retries = handler.max_retries_for(job)
            if attempts > max_retries + 1:
                # Earlier attempts ended without an outcome: their worker died or hung.
                self._settle_unrun(
                    claim,
                    Outcome(
                        JobStatus.FAILED,
                        f"WorkerLostError: {attempts - 1} attempts started and none finished "
                        f"(max_retries={max_retries}); the worker running it died or hung"
                        + (f"; last error: {job.error}" if job.error else ""),
                    ),
                )
                return None
        monotonic = self._monotonic
        start = monotonic()
        timeout = handler.timeout
        ends_at = math.inf if timeout is None else start + timeout
        if now is None:
            # No deadline: the attempt's wall-clock end is worked out only if the handler asks.
            attempt = Attempt(
                claim,
                handler,
                None if timeout is None else LAZY_DEADLINE,
                ends_at,
                start,
                False,
                monotonic,
                self._now,
                self._report_progress,
            )
            by_deadline = False
        else:
            deadline_at = start + (deadline - now).total_seconds()  # type: ignore[operator]
            by_deadline = deadline_at <= ends_at
            if by_deadline:
                ends_at = deadline_at
            attempt_deadline = None if ends_at == math.inf else now + timedelta(seconds=ends_at - start)
            attempt = Attempt(
                claim, handler, attempt_deadline, ends_at, start, by_deadline, monotonic, None, self._report_progress
            )
        job_id = job.id or ""
        running = self.running
        running[job_id] = attempt
        if by_deadline:
            self.watchdog.kick()  # it may end before the watchdog's next look
        events = self._events
        if events is not None and events.active:
            events.started(job)
        error: BaseException | None = None
        value: Any = None
        local = _local
        local.context = attempt
        try:
            value = handler.func(job)
        except BaseException as exc:  # SystemExit, KeyboardInterrupt...: fail the attempt, not the thread
            error = exc
        finally:
            local.context = None
        following: Claim | None = None
        try:
            try:
                attempt._token.pop()  # ``attempt.take()``, inlined: it runs once per job
            except IndexError:  # the watchdog, a cancellation or a forced shutdown settled it
                if error is not None:
                    self._log.debug(
                        "neoq: job %s (queue %r) raised after its attempt had ended: %s", job.id, job.queue, error
                    )
            else:
                duration = monotonic() - start
                if attempt._progress is not None:
                    self.progress.finish(attempt)  # its last report lands while the claim holds the job
                if error is None:
                    # ``_settle(claim, outcome, ...)`` and ``report``'s common case, inlined.
                    if value is None:
                        outcome, refused = _PROCESSED, None
                    else:
                        outcome, refused = self._returned(value)
                    backend = self._backend
                    try:
                        if chain is None or (stopping is not None and stopping.is_set()):
                            backend.settle(claim, outcome)
                        else:
                            following = backend.settle_then_claim(claim, outcome, chain)
                    except NeoqError as err:
                        self._log_unsettled(job, outcome, err)
                    else:
                        if self._log.isEnabledFor(logging.INFO):
                            report(self._log, events, job, outcome, duration, refused)
                        elif events is not None and events.active:
                            events.settled(job, outcome, duration, refused)
                elif isinstance(error, Snooze) and self._snoozes:
                    outcome = self._snoozed(job, error)
                    self._settle(claim, outcome, duration, None if outcome.snoozed else error)
                else:
                    self._recover(job, error)
                    outcome = self._failure(job, handler, error_text(error), traceback_text(error))
                    self._settle(claim, outcome, duration, error)
        except BaseException:
            # neoq's own machinery failed past what the steps above catch: the job must not stay claimed.
            self._log.exception("neoq: job %s (queue %r): settling or reporting its attempt failed", job.id, job.queue)
            self._put_back(claim)  # a no-op if it was settled; a job claimed with the settle still runs
        finally:
            if running.get(job_id) is attempt:
                running.pop(job_id, None)
            if self._releases:
                try:
                    self._backend.release(claim)
                except Exception:  # pragma: no cover - release must not raise; keep the loop alive
                    self._log.exception("neoq: releasing job %s failed", job.id)
        return following

    # -- outcomes ------------------------------------------------------------------------

    def _returned(self, value: Any) -> tuple[Outcome, InvalidJobError | None]:
        """The outcome of an attempt that returned ``value`` (not ``None``): PROCESSED with its JSON,
        or FAILED at once when no store can keep it (no retry: the handler's work is done), with the
        ``InvalidJobError`` that the log and the hooks report."""
        try:
            return Outcome(JobStatus.PROCESSED, result=result_text(value)), None
        except InvalidJobError as exc:
            refused = exc
        except Exception as exc:  # a __str__ or a mapping's items() that raises, while checking it
            refused = InvalidJobError(
                f"the handler's result ({type(value).__name__}) cannot be encoded: {error_text(exc)}"
            )
        return Outcome(JobStatus.FAILED, error_text(refused)), refused

    def _failure(
        self, job: Job, handler: Handler, error: str, traceback: str | None = None, *, final: bool = False
    ) -> Outcome:
        """Return the outcome of a failed attempt: a retry, or FAILED when none is left."""
        attempts = job.attempts - job.snoozes
        if final or attempts > handler.max_retries_for(job):
            return Outcome(JobStatus.FAILED, error, traceback=traceback)
        retries = max(job.retries + 1, attempts)
        try:
            delay = handler.retry_delay(retries)
        except BaseException as exc:  # it runs user code, in a claim loop or the watchdog
            self._log.error(
                "neoq: backoff of queue %r failed: %s; retrying job %s in %gs",
                job.queue,
                error_text(exc),
                job.id,
                BACKOFF_FALLBACK,
                exc_info=True,
            )
            delay = BACKOFF_FALLBACK
        try:
            run_after = self._now() + timedelta(seconds=delay)
        except OverflowError:  # a clock near year 9999: no retry can be due
            return Outcome(JobStatus.FAILED, error, traceback=traceback)
        if job.deadline is not None and run_after >= job.deadline:
            return Outcome(JobStatus.FAILED, error, traceback=traceback)
        return Outcome(JobStatus.NEW, error, run_after, retries, traceback=traceback)

    def _snoozed(self, job: Job, snooze: Snooze) -> Outcome:
        """The outcome of ``raise Snooze(delay)``: due again after ``delay``, ``retries`` as they were;
        FAILED past ``MAX_SNOOZES`` snoozes, or when it would come due after the job's deadline."""
        if job.snoozes >= MAX_SNOOZES:
            limit = f"SnoozeLimitError: the job snoozed {job.snoozes} times, the most a job may (MAX_SNOOZES)"
            return Outcome(JobStatus.FAILED, limit)
        try:
            run_after = self._now() + timedelta(seconds=snooze.delay)
        except OverflowError:
            return Outcome(JobStatus.FAILED, "SnoozeLimitError: the snooze ends past the year 9999")
        if job.deadline is not None and run_after >= job.deadline:
            return Outcome(JobStatus.FAILED, "DeadlineExceededError: the job snoozed past its deadline")
        return Outcome(JobStatus.NEW, job.error, run_after, job.retries, snoozed=True)

    def _recover(self, job: Job, exc: BaseException) -> None:
        callback = self._recovery_callback
        if callback is None:
            return
        try:
            callback(job, exc)
        except BaseException:  # even SystemExit: it runs in a claim loop or the watchdog
            self._log.exception("neoq: recovery_callback raised for job %s (queue %r)", job.id, job.queue)

    # -- settling ------------------------------------------------------------------------

    def _settle(self, claim: Claim, outcome: Outcome, duration: float, exc: BaseException | None = None) -> None:
        """Store the outcome and report it."""
        job = claim.job
        try:
            self._backend.settle(claim, outcome)
        except NeoqError as err:
            self._log_unsettled(job, outcome, err)
            return
        except Exception:  # a backend raising what it must not
            self._log.exception(
                "neoq: job %s (queue %r, attempt %d) could not be settled as %s",
                job.id,
                job.queue,
                job.attempts,
                outcome.status.value,
            )
            self._put_back(claim)
            return
        report(self._log, self._events, job, outcome, duration, exc)

    def _put_back(self, claim: Claim) -> None:
        """After a settle that failed unexpectedly: make the job due again, as a shutdown would.

        Where the failed settle got far enough to end the claim (PostgreSQL), this does nothing
        and ``release`` rolls the claim's transaction back: the job runs again either way.
        """
        job = claim.job
        try:
            self._backend.settle(
                claim, Outcome(JobStatus.NEW, job.error, self._now(), job.retries, traceback=job.traceback)
            )
        except Exception:
            self._log.exception("neoq: job %s (queue %r) could not be put back", job.id, job.queue)

    def _log_unsettled(self, job: Job, outcome: Outcome, err: NeoqError) -> None:
        # The outcome is lost, not the job: its claim ends with the connection and it runs again.
        self._log.error(
            "neoq: job %s (queue %r, attempt %d) could not be settled as %s: %s",
            job.id,
            job.queue,
            job.attempts,
            outcome.status.value,
            err,
        )

    def _settle_unrun(self, claim: Claim, outcome: Outcome, exc: BaseException | None = None) -> None:
        try:
            self._settle(claim, outcome, 0.0, exc)
        finally:
            try:
                self._backend.release(claim)
            except Exception:  # pragma: no cover
                self._log.exception("neoq: releasing job %s failed", claim.job.id)

    # -- ends from outside ---------------------------------------------------------------

    def _end_from_outside(self, attempt: Attempt, outcome: Outcome, exc: BaseException | None = None) -> None:
        """Settle an attempt whose handler is still running (it already passed ``take``)."""
        attempt.cancelled.set()
        try:
            self._backend.interrupt(attempt._claim)
        except Exception:  # pragma: no cover - interrupt must not raise
            self._log.exception("neoq: interrupting job %s failed", attempt.job.id)
        self._settle(attempt._claim, outcome, self._monotonic() - attempt._started, exc)

    def _expire(self, attempt: Attempt) -> None:
        """The watchdog's action at an attempt's end time."""
        if not attempt.take():
            return
        job = attempt.job
        exc: NeoqError
        if attempt._by_deadline:
            exc = DeadlineExceededError("the job's deadline passed while it was running")
        else:
            exc = JobTimeoutError(f"the attempt ran past the handler's timeout of {attempt._handler.timeout:g}s")
        error = error_text(exc)
        # The handler raised nothing: its traceback is where it was when its time ran out.
        stack = running_stack_text(_RUN_CODE, "attempt", attempt, error)
        outcome = self._failure(job, attempt._handler, error, stack, final=attempt._by_deadline)
        self._end_from_outside(attempt, outcome, exc)

    def _cancel_running(self, job_id: str) -> None:
        """The backend's cancel callback: end a running attempt as CANCELLED."""
        attempt = self.running.get(job_id)
        if attempt is None or not attempt.take():
            return
        job = attempt.job
        self._end_from_outside(attempt, Outcome(JobStatus.CANCELLED, job.error, traceback=job.traceback))

    def put_back_running(self) -> None:
        """At the end of a shutdown's grace time: end every running attempt, cancelled, and put its
        job back as waiting (due now, the attempt counted), so no job is lost."""
        for attempt in list(self.running.values()):
            if attempt.take():
                job = attempt.job
                self._end_from_outside(
                    attempt, Outcome(JobStatus.NEW, job.error, self._now(), job.retries, traceback=job.traceback)
                )


#: ``AttemptRunner.run``'s code: the frame below which a timed-out handler's stack is read.
_RUN_CODE = AttemptRunner.run.__code__
