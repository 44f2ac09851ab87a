"""``Worker``: the claim loops of every started queue, and draining and stopping them.

Per started queue, a ``LoopExecutor`` with ``concurrency`` threads; each thread is a claim loop
(claim a due job, hand it to the ``AttemptRunner``, which runs and settles it) so a job costs no
executor hand-off. A claim loop outlives any failure: ``_serve`` starts it again if it ever ends
by an exception.
"""

from __future__ import annotations

import logging
import math
import threading
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from typing import Any

from ..backends.base import Backend, Claim
from ..backends.flowbase import check_handler
from ..clock import Clock
from ..errors import NeoqError
from ..handler import Handler
from .executor import LoopExecutor
from .presence import Presence
from .runner import AttemptRunner, RecoveryCallback
from .watchdog import LONGEST_WAIT

__all__ = ["QueueRunner", "Worker"]

#: How long one claim call blocks before the loop looks at its stop flag again. Shutdown wakes
#: blocked claims through ``Backend.wakeup``, so this only bounds a lost wake-up.
CLAIM_WAIT = 2.0

#: After a forced shutdown sets ``cancelled``, how long to wait for cooperative handlers to return.
CANCEL_GRACE = 1.0

#: The longest pause between claims after a backend error (they double from 0.05 s).
MAX_ERROR_PAUSE = 5.0


class QueueRunner:
    """The claim loops of one queue."""

    def __init__(self, queue: str, handler: Handler, burst: bool) -> None:
        self.queue = queue
        self.handler = handler
        self.burst = burst
        self.stopping = threading.Event()
        self.executor: LoopExecutor | None = None
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
        self._lock = threading.Lock()
        self._runners: dict[str, QueueRunner] = {}
        self._attempts = AttemptRunner(backend, clock, log, recovery_callback, events)
        self._running = self._attempts.running
        self._watchdog = self._attempts.watchdog
        #: This process in the store's worker registry, where the backend keeps one.
        self.presence = Presence(backend, self._running, clock, log)
        self._stopped = False

    # -- starting ------------------------------------------------------------------------

    def start(self, queue: str, handler: Handler) -> None:
        """Start ``concurrency`` claim loops for ``queue`` in background threads."""
        # Before anything starts: a mode (or limit) the backend cannot serve fails here, with nothing running.
        self._prepare(queue, handler)
        runner = QueueRunner(queue, handler, burst=False)
        with self._lock:
            self._runners[queue] = runner
            self._stopped = False
        self._launch(runner)
        self.presence.add(queue, handler.concurrency)

    def _launch(self, runner: QueueRunner) -> None:
        concurrency = runner.handler.concurrency
        self._watchdog.note_timeout(runner.handler.timeout)
        runner.executor = LoopExecutor(max_workers=concurrency, thread_name_prefix=f"neoq-{runner.queue[:40]}")
        runner.futures = [runner.executor.submit(self._serve, runner) for _ in range(concurrency)]

    def _prepare(self, queue: str, handler: Handler) -> None:
        backend = self._backend
        if handler.global_limit is not None or handler.rate_limit is not None:
            check_handler(backend.capabilities, type(backend).__name__, queue, handler)
        backend.prepare_queue(queue, handler)

    def is_started(self, queue: str) -> bool:
        """Return True if ``queue`` has running claim loops."""
        return queue in self._runners

    # -- the claim loop ------------------------------------------------------------------

    def _serve(self, runner: QueueRunner) -> None:
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

    def _loop(self, runner: QueueRunner) -> None:
        backend = self._backend
        run = self._attempts.run
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
            # ``run`` looks at ``stopping`` when it settles: a loop told to stop claims no next job.
            claim = run(runner.handler, claim, queue, stopping)

    # -- draining and stopping -----------------------------------------------------------

    def drain(self, handlers: dict[str, Handler], timeout: float | None) -> int:
        """Run ``handlers`` in burst mode until no job of their queues is due; return attempts run."""
        clock = self._clock
        end = math.inf if timeout is None else clock.monotonic() + timeout
        total = 0
        for queue, handler in handlers.items():
            self._prepare(queue, handler)
        try:
            while True:
                runners = [QueueRunner(queue, handler, burst=True) for queue, handler in handlers.items()]
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
                self._attempts.progress.stop()

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
            self._attempts.put_back_running()
            if force is None or not force.is_set():
                wait_futures(futures, timeout=CANCEL_GRACE)
        # 4. Close: threads that returned are joined; a handler that ignores cancellation keeps its thread.
        for runner in runners:
            if runner.executor is not None:
                finished = all(future.done() for future in runner.futures)
                runner.executor.shutdown(wait=finished, cancel_futures=True)
        self._watchdog.stop()
        self._attempts.progress.stop()
        # 5. Leave the worker registry: this process runs nothing more (it stayed listed while it drained).
        self.presence.stop()
