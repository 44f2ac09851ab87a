"""The ``neoq`` command: run workers, enqueue jobs, migrate the schema, inspect and manage jobs.

Usage (``neoq --help``, ``neoq COMMAND --help``)::

    neoq [--url URL] [--json] COMMAND ...
    neoq worker MODULE:ATTR [--queue Q ...]
    neoq enqueue QUEUE JSON [--run-after ISO] [--deadline ISO] [--max-retries N]
    neoq migrate
    neoq jobs list [--queue Q] [--status S] [--limit N] | show ID | retry ID | cancel ID
    neoq stats

Exit status: 0 on success; 2 for a usage error (with the usage text); 1 for any other error,
reported as one line on stderr, never a traceback (``--traceback`` shows it). ``neoq worker``
exits 0 after a graceful shutdown, and ``128 + signal`` (130 for SIGINT, 143 for SIGTERM) when
a second signal stops it at once.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from datetime import datetime
from enum import Enum
from types import FrameType
from typing import Any

from . import __version__
from .app import Neoq, new
from .backends.base import Backend
from .backends.capabilities import SHARED
from .backends.registry import backend_from_url
from .errors import NeoqError
from .job import Job, JobStatus
from .redact import mask_secrets, redact_url, url_scheme
from .worker import claim_loop_threads

__all__ = ["CommandError", "build_parser", "load_client", "main", "mask_secrets", "run_worker"]

logger = logging.getLogger(__name__)

#: Exit status of a command that succeeded.
EXIT_OK = 0
#: Exit status of any error but a usage error.
EXIT_ERROR = 1
#: Exit status of a usage error (argparse's).
EXIT_USAGE = 2

#: How long ``neoq worker`` waits, after a graceful shutdown, for handler threads that ignored
#: cancellation before it exits without them.
LEFTOVER_THREAD_GRACE = 1.0


def _private_note(shown: str) -> str:
    """Why an inspecting command refuses a store without the ``"shared"`` capability."""
    return (
        f"{shown} is private to each process, so there is nothing to see from here; "
        "give --url or NEOQ_URL with the store your workers use (e.g. their PostgreSQL database)"
    )


_MEMORY_NOTE = _private_note("memory://")


class CommandError(Exception):
    """A failure to report as one line on stderr, exiting 1."""


def _one_line(text: str) -> str:
    return " ".join(mask_secrets(text).split())


# -- parsing ---------------------------------------------------------------------------------


def _aware_datetime(text: str) -> datetime:
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"  # fromisoformat() accepts "Z" only from Python 3.11
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO-8601 datetime (e.g. 2030-01-31T09:00:00+00:00 or 2030-01-31T09:00Z)"
        ) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no timezone; add one, e.g. {text}+00:00 or {text}Z")
    return parsed


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def _app_spec(text: str) -> str:
    module, sep, attr = text.partition(":")
    if not sep or not module or not attr:
        raise argparse.ArgumentTypeError(f"{text!r} is not MODULE:ATTR, e.g. myapp.jobs:nq")
    return text


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``neoq`` command."""
    parser = argparse.ArgumentParser(
        prog="neoq",
        description="Run neoq workers and inspect and manage their jobs.",
        epilog="The backend URL comes from --url, else NEOQ_URL. Passwords are never printed.",
    )
    parser.add_argument("--url", help="backend URL, e.g. postgresql://user@host/db (default: $NEOQ_URL)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")
    parser.add_argument("--traceback", action="store_true", help="on an error, print the traceback too")
    parser.add_argument("--version", action="version", version=f"neoq {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    worker = commands.add_parser(
        "worker",
        help="run the handlers registered on a client until SIGTERM/SIGINT",
        description=(
            "Import MODULE and run the handlers registered on the neoq client MODULE:ATTR (a neoq.Neoq, "
            "or a function returning one) until SIGTERM or SIGINT. The first signal stops claiming and lets "
            "running jobs finish within the client's shutdown_timeout (exit 0); a second one exits at once "
            "(exit 128+signal). --url is exported as NEOQ_URL before MODULE is imported, so a client made with "
            "neoq.new() and no URL uses it."
        ),
    )
    worker.add_argument("app", metavar="MODULE:ATTR", type=_app_spec, help="e.g. myapp.jobs:nq")
    worker.add_argument(
        "--queue", "-q", action="append", metavar="Q", help="run only this queue's handler (repeatable)"
    )
    worker.add_argument(
        "--log-level",
        default=None,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="logging level when neoq sets logging up (default INFO); --json logs one JSON object a line",
    )
    worker.set_defaults(func=_cmd_worker)

    enqueue = commands.add_parser(
        "enqueue",
        help="enqueue one job and print its id",
        description="Enqueue one job with a JSON object as payload and print the new job's id.",
    )
    enqueue.add_argument("queue", metavar="QUEUE")
    enqueue.add_argument("payload", metavar="JSON", help="the payload, a JSON object: '{\"to\": 7}'")
    enqueue.add_argument("--run-after", type=_aware_datetime, metavar="ISO", help="not before this time")
    enqueue.add_argument("--deadline", type=_aware_datetime, metavar="ISO", help="must finish by this time")
    enqueue.add_argument("--max-retries", type=_non_negative_int, metavar="N", help="retries after a failure")
    enqueue.set_defaults(func=_cmd_enqueue)

    migrate = commands.add_parser(
        "migrate",
        help="create or upgrade the schema",
        description="Create or upgrade the backend's schema (PostgreSQL); safe while workers run.",
    )
    migrate.set_defaults(func=_cmd_migrate)

    jobs = commands.add_parser(
        "jobs",
        help="list, show, retry or cancel jobs",
        description="Inspect and manage jobs in a shared backend (PostgreSQL; memory:// is private to each process).",
    )
    actions = jobs.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="list jobs, newest first")
    listing.add_argument("--queue", metavar="Q", help="only jobs of this queue")
    listing.add_argument("--status", choices=[status.value for status in JobStatus], help="only jobs in this status")
    listing.add_argument("--limit", type=_non_negative_int, default=100, metavar="N", help="at most N (default 100)")
    listing.set_defaults(func=_cmd_jobs_list)
    for name, func, text in (
        ("show", _cmd_jobs_show, "show one job"),
        ("retry", _cmd_jobs_retry, "run a failed, cancelled or processed job again"),
        ("cancel", _cmd_jobs_cancel, "cancel a waiting or running job"),
    ):
        action = actions.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        action.add_argument("job_id", metavar="ID")
        action.set_defaults(func=func)

    stats = commands.add_parser(
        "stats",
        help="count jobs per queue and status",
        description="Count jobs per queue and status in a shared backend (PostgreSQL; memory:// is private to each "
        "process).",
    )
    stats.set_defaults(func=_cmd_stats)
    return parser


