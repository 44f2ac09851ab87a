"""What SIGTERM and SIGINT do to a process that runs a client: one policy, for ``Neoq.run()`` and ``neoq worker``.

The first signal asks for a graceful shutdown: no new claims, and running attempts finish within
the client's grace time. A second one escalates, in one of two ways, chosen by who owns the process:

- ``Neoq.run()`` (the application owns the process): the shutdown stops waiting for running
  attempts (the grace time is cut short), and ``run()`` returns as usual;
- ``neoq worker`` (``exit_on_second``; neoq owns the process): the process exits at once with
  ``128 + signal``. A claim's transaction dies with the process, so its job runs again later.

Handlers are installed only in the main thread (Python runs signal handlers there; an embedded
caller, such as a test thread, stops the client itself), and the ones they replaced are put back
when the ``with`` block ends.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

__all__ = ["SIGNAL_CHECK_INTERVAL", "STOP_SIGNALS", "StopSignals", "wait_for_stop"]

#: The signals that stop a client: SIGTERM (process managers) and SIGINT (Ctrl-C).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

#: How often a thread blocked until a stop lets Python handle pending signals, in seconds.
SIGNAL_CHECK_INTERVAL = 0.2


class StopSignals:
    """Route SIGTERM and SIGINT to ``stop`` while the ``with`` block runs, by the policy above.

    ``stop`` is called on every signal (a client's ``stop()``: a second call cuts the grace time
    short). ``grace`` is the grace time the first signal's log line announces. ``exit_on_second``
    makes a second signal exit the process at once instead.
    """

    def __init__(self, stop: Callable[[], None], *, log: logging.Logger, grace: float, exit_on_second: bool) -> None:
        self._stop = stop
        self._log = log
        self._grace = grace
        self._exit_on_second = exit_on_second
        self._received: list[int] = []
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        second = bool(self._received)
        self._received.append(signum)
        if second and self._exit_on_second:
            # Straight to stderr's descriptor: os._exit() flushes no buffer and shuts no log handler down.
            os.write(2, f"neoq: second signal {signum}: exiting at once\n".encode())
            os._exit(128 + signum)
        if second:
            self._log.warning("neoq: second signal %d: stopping at once", signum)
        elif self._exit_on_second:
            self._log.warning(
                "neoq: signal %d: finishing running jobs (up to %gs); send it again to exit at once",
                signum,
                self._grace,
            )
        else:
            self._log.info("neoq: signal %d: shutting down gracefully", signum)
        self._stop()


def wait_for_stop(stopped: threading.Event) -> None:
    """Block until ``stopped`` is set, waking now and then so that signal handlers run.

    A signal delivered to another thread does not interrupt this thread's wait, and Python runs
    signal handlers only when the main thread runs.
    """
    while not stopped.wait(SIGNAL_CHECK_INTERVAL):
        pass
