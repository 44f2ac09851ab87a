"""The worker runtime, written once for every backend.

Per started queue, a ``ThreadPoolExecutor`` with ``concurrency`` threads; each thread is a claim
loop (claim a due job, run the handler, settle the outcome) so a job costs no executor hand-off.
One watchdog thread ends attempts at ``min(start + timeout, deadline)`` without waiting for the
handler: it sets ``JobContext.cancelled``, interrupts the claim's store work and settles the
attempt as failed. Whichever of the handler's return, the watchdog, a cancellation or a forced
shutdown comes first decides the outcome (``_Attempt.take``); the others change nothing.

Nothing that escapes an attempt ends a neoq thread: a handler's ``BaseException`` fails the
attempt like any exception, and a failure of neoq's own machinery (a backend, a backoff, a
hook, a bug) is logged at ERROR with its traceback, puts the job back, and the claim loop or
watchdog goes on (``_serve`` starts a claim loop again if one ever ends by an exception).
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import thread as _futures_thread
from concurrent.futures import wait as wait_futures
from datetime import datetime, timedelta, timezone
from typing import Any

from .backends.base import Backend, Claim, Outcome
from .clock import Clock
from .context import LAZY_DEADLINE, JobContext, _LazyDeadline, _local
from .errors import DeadlineExceededError, JobTimeoutError, NeoqError
from .handler import Handler
from .job import Job, JobStatus, error_text

__all__ = ["Worker", "claim_loop_threads"]

logger = logging.getLogger(__name__)

#: How long one claim call blocks before the loop looks at its stop flag again. Shutdown wakes
#: blocked claims through ``Backend.wakeup``, so this only bounds a lost wake-up.
CLAIM_WAIT = 2.0

#: After a forced shutdown sets ``cancelled``, how long to wait for cooperative handlers to return.
CANCEL_GRACE = 1.0

#: The longest pause between claims after a backend error (they double from 0.05 s).
MAX_ERROR_PAUSE = 5.0

#: The retry delay, in seconds, when a handler's backoff raises or returns no valid delay.
BACKOFF_FALLBACK = 1.0

#: The longest single wait of a runtime thread, in seconds. ``threading`` refuses waits above
#: ``threading.TIMEOUT_MAX`` (OverflowError; 49 days on Windows); a longer wait is cut into
#: pieces of this length, the waiter looking again after each.
LONGEST_WAIT = min(3600.0, threading.TIMEOUT_MAX)

RecoveryCallback = Callable[[Job, BaseException], Any]

#: The outcome of every attempt that returned: immutable, so one object serves them all.
_PROCESSED = Outcome(JobStatus.PROCESSED)


class _Attempt(JobContext):
    """One running attempt, and the ``JobContext`` its handler sees (one object for both).

    ``take()`` returns True to exactly one caller, the one that settles the attempt.
    """

    __slots__ = ("_by_deadline", "_claim", "_handler", "_started", "_token")

    def __init__(
        self,
        claim: Claim,
        handler: Handler,
        deadline: datetime | _LazyDeadline | None,
        ends_at: float,
        started: float,
        by_deadline: bool,
        monotonic: Callable[[], float],
        now: Callable[[], datetime] | None,
    ) -> None:
        # JobContext's fields, set here rather than through its __init__: this runs once per job.
        self.job = claim.job
        self._deadline = deadline
        self._now = now
        self._cancelled = None
        self.transaction = claim.transaction
        self._ends_at = ends_at
        self._monotonic = monotonic
        self._claim = claim
        self._handler = handler
        self._started = started
        self._by_deadline = by_deadline
        # One item that exactly one ``take`` pops: ``list.pop`` is atomic, and a list is cheaper
        # to make per attempt than a lock.
        self._token: list[bool] = [True]

    def take(self) -> bool:
        try:
            return self._token.pop()
        except IndexError:
            return False

    @property
    def taken(self) -> bool:
        return not self._token


class _Watchdog:
    """One thread that ends attempts at their end time, to the millisecond, with no work per attempt.

    When it wakes it looks at every running attempt (the worker's ``running`` dict: at most the
    sum of the queues' concurrency), fires the ones whose end came, and sleeps until the earliest
    end among the others, or until ``now + shortest timeout`` of the started queues: an attempt
    that starts later ends no sooner than that, by its timeout. Only an attempt that may end
    sooner, by its job's deadline, calls ``kick``; the others cost the runtime nothing here.
    ``kick`` and ``note_timeout`` take the lock the thread holds from its look to its wait, so
    they either come before the look (which then sees the attempt) or wake the wait.
    """

    def __init__(
        self, running: dict[str, _Attempt], fire: Callable[[_Attempt], None], monotonic: Callable[[], float]
    ) -> None:
        self._running = running
        self._fire = fire
        self._monotonic = monotonic
        self._cond = threading.Condition(threading.Lock())
        self._min_timeout = math.inf
        self._thread: threading.Thread | None = None
        self._stopping = False

    def note_timeout(self, timeout: float | None) -> None:
        """Claim loops whose attempts end ``timeout`` seconds after they start are about to run."""
        if timeout is not None:
            with self._cond:
                if timeout < self._min_timeout:
                    self._min_timeout = timeout
                self._wake()

    def kick(self) -> None:
        """A running attempt may end before the thread's next look (a deadline): look again now."""
        with self._cond:
            self._wake()

    def _wake(self) -> None:
        # Called with the lock held.
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="neoq-watchdog", daemon=True)
            self._thread.start()
        self._cond.notify()

    def _run(self) -> None:
        # The thread must outlive any failure: without it no timeout or deadline is enforced.
        while True:
            try:
                self._watch()
                return
            except BaseException:
                logger.exception("neoq: the watchdog failed; it goes on")
                with self._cond:
                    if self._stopping:
                        return
                    self._cond.wait(0.1)  # a failure that repeats does not spin

    def _watch(self) -> None:
        cond = self._cond
        monotonic = self._monotonic
        while True:
            with cond:
                while True:
                    if self._stopping:
                        return
                    now = monotonic()
                    plan = now + self._min_timeout
                    due = []
                    for attempt in list(self._running.values()):  # one atomic copy
                        end = attempt._ends_at
                        if end <= now:
                            if not attempt.taken:
                                due.append(attempt)
                        elif end < plan:
                            plan = end
                    if due:
                        break
                    cond.wait(None if plan == math.inf else min(plan - now, LONGEST_WAIT))
            for attempt in due:
                try:
                    self._fire(attempt)
                except BaseException:  # the next attempts must still end on time
                    logger.exception("neoq: the watchdog failed to end the attempt of job %s", attempt.job.id)

    def stop(self) -> None:
        with self._cond:
            thread = self._thread
            self._thread = None
            self._stopping = True
            self._min_timeout = math.inf
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join()


