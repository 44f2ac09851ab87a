"""Reading and managing jobs on Redis: ``get_job``, ``list_jobs``, ``stats``, ``retry_job``,
``cancel_job``, ``last_tick``, ``prune``, and the durability check of ``open()``. Each is one
script call (``read.lua``, ``stats.lua``, ...), except ``last_tick`` (one ``ZRANGE``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import redis

from ...defaults import MIN_TICK_RETENTION
from ...errors import DuplicateJobError, JobNotFoundError
from ...job import Job, JobStatus
from .rows import ROW_WIDTH, from_us, job_from_row, to_us
from .scripts import Scripts, wrap_error
from .settings import RedisSettings

__all__ = ["Inspection", "check_durability"]

logger = logging.getLogger("neoq.backends.redis")

#: The most jobs one prune call deletes (each call blocks the server while it runs).
_PRUNE_BATCH = 500

#: Eviction policies that may delete jobs (``volatile-*`` touch only keys with a TTL: neoq sets none).
_EVICTING = ("allkeys-lru", "allkeys-lfu", "allkeys-random")

_FINISHED = (JobStatus.PROCESSED, JobStatus.FAILED, JobStatus.CANCELLED)


def is_id(job_id: object) -> bool:
    """Whether ``job_id`` is written as this backend writes ids (1, 2, ...: no sign, no leading 0)."""
    return (
        isinstance(job_id, str) and 0 < len(job_id) <= 15 and job_id.isascii() and job_id.isdigit() and job_id[0] != "0"
    )


def _job_key(job_id: str) -> str:
    if not is_id(job_id):
        raise JobNotFoundError(f"no job has id {job_id!r}")
    return job_id


class Inspection:
    """The managing calls of one open backend: its scripts and client, its origin (wake-ups)."""

    def __init__(self, scripts: Scripts, client: redis.Redis, settings: RedisSettings, origin: str) -> None:
        self._scripts = scripts
        self._client = client
        self._settings = settings
        self._origin = origin

    def _read(self, args: list[Any], doing: str) -> list[Job]:
        reply = self._scripts.run("read", args, doing)
        return [job_from_row(reply[i : i + ROW_WIDTH]) for i in range(0, len(reply), ROW_WIDTH)]

    def get_job(self, job_id: str) -> Job | None:
        if not is_id(job_id):
            return None
        jobs = self._read([job_id, "", "", 0], "reading a job")
        return jobs[0] if jobs else None

    def list_jobs(self, queue: str | None, status: JobStatus | None, limit: int) -> list[Job]:
        if limit <= 0:
            return []
        return self._read(["", queue or "", "" if status is None else status.value, limit], "listing jobs")

    def stats(self) -> dict[str, dict[str, int]]:
        reply = self._scripts.run("stats", [], "reading the stats")
        out: dict[str, dict[str, int]] = {}
        for i in range(0, len(reply), 6):
            queue, new, running, processed, failed, cancelled = reply[i : i + 6]
            counts = {"new": new, "running": running, "processed": processed, "failed": failed, "cancelled": cancelled}
            if any(counts.values()):
                out[queue] = counts
        return dict(sorted(out.items()))

    def retry_job(self, job_id: str, signal: Callable[[str | None], None]) -> None:
        reply = self._scripts.run("retry", [self._origin, _job_key(job_id)], "retrying a job")
        if reply[0] == "missing":
            raise JobNotFoundError(f"no job has id {job_id!r}")
        if reply[0] == "dup":
            raise DuplicateJobError(
                f"job {job_id} cannot run again: job {reply[1]} with the same fingerprint is waiting or running",
                str(reply[1]),
            )
        if reply[0] == "ok":
            signal(None)

    def cancel_job(self, job_id: str) -> None:
        """A waiting or running job is cancelled at once; a running one's holder sees its lease
        lost at its next heartbeat and stops the handler."""
        if self._scripts.run("cancel", [_job_key(job_id)], "cancelling a job") == "missing":
            raise JobNotFoundError(f"no job has id {job_id!r}")

    def last_tick(self, key: str) -> datetime | None:
        try:
            last: list[Any] = self._client.zrange(self._settings.key(f"ticks:{key}"), -1, -1)
        except redis.RedisError as exc:
            raise wrap_error(self._settings, exc, "reading the last cron tick") from exc
        return from_us(last[0]) if last else None

    def prune(self, older_than: dict[JobStatus, datetime], limit: int) -> int:
        cutoffs = [older_than.get(status) for status in _FINISHED]
        given = [cutoff for cutoff in cutoffs if cutoff is not None]
        tick_cut = ""
        if given:
            floor = datetime.now(timezone.utc) - timedelta(seconds=MIN_TICK_RETENTION)
            tick_cut = str(to_us(min(min(given), floor)))
        args = ["" if cutoff is None else to_us(cutoff) for cutoff in cutoffs]
        deleted = 0
        while deleted < limit:
            batch = min(_PRUNE_BATCH, limit - deleted)
            count = int(self._scripts.run("prune", [batch, *args, tick_cut], "pruning jobs"))
            tick_cut = ""  # once per prune
            deleted += count
            if count < batch:
                break
        return deleted


def _setting(answer: Any, name: str) -> list[Any]:
    """A setting's values from CONFIG GET: a server answers {name: value}, a Cluster client
    {node: {name: value}}."""
    if name in answer:
        return [answer[name]]
    return [values.get(name) for values in answer.values() if isinstance(values, dict)]


#: The servers already warned about, by their shown URL: a warning once per process, not per client.
_WARNED: set[str] = set()


def check_durability(client: redis.Redis, safe_url: str) -> None:
    """Warn when the server may lose jobs: no AOF, or an eviction policy that may delete keys
    (once per server and process)."""
    if safe_url in _WARNED:
        return
    try:
        appendonly = _setting(client.config_get("appendonly"), "appendonly")
        policies = _setting(client.config_get("maxmemory-policy"), "maxmemory-policy")
    except redis.ResponseError:
        logger.debug("neoq: CONFIG GET is not allowed on %s; its durability settings are not checked", safe_url)
        return
    policy = next((value for value in policies if value in _EVICTING), None)
    _WARNED.add(safe_url)
    if "no" in appendonly:
        logger.warning(
            "neoq: Redis at %s has appendonly off: jobs accepted since its last snapshot are lost if it "
            "stops uncleanly (docs/redis.md: turn on appendonly)",
            safe_url,
        )
    if policy in _EVICTING:
        logger.warning(
            "neoq: Redis at %s has maxmemory-policy %s: it may evict jobs when memory runs short "
            "(docs/redis.md: use noeviction)",
            safe_url,
            policy,
        )
