"""What each page shows, read from the client's backend: plain data for the templates and the JSON API.

Nothing here knows HTTP beyond the query arguments it parses; ``app`` renders and routes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, cast

from ..backends.search import JobQuery, JobSearch, WorkerInfo, WorkerRegistry
from ..errors import NeoqError
from ..job import Job, JobStatus

if TYPE_CHECKING:
    from ..app import Neoq

__all__ = ["RANGES", "Chart", "Filters", "chart", "job_view", "overview", "running_jobs", "schedules"]

#: The time filters of the jobs list: label to age in seconds (``None``: any time).
RANGES: dict[str, float | None] = {
    "": None,
    "15m": 15 * 60.0,
    "1h": 3600.0,
    "6h": 6 * 3600.0,
    "24h": 86400.0,
    "7d": 7 * 86400.0,
}
#: How many jobs a list page shows.
PAGE_SIZE = 50
#: How many running jobs the overview shows.
RUNNING_SHOWN = 20
_STATUSES = {status.value: status for status in JobStatus}


@dataclass(frozen=True)
class Filters:
    """The jobs list's filters, as the query string gives them (unknown values dropped)."""

    queue: str = ""
    status: str = ""
    range: str = ""
    q: str = ""

    @classmethod
    def parse(cls, args: Mapping[str, str]) -> Filters:
        status = args.get("status", "")
        period = args.get("range", "")
        return cls(
            queue=args.get("queue", "").strip()[:128],
            status=status if status in _STATUSES else "",
            range=period if period in RANGES else "",
            q=args.get("q", "").strip()[:200],
        )

    def query(self, now: datetime, *, before: str | None = None, limit: int = PAGE_SIZE) -> JobQuery:
        """The backend query for these filters."""
        age = RANGES.get(self.range)
        return JobQuery(
            queue=self.queue or None,
            status=_STATUSES[self.status] if self.status else None,
            since=None if age is None else now - timedelta(seconds=age),
            text=self.q or None,
            before=before,
            limit=limit,
        )

    def args(self) -> dict[str, str]:
        """The filters that are set, for links and hidden fields."""
        return {key: value for key, value in vars(self).items() if value}


def search(nq: Neoq) -> JobSearch:
    """The backend as a ``JobSearch`` (``create_app`` checked the capability)."""
    return cast(JobSearch, nq.backend)


def overview(nq: Neoq, now: datetime) -> dict[str, Any]:
    """The overview's data: queues with counts and the oldest waiting job's age, totals."""
    queues = []
    for summary in search(nq).queue_summaries():
        oldest = summary.oldest_waiting
        queues.append(
            {
                "name": summary.queue,
                "counts": summary.counts,
                "estimated": summary.estimated,
                "oldest_age": None if oldest is None else max(0.0, (now - oldest).total_seconds()),
            }
        )
    paused: set[str] = set()
    paused_queues = getattr(nq, "paused_queues", None)  # flow control, where this neoq has it
    if callable(paused_queues):
        try:
            paused = set(paused_queues())
        except NeoqError:
            paused = set()
    for queue in queues:
        queue["paused"] = queue["name"] in paused
    return {"queues": queues, "estimated": any(queue["estimated"] for queue in queues)}


def running_jobs(nq: Neoq) -> list[dict[str, Any]]:
    """The newest running jobs: id, queue, progress, note, started (an ISO time)."""
    found = search(nq).search_jobs(JobQuery(status=JobStatus.RUNNING, limit=RUNNING_SHOWN)).jobs
    return [
        {
            "id": job.id,
            "queue": job.queue,
            "progress": getattr(job, "progress", None),
            "note": getattr(job, "progress_note", None),
            "started": iso(job.ran_at),
        }
        for job in found
    ]


@dataclass(frozen=True)
class Chart:
    """The activity chart of the last hour: one bar pair per minute, as SVG geometry."""

    width: int
    height: int
    bars: list[dict[str, Any]]
    peak: int
    processed: int
    failed: int
    #: The end of the last minute shown.
    end: datetime


