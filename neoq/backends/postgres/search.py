"""The PostgreSQL backend's dashboard half: search, activity, summaries and the worker registry.

Every page reads through an index (migration 0007): a search walks ``(status, id)`` or
``(queue, id)`` backwards from its key; a text search looks at ``TEXT_WINDOW`` ids per page, so a
rare word costs a bounded scan; finished jobs are counted from the planner's statistics once the
table is large (``ESTIMATE_FROM`` rows), waiting and running ones exactly (the partial index of
waiting jobs). Each call is short autocommit work on an aux connection.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ...defaults import WORKER_TTL
from ...job import JobStatus
from ..search import (
    MAX_PAGE,
    TEXT_WINDOW,
    Activity,
    JobPage,
    JobQuery,
    JobSearch,
    QueueSummary,
    WorkerInfo,
    WorkerRegistry,
)
from .common import _parse_id, _utc
from .queries import QUERIES, parse_queries
from .rows import _job_from_row

if TYPE_CHECKING:
    from .pools import Connections

__all__ = ["ESTIMATE_FROM", "PostgresSearch"]

#: From this many rows in ``neoq_jobs`` (by the planner's count), finished jobs are counted from statistics.
ESTIMATE_FROM = 200_000

_KEYS = ("new", "running", "processed", "failed", "cancelled")

_SQL = parse_queries(
    """
-- name: waiting_counts
-- Waiting and running jobs by queue, exactly, through the partial index of waiting jobs; and when
-- the oldest due waiting job of each queue became due. A locked row costs a function call.
SELECT j.queue,
       count(*) FILTER (WHERE NOT r.running),
       count(*) FILTER (WHERE r.running),
       min(j.run_after) FILTER (WHERE NOT r.running AND j.run_after <= now())
FROM neoq_jobs j
CROSS JOIN LATERAL (
    SELECT (j.lease_owner IS NOT NULL AND j.run_after > now())
        OR (j.xmax <> '0'::xid AND neoq_locker_status(j.xmax, j.xmin,
            pg_snapshot_xmax(pg_current_snapshot())::text::bigint) = 'in progress') AS running
) r
WHERE j.status = 'new'
GROUP BY j.queue;

-- name: table_size
SELECT c.reltuples::bigint FROM pg_class c
WHERE c.oid = to_regclass(quote_ident(current_schema()) || '.neoq_jobs');

-- name: finished_counts
SELECT queue, status, count(*) FROM neoq_jobs WHERE status <> 'new' GROUP BY 1, 2;

-- name: finished_estimates
-- The (queue, status) combinations ANALYZE sampled, as fractions of the table (migration 0007).
SELECT most_common_vals, most_common_freqs FROM pg_stats_ext
WHERE schemaname = current_schema() AND tablename = 'neoq_jobs' AND statistics_name = 'neoq_jobs_queue_status';

-- name: activity
SELECT date_trunc('minute', finished_at),
       count(*) FILTER (WHERE status = 'processed'),
       count(*) FILTER (WHERE status = 'failed')
FROM neoq_jobs
WHERE status <> 'new' AND finished_at >= %(since)s AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
GROUP BY 1 ORDER BY 1;

-- name: max_id
SELECT max(id) FROM neoq_jobs;

-- name: announce
INSERT INTO neoq_workers (id, host, pid, queues, schedules, running, started_at, last_seen)
VALUES (%(id)s, %(host)s, %(pid)s, %(queues)s, %(schedules)s, %(running)s, coalesce(%(started_at)s, now()), now())
ON CONFLICT (id) DO UPDATE
SET queues = excluded.queues, schedules = excluded.schedules, running = excluded.running,
    last_seen = excluded.last_seen;

-- name: forget
DELETE FROM neoq_workers WHERE id = %(id)s;

-- name: forget_silent
DELETE FROM neoq_workers WHERE last_seen < now() - make_interval(secs => %(ttl)s);

-- name: list_workers
SELECT id, host, pid, queues, running, started_at, last_seen, schedules FROM neoq_workers ORDER BY started_at, id;
"""
)


def _search_sql(query: JobQuery) -> tuple[str, dict[str, Any]]:
    """The search's SQL: only the clauses the query needs, so the planner sees each index it can use."""
    clauses: list[str] = []
    params: dict[str, Any] = {}
    if query.queue is not None:
        clauses.append("j.queue = %(queue)s")
        params["queue"] = query.queue
    if query.status is not None:
        stored = "new" if query.status is JobStatus.RUNNING else query.status.value
        clauses.append("j.status = %(stored)s AND l.status = %(status)s")
        params.update(stored=stored, status=query.status.value)
    if query.since is not None:
        clauses.append("j.created_at >= %(since)s")
        params["since"] = query.since
    if query.until is not None:
        clauses.append("j.created_at < %(until)s")
        params["until"] = query.until
    if query.before is not None:
        clauses.append("j.id < %(before)s")
        params["before"] = _parse_id(query.before) or 0
    if query.text:
        clauses.append("j.id >= %(floor)s")
        clauses.append("(strpos(lower(j.payload::text), %(text)s) > 0 OR strpos(lower(j.error), %(text)s) > 0)")
        params["text"] = query.text.lower()
    where = " AND ".join(clauses) or "true"
    sql = f"{QUERIES['job_view']}\nWHERE {where}\nORDER BY j.id DESC\nLIMIT %(limit)s"
    return sql, params