def _known_worker_signature() -> bool:
    """Whether ``concurrent.futures.thread._worker`` takes the arguments ``_LoopExecutor`` gives it."""
    worker = getattr(_futures_thread, "_worker", None)
    try:
        names = list(inspect.signature(worker).parameters) if worker is not None else []
    except (TypeError, ValueError):  # pragma: no cover - not a Python function
        return False
    return names == ["executor_reference", "work_queue", "initializer", "initargs"]


#: Whether ``_LoopExecutor`` can start its threads as daemon threads (CPython 3.10 to 3.13).
_DAEMON_THREADS = _known_worker_signature()

#: Every claim-loop thread of this process (weakly held), for ``claim_loop_threads``.
_LOOP_THREADS: weakref.WeakSet[threading.Thread] = weakref.WeakSet()


def claim_loop_threads() -> list[threading.Thread]:
    """Return the live threads that run claim loops (and so handlers), of every client of this process.

    After ``shutdown()`` returns, the ones left run handlers that ignored cancellation.
    """
    return [thread for thread in list(_LOOP_THREADS) if thread.is_alive()]


class _LoopExecutor(ThreadPoolExecutor):
    """A queue's ``ThreadPoolExecutor`` whose threads do not hold the process at exit.

    ``concurrent.futures`` joins its threads when the interpreter exits. After ``shutdown()``
    gave up on a handler that ignores cancellation (its attempt was put back as waiting), that
    join would keep the process alive until the handler returns, maybe never. These threads
    are daemon threads, and not registered for that join: ``_start_daemon_thread`` is CPython's
    ``_adjust_thread_count`` (3.10 to 3.13) but for those two points. On a Python whose private
    ``_worker`` differs, the executor starts its threads as a plain ``ThreadPoolExecutor`` does.
    """

    def _adjust_thread_count(self) -> None:
        if _DAEMON_THREADS:
            self._start_daemon_thread()
        else:  # pragma: no cover - a Python that neoq does not know yet
            super()._adjust_thread_count()
        _LOOP_THREADS.update(self._threads)

    def _start_daemon_thread(self) -> None:
        if self._idle_semaphore.acquire(timeout=0):
            return

        def weakref_cb(_: object, q: Any = self._work_queue) -> None:
            q.put(None)

        count = len(self._threads)
        if count < self._max_workers:
            thread = threading.Thread(
                name=f"{self._thread_name_prefix}_{count}",
                target=_futures_thread._worker,
                args=(weakref.ref(self, weakref_cb), self._work_queue, self._initializer, self._initargs),
                daemon=True,
            )
            thread.start()
            self._threads.add(thread)  # type: ignore[attr-defined]