def chart(nq: Neoq, now: datetime, minutes: int = 60) -> Chart:
    """Processed and failed jobs per minute over the last ``minutes``, scaled to an SVG box."""
    end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    start = end - timedelta(minutes=minutes)
    counts = {item.minute: item for item in search(nq).activity(start)}
    width, height, step = 600, 120, 10
    columns = []
    for index in range(minutes):
        minute = start + timedelta(minutes=index)
        item = counts.get(minute)
        columns.append((minute, item.processed if item else 0, item.failed if item else 0))
    peak = max([p + f for _, p, f in columns] + [1])
    bars = []
    for index, (minute, processed, failed) in enumerate(columns):
        total_h = round((processed + failed) * (height - 10) / peak)
        failed_h = round(failed * (height - 10) / peak)
        bars.append(
            {
                "x": index * step,
                "w": step - 2,
                "y": height - total_h,
                "ok_h": total_h - failed_h,
                "fail_y": height - failed_h,
                "fail_h": failed_h,
                "label": f"{minute:%H:%M} UTC: {processed} processed, {failed} failed",
            }
        )
    return Chart(
        width=width,
        height=height,
        bars=bars,
        peak=peak,
        processed=sum(p for _, p, _ in columns),
        failed=sum(f for _, _, f in columns),
        end=end,
    )


def workers(nq: Neoq) -> list[WorkerInfo]:
    """The live worker processes, where the backend keeps a registry."""
    if "workers" not in nq.backend.capabilities:
        return []
    return cast(WorkerRegistry, nq.backend).list_workers()


def queue_names(nq: Neoq, current: str = "") -> list[str]:
    """Queue names to suggest in the jobs filter: the live workers' queues (cheap to read), and ``current``."""
    names = {queue for worker in workers(nq) for queue in worker.queues}
    if current:
        names.add(current)
    return sorted(names)


def schedules(nq: Neoq, live: list[WorkerInfo], now: datetime) -> list[dict[str, Any]]:
    """The cron schedules the live workers run, with each one's last stored tick and next tick."""
    from ..cron.triggers import next_tick, parse_spec

    found: dict[str, tuple[str, str]] = {}
    for worker in live:
        for queue, (spec, zone) in worker.schedules.items():
            found.setdefault(queue, (spec, zone))
    rows = []
    for queue, (spec, zone) in sorted(found.items()):
        try:
            upcoming = next_tick(parse_spec(spec, zone), now)
        except NeoqError:
            upcoming = None
        rows.append(
            {"queue": queue, "spec": spec, "timezone": zone, "last": nq.backend.last_tick(queue), "next": upcoming}
        )
    return rows


def job_view(job: Job) -> dict[str, Any]:
    """A job's fields for the job page and its JSON (outcome fields where this neoq has them)."""
    progress = getattr(job, "progress", None)
    return {
        "id": job.id,
        "queue": job.queue,
        "status": job.status.value,
        "payload": json.dumps(job.payload, indent=2, ensure_ascii=False, sort_keys=True),
        "result": _json_or_none(getattr(job, "result", None)),
        "error": job.error,
        "traceback": getattr(job, "traceback", None),
        "attempts": job.attempts,
        "retries": job.retries,
        "max_retries": job.max_retries,
        "progress": None if progress is None else float(progress),
        "progress_note": getattr(job, "progress_note", None),
        "priority": getattr(job, "priority", None),
        "fingerprint": job.fingerprint,
        "times": [
            ("created", job.created_at),
            ("run after", job.run_after),
            ("deadline", job.deadline),
            ("started", job.ran_at),
            ("finished", job.finished_at),
        ],
    }


def _json_or_none(value: Any) -> str | None:
    return None if value is None else json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


def iso(value: datetime | None) -> str | None:
    """``value`` in ISO 8601, UTC, to the second."""
    return None if value is None else value.astimezone(timezone.utc).isoformat(timespec="seconds")