class PostgresSearch(JobSearch, WorkerRegistry):
    """``JobSearch`` and ``WorkerRegistry`` over ``neoq_jobs`` and ``neoq_workers`` (a mixin of ``PostgresBackend``)."""

    _conns: Connections

    def search_jobs(self, query: JobQuery) -> JobPage:
        limit = max(1, min(query.limit, MAX_PAGE))
        sql, params = _search_sql(query)
        params["limit"] = limit + 1
        with self._conns.aux("searching jobs") as conn:
            if query.text:
                top = params.get("before")
                if top is None:
                    row = conn.execute(_SQL["max_id"]).fetchone()
                    top = 1 + (row[0] if row is not None and row[0] is not None else 0)
                params["floor"] = max(0, top - TEXT_WINDOW)
            rows = conn.execute(sql, params).fetchall()
        jobs = [_job_from_row(row) for row in rows[:limit]]
        if len(rows) > limit:
            return JobPage(jobs, jobs[-1].id)
        floor = params.get("floor", 0)
        # A text search that found too few in its window goes on below it on the next page.
        return JobPage(jobs, str(floor) if floor > 1 else None)

    def queue_summaries(self) -> list[QueueSummary]:
        counts: dict[str, dict[str, int]] = {}
        oldest: dict[str, datetime | None] = {}
        with self._conns.aux("reading the queues") as conn:
            for queue, waiting, running, due in conn.execute(_SQL["waiting_counts"]).fetchall():
                counts.setdefault(queue, dict.fromkeys(_KEYS, 0)).update(new=int(waiting), running=int(running))
                oldest[queue] = _utc(due)
            row = conn.execute(_SQL["table_size"]).fetchone()
            size = 0 if row is None or row[0] is None else int(row[0])
            estimated = False
            finished: list[tuple[str, str, int]] = []
            if size >= ESTIMATE_FROM:
                stats = conn.execute(_SQL["finished_estimates"]).fetchone()
                if stats is not None and stats[0] is not None:
                    estimated = True
                    for (queue, status), share in zip(stats[0], stats[1], strict=False):
                        if status != "new" and queue is not None:
                            finished.append((queue, status, round(share * size)))
            if not estimated:
                finished = [(q, s, int(n)) for q, s, n in conn.execute(_SQL["finished_counts"]).fetchall()]
        for queue, status, count in finished:
            counts.setdefault(queue, dict.fromkeys(_KEYS, 0))[status] = count
        return [
            QueueSummary(queue, counts[queue], estimated=estimated, oldest_waiting=oldest.get(queue))
            for queue in sorted(counts)
        ]

    def activity(self, since: datetime, queue: str | None = None) -> list[Activity]:
        with self._conns.aux("reading the activity") as conn:
            rows = conn.execute(_SQL["activity"], {"since": since, "queue": queue}).fetchall()
        return [Activity(_utc(minute) or since, int(p), int(f)) for minute, p, f in rows]

    # -- workers ---------------------------------------------------------------------------

    def announce_worker(self, worker: WorkerInfo) -> None:
        params = {
            "id": worker.id,
            "host": worker.host,
            "pid": worker.pid,
            "queues": json.dumps(worker.queues),
            "schedules": json.dumps(worker.schedules),
            "running": worker.running,
            "started_at": worker.started_at,
        }
        with self._conns.aux("announcing a worker") as conn:
            conn.execute(_SQL["announce"], params)

    def forget_worker(self, worker_id: str) -> None:
        with self._conns.aux("forgetting a worker") as conn:
            conn.execute(_SQL["forget"], {"id": worker_id})

    def list_workers(self, ttl: float = WORKER_TTL) -> list[WorkerInfo]:
        with self._conns.aux("listing workers") as conn:
            conn.execute(_SQL["forget_silent"], {"ttl": ttl})
            rows = conn.execute(_SQL["list_workers"]).fetchall()
        return [
            WorkerInfo(
                wid,
                host,
                int(pid),
                {str(k): int(v) for k, v in queues.items()},
                int(running),
                _utc(started),
                _utc(seen),
                {str(k): [str(part) for part in v] for k, v in schedules.items()},
            )
            for wid, host, pid, queues, running, started, seen, schedules in rows
        ]
