"""Running a worker process: load the application's client, serve its queues until a signal, exit cleanly.

``neoq worker`` and the framework commands (``flask neoq worker``, ``manage.py neoq_worker``)
all end here, in ``run_worker``.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from typing import Any

from ..app import Neoq
from ..redact import mask_secrets
from ..signals import StopSignals
from ..worker import claim_loop_threads
from .errors import EXIT_OK, CommandError

__all__ = ["LEFTOVER_THREAD_GRACE", "load_client", "run_worker"]

# The name worker log lines have always shown (docs/cli.md), whichever module of the package logs.
logger = logging.getLogger("neoq.cli")

#: How long ``neoq worker`` waits, after a graceful shutdown, for handler threads that ignored
#: cancellation before it exits without them.
LEFTOVER_THREAD_GRACE = 1.0


def load_client(spec: str) -> Neoq:
    """Import ``MODULE:ATTR`` and return the client it names (a ``Neoq``, or a callable returning one).

    The current directory is put first on ``sys.path``, as ``python -m`` does, so an application
    module is found from its project directory. Raises ``CommandError`` saying what went wrong.
    """
    module_name, _, attr = spec.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise CommandError(
                f"cannot import module {module_name!r}: no module named {exc.name!r} "
                "(run neoq from the directory that contains it, or add that directory to PYTHONPATH)"
            ) from None
        raise CommandError(f"importing module {module_name!r} failed{_where(exc)}: {_describe(exc)}") from None
    except (Exception, SystemExit) as exc:
        raise CommandError(f"importing module {module_name!r} failed{_where(exc)}: {_describe(exc)}") from None
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise CommandError(f"module {module_name!r} has no attribute {attr!r}") from None
    if isinstance(target, Neoq):
        return target
    if callable(target):
        try:
            result = target()
        except Exception as exc:
            raise CommandError(f"calling {spec}() failed{_where(exc)}: {_describe(exc)}") from None
        if isinstance(result, Neoq):
            return result
        raise CommandError(f"{spec}() returned a {type(result).__name__}, not a neoq client (neoq.Neoq)")
    raise CommandError(
        f"{spec} is a {type(target).__name__}, not a neoq client (neoq.Neoq) or a function returning one"
    )


def _describe(exc: BaseException) -> str:
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _where(exc: BaseException) -> str:
    if isinstance(exc, SyntaxError):
        return ""  # its message already names the file and line
    here = os.path.abspath(__file__)
    # The innermost frame that is neither importlib nor this module is where the application failed.
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if "importlib" not in frame.filename and os.path.abspath(frame.filename) != here:
            return f" at {frame.filename}:{frame.lineno}"
    return ""


def run_worker(nq: Neoq, queues: Sequence[str] | None = None, *, name: str = "neoq") -> int:
    """Run ``nq``'s handlers (of ``queues``, default all) as a worker process would, until a signal.

    What ``neoq worker`` does once it has the client, for other launchers (framework commands) to
    reuse: the first SIGTERM/SIGINT drains gracefully and this returns 0; a second one exits the
    process at once with ``128 + signal``; handler threads that ignored cancellation do not keep
    the process alive after the drain. ``name`` names the worker in log lines. Raises
    ``CommandError`` when ``nq`` is shut down, has no handler for a queue asked for, or runs on
    the private memory store ``neoq.new()`` falls back to when no URL is given and NEOQ_URL is
    unset (``memory://`` given explicitly is accepted).
    """
    if nq.closed:
        raise CommandError(f"the client {name} was already shut down")
    if nq._implicit_memory:
        # Jobs enqueued by any other process (a web app) would never reach this worker.
        raise CommandError(
            f"{name} has no backend URL (none given, NEOQ_URL unset), so it would run on a private in-memory "
            "store that no other process can reach; set NEOQ_URL (or --url, or the app's NEOQ_URL setting) to "
            "the database your application enqueues into, or give memory:// explicitly"
        )
    served = sorted(nq.handlers) if queues is None else sorted(set(queues))
    if not served:
        raise CommandError(f'{name} has no handlers: register them with @nq.handler("queue") before running a worker')
    unknown = sorted(set(served) - set(nq.handlers))
    if unknown:
        raise CommandError(
            f"{name} has no handler for queue(s) {', '.join(unknown)}; it has: {', '.join(sorted(nq.handlers))}"
        )
    # The process is neoq's: a second signal exits it at once (neoq.signals).
    with StopSignals(nq.stop, log=logger, grace=nq.shutdown_timeout, exit_on_second=True):
        logger.info(
            "neoq worker %s (pid %d) on %s: serving %s; stop with SIGTERM or SIGINT",
            name,
            os.getpid(),
            mask_secrets(repr(nq.backend)),
            ", ".join(served),
        )
        nq.run(served, install_signal_handlers=False)
    logger.info("neoq worker %s (pid %d) stopped", name, os.getpid())
    _exit_without_abandoned_threads()
    return EXIT_OK


def _exit_without_abandoned_threads() -> None:
    """Exit at once if handler threads that ignored cancellation are still running.

    Its job already went back to waiting and runs again later. The threads are daemon threads,
    so they would not keep the process alive; exiting at once also skips the interpreter's
    clean-up, which such a thread may still be using. Only the main thread (a real ``neoq
    worker`` process) exits; embedded callers just return.
    """
    end = time.monotonic() + LEFTOVER_THREAD_GRACE
    for thread in _handler_threads():
        thread.join(max(0.0, end - time.monotonic()))
    stuck = [thread.name for thread in _handler_threads()]
    if stuck and threading.current_thread() is threading.main_thread():
        logger.warning(
            "neoq: %d handler thread(s) ignored cancellation (%s); exiting without them", len(stuck), ", ".join(stuck)
        )
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_OK)


def _handler_threads() -> list[threading.Thread]:
    return [thread for thread in claim_loop_threads() if thread is not threading.current_thread()]
