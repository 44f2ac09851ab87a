"""The PostgreSQL backend's dashboard half: search, activity, summaries and the worker registry.

Every page reads through an index (migration 0008): a search picks its page's ids walking the
finished jobs' ``(status, id)`` or ``(queue, id)`` or the primary key backwards from its key, or
sorts the waiting jobs' ids out of their partial index (a queue's page merges its waiting and its
finished jobs), then reads those jobs;
a text search looks at ``TEXT_WINDOW`` ids per page, so a rare word costs a bounded scan. Waiting
jobs are counted exactly (an index-only count of the partial index of waiting jobs), finished ones
from the planner's statistics once the table is large (``ESTIMATE_FROM`` rows). The running jobs
are the locked ones among the first ``RUNNING_HEAD`` due jobs of each queue and of its jobs with a
priority (claims take the head), and the live leases. Each read is a short read-only transaction on
an aux connection, without JIT.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
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
from .common import Conn, _parse_id, _utc
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
-- Waiting jobs (running ones included) by queue: an index-only count over the partial index of waiting jobs.
SELECT queue, count(*) FROM neoq_jobs WHERE status = 'new' GROUP BY queue;

-- name: running_ids
-- The jobs running now: in transaction mode the ones a claim's transaction holds locked, looked for
-- among the first HEAD due jobs of each queue, and of its jobs with a priority (claims take the
-- head first, SKIP LOCKED); in lease
-- mode the live leases (their own index, migration 0007). The queues come from a loose scan of the
-- waiting jobs' index (or the one asked for).
WITH RECURSIVE queues AS (
    (SELECT queue FROM neoq_jobs WHERE status = 'new' AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
     ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT n.queue FROM neoq_jobs n
            WHERE n.status = 'new' AND n.queue > q.queue AND %(queue)s::text IS NULL
            ORDER BY n.queue LIMIT 1)
    FROM queues q WHERE q.queue IS NOT NULL
)
SELECT h.id, h.queue
FROM queues q
CROSS JOIN LATERAL (
    (SELECT j.id, j.queue, j.xmax, j.xmin FROM neoq_jobs j
     WHERE j.queue = q.queue AND j.status = 'new' AND j.run_after <= now()
     ORDER BY j.run_after, j.id
     LIMIT %(head)s)
    UNION ALL
    -- Jobs with a priority are claimed first: the head of their own index (migration 0006).
    (SELECT j.id, j.queue, j.xmax, j.xmin FROM neoq_jobs j
     WHERE j.queue = q.queue AND j.status = 'new' AND j.priority <> 0 AND j.run_after <= now()
     ORDER BY j.priority DESC, j.run_after, j.id
     LIMIT %(head)s)
) h
WHERE q.queue IS NOT NULL AND h.xmax <> '0'::xid
  AND neoq_locker_status(h.xmax, h.xmin, pg_snapshot_xmax(pg_current_snapshot())::text::bigint) = 'in progress'
UNION
SELECT j.id, j.queue FROM neoq_jobs j
WHERE j.status = 'new' AND j.lease_owner IS NOT NULL AND j.run_after > now()
  AND (%(queue)s::text IS NULL OR j.queue = %(queue)s::text);

-- name: oldest_waiting
-- Per queue, when its oldest due job that nobody runs became due (the head of the due index).
SELECT q.queue,
       (SELECT j.run_after FROM neoq_jobs j
        WHERE j.queue = q.queue AND j.status = 'new' AND j.run_after <= now()
          AND NOT (j.id = ANY(%(running)s::bigint[]))
        ORDER BY j.run_after, j.id LIMIT 1)
FROM unnest(%(queues)s::text[]) AS q(queue);

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


#: How many of each queue's first due jobs are looked at for the running ones (``running_ids``).
RUNNING_HEAD = 1000


def _search_sql(query: JobQuery, running: list[int] | None) -> tuple[str, dict[str, Any]]:
    """The search's SQL: the page's ids picked first with only the clauses the query needs (so the
    planner walks the index it can), then each read as ``get_job`` reads it. ``running``: the ids
    of the running jobs, for a status of ``NEW`` (excluded) or ``RUNNING`` (the only candidates)."""
    clauses: list[str] = []
    params: dict[str, Any] = {"running": running or []}
    if query.queue is not None:
        clauses.append("j.queue = %(queue)s")
        params["queue"] = query.queue
    if query.status is JobStatus.RUNNING:
        clauses.append("j.id = ANY(%(running)s::bigint[])")
    elif query.status is JobStatus.NEW:
        clauses.append("j.status = 'new' AND NOT (j.id = ANY(%(running)s::bigint[]))")
    elif query.status is not None:
        # The literal lets the planner use the finished jobs' partial indexes whatever the value.
        clauses.append("j.status <> 'new' AND j.status = %(status)s")
        params["status"] = query.status.value
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
    page = f"SELECT j.id FROM neoq_jobs j WHERE {where} ORDER BY j.id DESC LIMIT %(limit)s"
    if query.status is JobStatus.NEW or (query.queue is not None and query.status is None):
        # No index holds the waiting jobs by id (each enqueue would write an entry): the page is
        # sorted out of all of them, read from the claim's partial index of waiting jobs (a cost
        # that grows with the waiting jobs only). MATERIALIZED keeps the planner from walking the
        # primary key backwards instead, through every finished job when fewer than a page wait.
        waiting = (
            f"WITH w AS MATERIALIZED (SELECT j.id FROM neoq_jobs j WHERE j.status = 'new' AND {where}) "
            "SELECT w.id FROM w ORDER BY w.id DESC LIMIT %(limit)s"
        )
        if query.status is JobStatus.NEW:
            page = waiting
        else:  # a queue's page: its waiting jobs and its finished ones (their partial index), merged
            finished = page.replace("WHERE ", "WHERE j.status <> 'new' AND ", 1)
            page = f"SELECT h.id FROM (({waiting}) UNION ALL ({finished})) h ORDER BY h.id DESC LIMIT %(limit)s"
    sql = f"{QUERIES['job_view']}\nWHERE j.id = ANY(ARRAY({page}))\nORDER BY j.id DESC"
    return sql, params


def _running(conn: Conn, queue: str | None) -> list[tuple[int, str]]:
    """The running jobs' ids and queues (of ``queue``, or all)."""
    rows = conn.execute(_SQL["running_ids"], {"queue": queue, "head": RUNNING_HEAD}).fetchall()
    return [(int(job_id), str(name)) for job_id, name in rows]


