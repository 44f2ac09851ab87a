"""The arguments of ``neoq``: the parser of every command, and the types that check its values."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import datetime
from typing import Any

from .. import __version__
from ..defaults import MAX_PRIORITY, MIN_PRIORITY
from ..job import JobStatus
from . import commands
from .dashboard import dashboard as dashboard_command
from .dashboard import port as _port

__all__ = ["build_parser"]


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


def _priority(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise argparse.ArgumentTypeError(f"{text!r} is outside {MIN_PRIORITY}..{MAX_PRIORITY}")
    return value


def _app_spec(text: str) -> str:
    module, sep, attr = text.partition(":")
    if not sep or not module or not attr:
        raise argparse.ArgumentTypeError(f"{text!r} is not MODULE:ATTR, e.g. myapp.jobs:nq")
    return text


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``neoq`` command; each command's ``func`` is in ``commands``."""
    parser = argparse.ArgumentParser(
        prog="neoq",
        description="Run neoq workers and inspect and manage their jobs.",
        epilog="The backend URL comes from --url, else NEOQ_URL. Passwords are never printed.",
    )
    parser.add_argument("--url", help="backend URL, e.g. postgresql://user@host/db (default: $NEOQ_URL)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")
    parser.add_argument("--traceback", action="store_true", help="on an error, print the traceback too")
    parser.add_argument("--version", action="version", version=f"neoq {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    worker = _command(
        subparsers,
        "worker",
        commands.worker,
        "run the handlers registered on a client until SIGTERM/SIGINT",
        (
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

    enqueue = _command(
        subparsers,
        "enqueue",
        commands.enqueue,
        "enqueue one job and print its id",
        "Enqueue one job with a JSON object as payload and print the new job's id.",
    )
    enqueue.add_argument("queue", metavar="QUEUE")
    enqueue.add_argument("payload", metavar="JSON", help="the payload, a JSON object: '{\"to\": 7}'")
    enqueue.add_argument("--run-after", type=_aware_datetime, metavar="ISO", help="not before this time")
    enqueue.add_argument("--deadline", type=_aware_datetime, metavar="ISO", help="must finish by this time")
    enqueue.add_argument("--max-retries", type=_non_negative_int, metavar="N", help="retries after a failure")
    enqueue.add_argument(
        "--priority", type=_priority, default=0, metavar="N", help="-100..100, higher runs first (default 0)"
    )

    _command(
        subparsers,
        "migrate",
        commands.migrate,
        "create or upgrade the schema",
        "Create or upgrade the backend's schema (PostgreSQL); safe while workers run.",
    )

    jobs = subparsers.add_parser(
        "jobs",
        help="list, show, retry or cancel jobs",
        description="Inspect and manage jobs in a shared backend (PostgreSQL; memory:// is private to each process).",
    )
    actions = jobs.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = _command(actions, "list", commands.jobs_list, "list jobs, newest first")
    listing.add_argument("--queue", metavar="Q", help="only jobs of this queue")
    listing.add_argument("--status", choices=[status.value for status in JobStatus], help="only jobs in this status")
    listing.add_argument("--limit", type=_non_negative_int, default=100, metavar="N", help="at most N (default 100)")
    for name, func, text in (
        ("show", commands.jobs_show, "show one job"),
        ("retry", commands.jobs_retry, "run a failed, cancelled or processed job again"),
        ("cancel", commands.jobs_cancel, "cancel a waiting or running job"),
    ):
        action = _command(actions, name, func, text, text[0].upper() + text[1:] + ".")
        action.add_argument("job_id", metavar="ID")

    queues = subparsers.add_parser(
        "queues",
        help="list queues, pause or resume one",
        description=(
            "List the queues of a shared backend and which are paused; pause a queue (no process starts its "
            "jobs until it is resumed; running ones finish) or resume it."
        ),
    )
    verbs = queues.add_subparsers(dest="action", metavar="ACTION", required=True)
    _command(verbs, "list", commands.queues_list, "every queue with jobs or paused, and whether it is paused")
    for name, func, text in (
        ("pause", commands.queues_pause, "pause a queue in every process"),
        ("resume", commands.queues_resume, "resume a paused queue"),
    ):
        verb = _command(verbs, name, func, text, text[0].upper() + text[1:] + ".")
        verb.add_argument("queue", metavar="QUEUE")

    _command(
        subparsers,
        "stats",
        commands.stats,
        "count jobs per queue and status",
        "Count jobs per queue and status in a shared backend (PostgreSQL; memory:// is private to each process).",
    )
    board = _command(
        subparsers,
        "dashboard",
        dashboard_command,
        "serve the web dashboard (pip install 'neoq[dashboard]')",
        (
            "Serve the web dashboard of a shared store until SIGINT/SIGTERM: queues, jobs, workers, and retry "
            "and cancel unless --read-only. It listens on 127.0.0.1; another --host needs a password in "
            "NEOQ_DASHBOARD_PASSWORD (HTTP Basic authentication), else it refuses to start."
        ),
    )
    board.add_argument("--url", dest="dashboard_url", metavar="URL", help="backend URL (as neoq --url)")
    board.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    board.add_argument("--port", type=_port, default=8642, help="port to listen on (default 8642; 0: any free)")
    board.add_argument("--read-only", action="store_true", help="show everything, change nothing")
    return parser


def _command(
    subparsers: Any, name: str, func: Callable[[argparse.Namespace], int], text: str, description: str | None = None
) -> argparse.ArgumentParser:
    """Add the command ``name``, run by ``func``, with ``text`` as its line in the help."""
    command: argparse.ArgumentParser = subparsers.add_parser(name, help=text, description=description)
    command.set_defaults(func=func)
    return command
