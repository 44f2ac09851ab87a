"""What the ``neoq`` command prints: text or ``--json``, tables, jobs, error lines and log lines."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import fields
from datetime import datetime
from enum import Enum
from typing import Any

from ..job import Job
from ..redact import mask_secrets

__all__ = ["JsonFormatter", "emit", "format_table", "job_to_dict", "one_line", "setup_logging", "versions"]


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    """Print ``data`` as JSON with ``--json``, else ``text``."""
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=False, default=str))
    else:
        print(text)


def one_line(text: str) -> str:
    """``text`` on one line, its secrets masked: what an error line shows."""
    return " ".join(mask_secrets(text).split())


def versions(numbers: Sequence[int]) -> str:
    """``[1, 2, 3, 5]`` as ``"1-3, 5"``."""
    runs: list[list[int]] = []
    for number in numbers:
        if runs and number == runs[-1][-1] + 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    return ", ".join(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs)


#: The order of a job's fields in ``jobs show`` and its JSON; fields not named here follow.
_JOB_FIELDS = (
    "id", "queue", "status", "payload", "priority", "attempts", "retries", "max_retries", "error",
    "created_at", "run_after", "ran_at", "finished_at", "deadline", "fingerprint",
    "progress", "progress_note", "result", "traceback",
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


def when(value: datetime | None) -> str:
    """A table cell for a time: to the second, or empty."""
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def truncate(text: str, width: int) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


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


def setup_logging(as_json: bool, level: str | None) -> None:
    """Log to stderr (one JSON object a line with ``--json``) unless the application set logging up."""
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