# -- the entry point ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``neoq`` command with ``argv`` (default ``sys.argv[1:]``); return the exit status.

    A usage error raises ``SystemExit(2)`` after printing the usage text, as argparse does.
    """
    args = build_parser().parse_args(argv)
    try:
        status: int = args.func(args)
        return status
    except KeyboardInterrupt:
        print("neoq: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except BrokenPipeError:
        # The reader went away (neoq jobs list | head): not an error worth a message.
        _silence_stdout()
        return EXIT_OK
    except (CommandError, NeoqError) as exc:
        return _fail(args, str(exc) or type(exc).__name__)
    except Exception as exc:
        return _fail(args, f"unexpected {type(exc).__name__}: {exc}")


def _fail(args: argparse.Namespace, message: str) -> int:
    if getattr(args, "traceback", False):
        print(mask_secrets(traceback.format_exc()), file=sys.stderr, end="")
    print(f"neoq: error: {_one_line(message)}", file=sys.stderr)
    return EXIT_ERROR


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _url(args: argparse.Namespace) -> str | None:
    url: str | None = args.url or os.environ.get("NEOQ_URL") or None
    return url


@contextmanager
def _client(args: argparse.Namespace, *, shared: bool) -> Iterator[Neoq]:
    """Open a client on the URL of ``args``; ``shared`` commands refuse a store private to one process.

    ``shared`` commands (``jobs``, ``stats``) look at a store that workers use (capability
    ``"shared"``): they never create or migrate its schema (``neoq migrate`` does), and say so when
    it is missing or out of date.
    """
    url = _url(args)
    if not shared:
        nq = new(url or "memory://")
    elif url is None:
        raise CommandError(f"no backend given: {_MEMORY_NOTE}")
    else:
        backend = backend_from_url(url)
        if SHARED not in backend.capabilities:
            raise CommandError(_private_note(redact_url(url)))
        _require_schema(backend)
        nq = new(backend=backend)
    try:
        yield nq
    finally:
        nq.shutdown()


def _require_schema(backend: Backend) -> None:
    """Raise ``CommandError`` when the store of ``backend`` has no neoq schema, or an older one."""
    missing = backend.missing_migrations()
    if not missing:
        return
    if missing[0] == 1:
        raise CommandError(
            "the database has no neoq schema: create it with `neoq migrate` (same --url), then try again"
        )
    raise CommandError(
        f"the neoq schema of the database is out of date (it lacks migrations {_versions(missing)}): "
        "upgrade it with `neoq migrate` (same --url), then try again"
    )


def _versions(versions: Sequence[int]) -> str:
    """``[1, 2, 3, 5]`` as ``"1-3, 5"``."""
    runs: list[list[int]] = []
    for version in versions:
        if runs and version == runs[-1][-1] + 1:
            runs[-1].append(version)
        else:
            runs.append([version])
    return ", ".join(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs)


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=False, default=str))
    else:
        print(text)


# -- commands ----------------------------------------------------------------------------------


def _cmd_enqueue(args: argparse.Namespace) -> int:
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as exc:
        raise CommandError(f"the payload is not valid JSON ({exc}); give an object like '{{\"to\": 7}}'") from None
    if not isinstance(payload, dict):
        raise CommandError(f"the payload must be a JSON object like '{{\"to\": 7}}', not a JSON {_json_kind(payload)}")
    job = Job(
        queue=args.queue,
        payload=payload,
        run_after=args.run_after,
        deadline=args.deadline,
        max_retries=args.max_retries,
    )
    with _client(args, shared=False) as nq:
        if SHARED not in nq.backend.capabilities:
            url = _url(args)
            why = "no --url or NEOQ_URL: " if url is None else ""
            print(
                f"neoq: warning: {why}the job went to a private {redact_url(url or 'memory://')} store "
                "and is gone when this command exits",
                file=sys.stderr,
            )
        job_id = nq.enqueue(job)
    _emit(args, {"id": job_id, "queue": job.queue}, job_id)
    return EXIT_OK


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


def _cmd_migrate(args: argparse.Namespace) -> int:
    url = _url(args) or "memory://"
    shown = redact_url(url)
    # Backend.migrate() works on a backend that is not open, and leaves nothing open.
    applied = backend_from_url(url).migrate()
    if applied is None:
        text = f"{shown}: {url_scheme(url)}:// keeps no schema; nothing to migrate"
        _emit(args, {"url": shown, "migrated": False}, text)
        return EXIT_OK
    if applied:
        many = "s" if len(applied) > 1 else ""
        text = f"{shown}: applied migration{many} {_versions(applied)}; the schema is up to date"
    else:
        text = f"{shown}: the schema was already up to date; nothing applied"
    _emit(args, {"url": shown, "migrated": True, "applied": applied}, text)
    return EXIT_OK


def _cmd_jobs_list(args: argparse.Namespace) -> int:
    with _client(args, shared=True) as nq:
        jobs = nq.list_jobs(queue=args.queue, status=args.status, limit=args.limit)
    rows = [
        [
            job.id or "",
            job.queue,
            job.status.value,
            str(job.attempts),
            _when(job.created_at),
            _when(job.run_after),
            _truncate(job.error or "", 60),
        ]
        for job in jobs
    ]
    headers = ["ID", "QUEUE", "STATUS", "ATTEMPTS", "CREATED", "RUN AFTER", "ERROR"]
    _emit(args, [job_to_dict(job) for job in jobs], format_table(headers, rows) if rows else "no jobs")
    return EXIT_OK


def _cmd_jobs_show(args: argparse.Namespace) -> int:
    with _client(args, shared=True) as nq:
        job = nq.get_job(args.job_id)
    if job is None:
        raise CommandError(f"no job has id {args.job_id!r}")
    data = job_to_dict(job)
    lines = [[key, "-" if value is None else str(value)] for key, value in data.items() if key != "payload"]
    text = format_table(None, lines) + "\npayload\n" + json.dumps(job.payload, indent=2, ensure_ascii=False)
    _emit(args, data, text)
    return EXIT_OK


#: The statuses of a job that has not finished, and how the CLI says them.
_WAITING_OR_RUNNING = {JobStatus.NEW: "waiting", JobStatus.RUNNING: "running"}
_NOT_FINISHED = frozenset(_WAITING_OR_RUNNING)


def _cmd_jobs_retry(args: argparse.Namespace) -> int:
    with _client(args, shared=True) as nq:
        before = nq.get_job(args.job_id)
        nq.retry_job(args.job_id)
        job = nq.get_job(args.job_id)
    status = job.status.value if job is not None else JobStatus.NEW.value
    if before is not None and before.status in _NOT_FINISHED:
        text = f"job {args.job_id} is already {_WAITING_OR_RUNNING[before.status]}; nothing changed"
    else:
        text = f"job {args.job_id} will run again"
    _emit(args, {"id": args.job_id, "status": status}, text)
    return EXIT_OK


def _cmd_jobs_cancel(args: argparse.Namespace) -> int:
    with _client(args, shared=True) as nq:
        before = nq.get_job(args.job_id)
        nq.cancel_job(args.job_id)
        job = nq.get_job(args.job_id)
    status = job.status if job is not None else JobStatus.CANCELLED
    if before is not None and before.status not in _NOT_FINISHED:
        text = f"job {args.job_id} had already finished ({before.status.value}); nothing changed"
    elif status is JobStatus.CANCELLED:
        text = f"job {args.job_id} cancelled"
    else:
        text = f"job {args.job_id} is running: its worker was asked to stop it, and it will end cancelled"
    _emit(args, {"id": args.job_id, "status": status.value}, text)
    return EXIT_OK


def _cmd_stats(args: argparse.Namespace) -> int:
    with _client(args, shared=True) as nq:
        stats = dict(sorted(nq.stats().items()))
    columns = [status.value for status in JobStatus]
    rows = [[queue] + [str(counts.get(column, 0)) for column in columns] for queue, counts in stats.items()]
    if len(rows) > 1:
        rows.append(["(all)"] + [str(sum(c.get(column, 0) for c in stats.values())) for column in columns])
    headers = ["QUEUE"] + [column.upper() for column in columns]
    table = format_table(headers, rows, right=range(1, len(headers))) if rows else "no jobs"
    _emit(args, stats, table)
    return EXIT_OK


# -- neoq worker -------------------------------------------------------------------------------


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


def _cmd_worker(args: argparse.Namespace) -> int:
    if args.url:
        # Read by neoq.new() when the application's module creates its client without a URL.
        os.environ["NEOQ_URL"] = args.url
    nq = load_client(args.app)
    _setup_logging(args.json, args.log_level)
    return run_worker(nq, args.queue, name=args.app)


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
    signals = _install_signal_handlers(nq)
    logger.info(
        "neoq worker %s (pid %d) on %s: serving %s; stop with SIGTERM or SIGINT",
        name,
        os.getpid(),
        mask_secrets(repr(nq.backend)),
        ", ".join(served),
    )
    try:
        nq.run(served, install_signal_handlers=False)
    finally:
        for number, previous in signals.items():
            signal.signal(number, previous)
    logger.info("neoq worker %s (pid %d) stopped", name, os.getpid())
    _exit_without_abandoned_threads()
    return EXIT_OK


def _install_signal_handlers(nq: Neoq) -> dict[int, Any]:
    """First SIGTERM/SIGINT: graceful shutdown. Second: exit at once with 128 + signal."""
    if threading.current_thread() is not threading.main_thread():
        return {}  # embedded (e.g. in a test thread): the caller stops the client itself
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if received:
            # Exit now: a claim's transaction dies with the process, so its job runs again later.
            os.write(2, f"neoq: second signal {signum}: exiting at once\n".encode())
            os._exit(128 + signum)
        received.append(signum)
        logger.warning(
            "neoq: signal %d: finishing running jobs (up to %gs); send it again to exit at once",
            signum,
            nq.shutdown_timeout,
        )
        nq.stop()

    previous: dict[int, Any] = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.signal(signum, on_signal)
    return previous


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


class JsonFormatter(logging.Formatter):
    """Formats each record as one JSON object a line, with the job fields neoq attaches."""

    _FIELDS = ("job_id", "queue", "attempt", "duration_ms", "outcome", "error")

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as a JSON line."""
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in self._FIELDS:
            if name in record.__dict__:
                data[name] = record.__dict__[name]
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def _setup_logging(as_json: bool, level: str | None) -> None:
    root = logging.getLogger()
    if root.handlers:
        # The application set logging up itself; only an explicit --log-level changes it.
        if level is not None:
            root.setLevel(level)
        return
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(level or logging.INFO)


