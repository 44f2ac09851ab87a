"""Upgrades of an existing PostgreSQL schema: migration 8 replaces the dashboard's full indexes
(migration 7) with partial ones of finished jobs, and no index the dashboard reads costs an enqueue."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import neoq
from neoq import Job, JobStatus
from neoq.backends.postgres.migrations import available_migrations
from neoq.backends.search import JobQuery

pytestmark = pytest.mark.postgres


def _indexes(conn: psycopg.Connection[Any]) -> dict[str, str]:
    rows = conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'neoq_jobs'").fetchall()
    return {str(name): str(definition) for name, definition in rows}


def test_migration_8_upgrades_a_version_7_schema_and_its_pages_read_the_same(
    pg_new_database: Callable[[], str],
) -> None:
    url = pg_new_database()
    with psycopg.connect(url, autocommit=True) as conn:
        # A database as neoq left it before migration 8 (what migrate() records), with jobs in it.
        conn.execute(
            "CREATE TABLE neoq_migrations (version integer PRIMARY KEY, name text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, name, text in available_migrations():
            if version <= 7:
                conn.execute(text.encode("utf-8"))
                conn.execute("INSERT INTO neoq_migrations (version, name) VALUES (%s, %s)", [version, name])
        assert {"neoq_jobs_status_id", "neoq_jobs_queue_id"} <= set(_indexes(conn))
        conn.execute(
            "INSERT INTO neoq_jobs (queue, fingerprint, payload, status, finished_at) "
            "SELECT 'q' || (g % 2), 'f' || g, '{}', (ARRAY['new', 'processed', 'failed', 'cancelled'])[1 + g % 4], "
            "       CASE WHEN g % 4 <> 0 THEN now() END "
            "FROM generate_series(1, 40) AS g"
        )
    with neoq.new(url) as nq:  # migrates
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT max(version) FROM neoq_migrations").fetchone() == (len(available_migrations()),)
            indexes = _indexes(conn)
        assert "neoq_jobs_status_id" not in indexes and "neoq_jobs_queue_id" not in indexes
        for name in ("neoq_jobs_finished_status_id", "neoq_jobs_finished_queue_id"):
            assert indexes[name].endswith("WHERE (status <> 'new'::text)"), indexes[name]
        search: Any = nq.backend
        ids = list(range(40, 0, -1))

        def page(**filters: Any) -> list[int]:
            return [int(job.id or 0) for job in search.search_jobs(JobQuery(limit=100, **filters)).jobs]

        status_of = {g: ("new", "processed", "failed", "cancelled")[g % 4] for g in ids}
        assert page() == ids
        assert page(status=JobStatus.FAILED) == [g for g in ids if status_of[g] == "failed"]
        assert page(status=JobStatus.NEW) == [g for g in ids if status_of[g] == "new"]
        assert page(queue="q1") == [g for g in ids if g % 2 == 1]
        assert page(queue="q0", before="21") == [g for g in ids if g % 2 == 0 and g < 21]
        assert page(queue="q0", status=JobStatus.NEW) == [g for g in ids if g % 4 == 0]
        nq.enqueue(Job(queue="q1", payload={"after": 8}))
        assert len(page(queue="q1")) == 21


def test_no_index_the_dashboard_added_is_written_by_an_enqueue(pg_new_database: Callable[[], str]) -> None:
    # Every index of neoq_jobs a waiting job enters: the primary key, uniqueness and the claims'.
    url = pg_new_database()
    neoq.new(url).shutdown()
    with psycopg.connect(url) as conn:
        indexes = _indexes(conn)
    written = {name for name, definition in indexes.items() if "WHERE" not in definition}
    written |= {name for name, definition in indexes.items() if definition.endswith("WHERE (status = 'new'::text)")}
    assert written == {"neoq_jobs_pkey", "neoq_jobs_fingerprint_new", "neoq_jobs_due"}, indexes
