"""``LoopExecutor``: the thread pool of one queue's claim loops, whose threads do not hold the process at exit."""

from __future__ import annotations

import inspect
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import thread as _futures_thread
from typing import Any

__all__ = ["LoopExecutor", "claim_loop_threads"]


def _known_worker_signature() -> bool:
    """Whether ``concurrent.futures.thread._worker`` takes the arguments ``LoopExecutor`` gives it."""
    worker = getattr(_futures_thread, "_worker", None)
    try:
        names = list(inspect.signature(worker).parameters) if worker is not None else []
    except (TypeError, ValueError):  # pragma: no cover - not a Python function
        return False
    return names == ["executor_reference", "work_queue", "initializer", "initargs"]


#: Whether ``LoopExecutor`` can start its threads as daemon threads (CPython 3.10 to 3.13).
_DAEMON_THREADS = _known_worker_signature()

#: Every claim-loop thread of this process (weakly held), for ``claim_loop_threads``.
_LOOP_THREADS: weakref.WeakSet[threading.Thread] = weakref.WeakSet()


def claim_loop_threads() -> list[threading.Thread]:
    """Return the live threads that run claim loops (and so handlers), of every client of this process.

    After ``shutdown()`` returns, the ones left run handlers that ignored cancellation.
    """
    return [thread for thread in list(_LOOP_THREADS) if thread.is_alive()]


class LoopExecutor(ThreadPoolExecutor):
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