class _QueueRunner:
    """The claim loops of one queue."""

    def __init__(self, queue: str, handler: Handler, burst: bool) -> None:
        self.queue = queue
        self.handler = handler
        self.burst = burst
        self.stopping = threading.Event()
        self.executor: ThreadPoolExecutor | None = None
        self.futures: list[Future[None]] = []
        self.ran = 0


class Worker:
    """Runs handlers for queues of one client against one backend."""

    def __init__(
        self,
        backend: Backend,
        *,
        clock: Clock,
        log: logging.Logger,
        recovery_callback: RecoveryCallback | None = None,
        events: Any = None,
    ) -> None:
        self._backend = backend
        self._clock = clock
        self._log = log
        self._recovery_callback = recovery_callback
        self._events = events
        self._lock = threading.Lock()
        self._runners: dict[str, _QueueRunner] = {}
        self._running: dict[str, _Attempt] = {}
        # The system clock's functions themselves: one call less per read, twice per attempt.
        system = type(clock) is Clock
        self._monotonic: Callable[[], float] = time.monotonic if system else clock.monotonic
        self._now: Callable[[], datetime] = functools.partial(datetime.now, timezone.utc) if system else clock.now
        self._watchdog = _Watchdog(self._running, self._expire, self._monotonic)
        #: Whether ``release`` must be called after each attempt (the backend says).
        self._releases = bool(backend.needs_release)
        self._stopped = False
        backend.set_cancel_callback(self._cancel_running)

    # -- starting ------------------------------------------------------------------------

    def start(self, queue: str, handler: Handler) -> None:
        """Start ``concurrency`` claim loops for ``queue`` in background threads."""
        # Before anything starts: a mode the backend cannot serve fails here, with nothing running.
        self._backend.prepare_queue(queue, handler)
        runner = _QueueRunner(queue, handler, burst=False)
        with self._lock:
            self._runners[queue] = runner
            self._stopped = False
        self._launch(runner)

    def _launch(self, runner: _QueueRunner) -> None:
        concurrency = runner.handler.concurrency
        self._watchdog.note_timeout(runner.handler.timeout)
        runner.executor = _LoopExecutor(max_workers=concurrency, thread_name_prefix=f"neoq-{runner.queue[:40]}")
        runner.futures = [runner.executor.submit(self._serve, runner) for _ in range(concurrency)]

    def is_started(self, queue: str) -> bool:
        """Return True if ``queue`` has running claim loops."""
        return queue in self._runners

    # -- the claim loop ------------------------------------------------------------------

    def _serve(self, runner: _QueueRunner) -> None:
        """Run one claim loop; start it again whenever it ends by an exception, unless stopping."""
        pause = 0.0
        while True:
            try:
                self._loop(runner)
                return
            except BaseException:
                # A bug, or a backend raising what it must not: without a loop the queue would
                # stop for good at concurrency 1. An attempt it was running released its claim.
                if runner.stopping.is_set():
                    self._log.exception("neoq: a claim loop of queue %r failed while stopping", runner.queue)
                    return
                pause = min(MAX_ERROR_PAUSE, max(0.05, pause * 2))
                self._log.exception(
                    "neoq: a claim loop of queue %r failed; starting it again in %.2fs", runner.queue, pause
                )
                if runner.stopping.wait(pause):
                    return

    def _loop(self, runner: _QueueRunner) -> None:
        backend = self._backend
        queue = runner.queue
        stopping = runner.stopping
        pause = 0.0
        wait = 0.0 if runner.burst else CLAIM_WAIT
        claim: Claim | None = None
        # ``claim`` is not None when the previous attempt's settle claimed the next job in the same
        # step: it runs even if the loop was told to stop meanwhile, as if claimed just before.
        while claim is not None or not stopping.is_set():
            if claim is None:
                try:
                    claim = backend.claim(queue, wait)
                except NeoqError as exc:
                    pause = min(MAX_ERROR_PAUSE, max(0.05, pause * 2))
                    self._log.warning("neoq: claiming from queue %r failed (%s); retrying in %.2fs", queue, exc, pause)
                    if runner.burst:
                        return
                    stopping.wait(pause)
                    continue
                except Exception:  # pragma: no cover - a backend bug; keep the loop alive
                    self._log.exception("neoq: backend %r raised while claiming from %r", backend, queue)
                    stopping.wait(MAX_ERROR_PAUSE)
                    continue
                pause = 0.0
                if claim is None:
                    if runner.burst:
                        return
                    continue
            runner.ran += 1
            claim = self._run(runner.handler, claim, None if stopping.is_set() else queue)

    def _run(self, handler: Handler, claim: Claim, chain: str | None = None) -> Claim | None:
        """Run one attempt; with ``chain`` (the queue), maybe return the next job, claimed as it settled."""
        job = claim.job
        deadline = job.deadline
        now = None
        if deadline is not None:
            now = self._now()
            if deadline <= now:
                late = DeadlineExceededError("the deadline passed before the job could start")
                self._settle_unrun(claim, Outcome(JobStatus.FAILED, error_text(late)), late)
                return None
        attempts = job.attempts
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
            attempt = _Attempt(
                claim, handler, None if timeout is None else LAZY_DEADLINE, ends_at, start, False, monotonic, self._now
            )
            by_deadline = False
        else:
            deadline_at = start + (deadline - now).total_seconds()  # type: ignore[operator]
            by_deadline = deadline_at <= ends_at
            if by_deadline:
                ends_at = deadline_at
            attempt_deadline = None if ends_at == math.inf else now + timedelta(seconds=ends_at - start)
            attempt = _Attempt(claim, handler, attempt_deadline, ends_at, start, by_deadline, monotonic, None)
        job_id = job.id or ""
        running = self._running
        running[job_id] = attempt
        if by_deadline:
            self._watchdog.kick()  # it may end before the watchdog's next look
        events = self._events
        if events is not None and events.active:
            events.started(job)
        error: BaseException | None = None
        local = _local
        local.context = attempt
        try:
            handler.func(job)
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
                if error is None:
                    # ``_settle(claim, _PROCESSED, ...)`` and ``_report``'s common case, inlined.
                    backend = self._backend
                    try:
                        if chain is None:
                            backend.settle(claim, _PROCESSED)
                        else:
                            following = backend.settle_then_claim(claim, _PROCESSED, chain)
                    except NeoqError as err:
                        self._log_unsettled(job, _PROCESSED, err)
                    else:
                        if self._log.isEnabledFor(logging.INFO):
                            self._report(job, _PROCESSED, duration, None)
                        elif events is not None and events.active:
                            events.settled(job, _PROCESSED, duration, None)
                else:
                    self._recover(job, error)
                    self._settle(claim, self._failure(job, handler, error_text(error)), duration, error)
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

    def _failure(self, job: Job, handler: Handler, error: str, *, final: bool = False) -> Outcome:
        """Return the outcome of a failed attempt: a retry, or FAILED when none is left."""
        if final or job.attempts > handler.max_retries_for(job):
            return Outcome(JobStatus.FAILED, error)
        retries = max(job.retries + 1, job.attempts)
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
            return Outcome(JobStatus.FAILED, error)
        if job.deadline is not None and run_after >= job.deadline:
            return Outcome(JobStatus.FAILED, error)
        return Outcome(JobStatus.NEW, error, run_after, retries)

    def _settle(
        self,
        claim: Claim,
        outcome: Outcome,
        duration: float,
        exc: BaseException | None = None,
        *,
        chain: str | None = None,
    ) -> Claim | None:
        """Store the outcome and report it; with ``chain``, maybe return that queue's next job claimed."""
        job = claim.job
        following = None
        try:
            if chain is None:
                self._backend.settle(claim, outcome)
            else:
                following = self._backend.settle_then_claim(claim, outcome, chain)
        except NeoqError as err:
            self._log_unsettled(job, outcome, err)
            return None
        except Exception:  # a backend raising what it must not
            self._log.exception(
                "neoq: job %s (queue %r, attempt %d) could not be settled as %s",
                job.id,
                job.queue,
                job.attempts,
                outcome.status.value,
            )
            self._put_back(claim)
            return None
        self._report(job, outcome, duration, exc)
        return following

    def _put_back(self, claim: Claim) -> None:
        """After a settle that failed unexpectedly: make the job due again, as a shutdown would.

        Where the failed settle got far enough to end the claim (PostgreSQL), this does nothing
        and ``release`` rolls the claim's transaction back: the job runs again either way.
        """
        job = claim.job
        try:
            self._backend.settle(claim, Outcome(JobStatus.NEW, job.error, self._now(), job.retries))
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

    def _report(self, job: Job, outcome: Outcome, duration: float, exc: BaseException | None) -> None:
        log = self._log
        status = outcome.status
        if status is JobStatus.PROCESSED and not log.isEnabledFor(logging.INFO):
            events = self._events  # the common case: nothing to log; hooks maybe
            if events is not None and events.active:
                events.settled(job, outcome, duration, exc)
            return
        ms = duration * 1000.0
        if status is JobStatus.PROCESSED and not log.isEnabledFor(logging.INFO):
            fields = {}  # the common case: nothing to log, so nothing to build
        else:
            # The same facts as fields of the record, for structured (e.g. JSON) log formatters.
            fields = {"job_id": job.id, "queue": job.queue, "attempt": job.attempts, "duration_ms": round(ms, 1)}
        if status is JobStatus.PROCESSED:
            if fields:
                log.info(
                    "neoq: job %s queue=%r attempt=%d processed in %.1fms",
                    job.id,
                    job.queue,
                    job.attempts,
                    ms,
                    extra={**fields, "outcome": "processed"},
                )
        elif status is JobStatus.NEW and exc is None:
            # Only a shutdown puts an attempt back without a failure: the job runs again later.
            log.warning(
                "neoq: job %s queue=%r attempt=%d interrupted by shutdown after %.1fms; it will run again",
                job.id,
                job.queue,
                job.attempts,
                ms,
                extra={**fields, "outcome": "interrupted"},
            )
        elif status is JobStatus.NEW:
            log.warning(
                "neoq: job %s queue=%r attempt=%d failed in %.1fms, retry %d at %s: %s",
                job.id,
                job.queue,
                job.attempts,
                ms,
                outcome.retries,
                outcome.run_after.isoformat() if outcome.run_after else "now",
                outcome.error,
                extra={**fields, "outcome": "retry", "error": outcome.error},
            )
        elif status is JobStatus.FAILED:
            log.error(
                "neoq: job %s queue=%r attempt=%d failed for good after %.1fms: %s",
                job.id,
                job.queue,
                job.attempts,
                ms,
                outcome.error,
                extra={**fields, "outcome": "failed", "error": outcome.error},
            )
        else:
            log.info(
                "neoq: job %s queue=%r attempt=%d cancelled after %.1fms",
                job.id,
                job.queue,
                job.attempts,
                ms,
                extra={**fields, "outcome": "cancelled"},
            )
        events = self._events
        if events is not None and events.active:
            events.settled(job, outcome, duration, exc)

    def _recover(self, job: Job, exc: BaseException) -> None:
        callback = self._recovery_callback
        if callback is None:
            return
        try:
            callback(job, exc)
        except BaseException:  # even SystemExit: it runs in a claim loop or the watchdog
            self._log.exception("neoq: recovery_callback raised for job %s (queue %r)", job.id, job.queue)

    def _end_from_outside(self, attempt: _Attempt, outcome: Outcome, exc: BaseException | None = None) -> None:
        """Settle an attempt whose handler is still running (it already passed ``take``)."""
        attempt.cancelled.set()
        try:
            self._backend.interrupt(attempt._claim)
        except Exception:  # pragma: no cover - interrupt must not raise
            self._log.exception("neoq: interrupting job %s failed", attempt.job.id)
        self._settle(attempt._claim, outcome, self._monotonic() - attempt._started, exc)

    def _expire(self, attempt: _Attempt) -> None:
        """The watchdog's action at an attempt's end time."""
        if not attempt.take():
            return
        job = attempt.job
        exc: NeoqError
        if attempt._by_deadline:
            exc = DeadlineExceededError("the job's deadline passed while it was running")
        else:
            exc = JobTimeoutError(f"the attempt ran past the handler's timeout of {attempt._handler.timeout:g}s")
        outcome = self._failure(job, attempt._handler, error_text(exc), final=attempt._by_deadline)
        self._end_from_outside(attempt, outcome, exc)

    def _cancel_running(self, job_id: str) -> None:
        """The backend's cancel callback: end a running attempt as CANCELLED."""
        attempt = self._running.get(job_id)
        if attempt is None or not attempt.take():
            return
        self._end_from_outside(attempt, Outcome(JobStatus.CANCELLED, attempt.job.error))

    # -- draining and stopping -----------------------------------------------------------

    def drain(self, handlers: dict[str, Handler], timeout: float | None) -> int:
        """Run ``handlers`` in burst mode until no job of their queues is due; return attempts run."""
        clock = self._clock
        end = math.inf if timeout is None else clock.monotonic() + timeout
        total = 0
        for queue, handler in handlers.items():
            self._backend.prepare_queue(queue, handler)
        try:
            while True:
                runners = [_QueueRunner(queue, handler, burst=True) for queue, handler in handlers.items()]
                for runner in runners:
                    self._launch(runner)
                for runner in runners:
                    remaining = None if end == math.inf else min(LONGEST_WAIT, max(0.0, end - clock.monotonic()))
                    wait_futures(runner.futures, timeout=remaining)
                timed_out = clock.monotonic() >= end
                if timed_out:
                    for runner in runners:
                        runner.stopping.set()
                for runner in runners:
                    assert runner.executor is not None
                    runner.executor.shutdown(wait=True)
                ran = sum(runner.ran for runner in runners)
                total += ran
                if ran == 0 or timed_out:
                    return total
        finally:
            if not self._runners:
                self._watchdog.stop()

    def stop(self, timeout: float, force: threading.Event | None = None) -> None:
        """Stop claiming, wait up to ``timeout`` for running attempts, then end the rest.

        Attempts still running at the end are cancelled (``JobContext.cancelled`` is set) and
        put back as waiting (due now, the attempt counted), so no job is lost.
        """
        with self._lock:
            runners = list(self._runners.values())
            self._runners.clear()
            self._stopped = True
        # 1. Stop claiming: flag every loop, then wake the ones blocked in claim().
        for runner in runners:
            runner.stopping.set()
        for runner in runners:
            self._backend.wakeup(runner.queue, runner.handler.concurrency)
        # 2. Let running attempts finish within the grace time (a second signal cuts it short).
        futures = [future for runner in runners for future in runner.futures]
        end = self._clock.monotonic() + max(0.0, timeout)
        while futures:
            remaining = end - self._clock.monotonic()
            if remaining <= 0 or (force is not None and force.is_set()):
                break
            _, pending = wait_futures(futures, timeout=min(remaining, 0.1 if force is not None else LONGEST_WAIT))
            futures = list(pending)
        # 3. End what is still running: cancelled, and back to waiting for a later run.
        if futures:
            for attempt in list(self._running.values()):
                if attempt.take():
                    job = attempt.job
                    self._end_from_outside(
                        attempt,
                        Outcome(JobStatus.NEW, job.error, self._clock.now(), job.retries),
                    )
            if force is None or not force.is_set():
                wait_futures(futures, timeout=CANCEL_GRACE)
        # 4. Close: threads that returned are joined; a handler that ignores cancellation keeps its thread.
        for runner in runners:
            if runner.executor is not None:
                finished = all(future.done() for future in runner.futures)
                runner.executor.shutdown(wait=finished, cancel_futures=True)
        self._watchdog.stop()