# -- formatting ------------------------------------------------------------------------------------


#: The order of a job's fields in ``jobs show`` and its JSON; fields not named here follow.
_JOB_FIELDS = (
    "id", "queue", "status", "payload", "attempts", "retries", "max_retries", "error",
    "created_at", "run_after", "ran_at", "finished_at", "deadline", "fingerprint",
)  # fmt: skip


def job_to_dict(job: Job) -> dict[str, Any]:
    """Return ``job`` as a JSON-ready dict: every field, datetimes in ISO-8601, the status's value."""
    names = [name for name in _JOB_FIELDS if hasattr(job, name)]
    names += [field.name for field in fields(job) if field.name not in names]
    data: dict[str, Any] = {}
    for name in names:
        value = getattr(job, name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, Enum):
            value = value.value
        elif name == "payload":
            value = dict(value)
        data[name] = value
    return data


def format_table(headers: Sequence[str] | None, rows: Sequence[Sequence[str]], right: Any = ()) -> str:
    """Return ``rows`` as aligned columns (two spaces apart); ``right`` are column indexes aligned right."""
    table = [list(headers)] if headers else []
    table.extend(list(row) for row in rows)
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    aligned = set(right)
    lines = []
    for row in table:
        cells = [
            cell.rjust(width) if index in aligned else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _when(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _truncate(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