def _finished(conn: Conn) -> tuple[list[tuple[str, str, int]], bool]:
    """Finished jobs by queue and status, and whether those are estimates (a large table)."""
    row = conn.execute(_SQL["table_size"]).fetchone()
    size = 0 if row is None or row[0] is None else int(row[0])
    if size >= ESTIMATE_FROM:
        stats = conn.execute(_SQL["finished_estimates"]).fetchone()
        if stats is not None and stats[0] is not None:
            found = []
            for (queue, status), share in zip(stats[0], stats[1], strict=False):
                if status != "new" and queue is not None:
                    found.append((str(queue), str(status), round(share * size)))
            return found, True
    return [(str(q), str(s), int(n)) for q, s, n in conn.execute(_SQL["finished_counts"]).fetchall()], False


class PostgresSearch(JobSearch, WorkerRegistry):
    """``JobSearch`` and ``WorkerRegistry`` over ``neoq_jobs`` and ``neoq_workers`` (a mixin of ``PostgresBackend``)."""

    _conns: Connections

    @contextlib.contextmanager
    def _reading(self, doing: str) -> Iterator[Conn]:
        """An aux connection in a read-only transaction without JIT: these queries are short, and
        their cost estimates on a large table would have PostgreSQL compile them (tens of ms) first."""
        with self._conns.aux(doing) as conn, conn.transaction():
            conn.execute("SET TRANSACTION READ ONLY")
            conn.execute("SET LOCAL jit = off")
            yield conn

    def search_jobs(self, query: JobQuery) -> JobPage:
        limit = max(1, min(query.limit, MAX_PAGE))
        with self._reading("searching jobs") as conn:
            running = None
            if query.status in (JobStatus.NEW, JobStatus.RUNNING):
                running = [job_id for job_id, _ in _running(conn, query.queue)]
            sql, params = _search_sql(query, running)
            params["limit"] = limit + 1
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
        with self._reading("reading the queues") as conn:
            waiting = {queue: int(n) for queue, n in conn.execute(_SQL["waiting_counts"]).fetchall()}
            running = _running(conn, None)
            busy: dict[str, int] = {}
            for _, queue in running:
                busy[queue] = busy.get(queue, 0) + 1
            oldest = {
                queue: _utc(due)
                for queue, due in conn.execute(
                    _SQL["oldest_waiting"], {"queues": list(waiting), "running": [job_id for job_id, _ in running]}
                ).fetchall()
            }
            finished, estimated = _finished(conn)
        for queue, total in waiting.items():
            counts[queue] = dict.fromkeys(_KEYS, 0)
            counts[queue].update(new=max(0, total - busy.get(queue, 0)), running=busy.get(queue, 0))
        for queue, status, count in finished:
            counts.setdefault(queue, dict.fromkeys(_KEYS, 0))[status] = count
        return [
            QueueSummary(queue, counts[queue], estimated=estimated, oldest_waiting=oldest.get(queue))
            for queue in sorted(counts)
        ]

    def activity(self, since: datetime, queue: str | None = None) -> list[Activity]:
        with self._reading("reading the activity") as conn:
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
