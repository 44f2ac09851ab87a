"""Migration 4: a claim's attempts lookup (``neoq_attempts_of``) goes through the index even when
its plan was made while ``neoq_attempts`` was empty by the statistics.

PL/pgSQL keeps a query's plan for the connection's life. Made while the table looked empty, that
plan was a sequential scan, and every later claim on the connection read the whole table.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

pg = pytest.mark.postgres


def scans_of_one_lookup(conn: psycopg.Connection[Any]) -> int:
    """Sequential scans of ``neoq_attempts`` made by one ``neoq_attempts_of`` call, in a transaction."""
    counted = "SELECT pg_stat_get_xact_numscans('neoq_attempts'::regclass)"
    with conn.transaction():
        # The counts not yet flushed to the shared statistics (earlier statements') are included.
        before = conn.execute(counted).fetchone()
        conn.execute("SELECT neoq_attempts_of(%s)", [123_456])
        after = conn.execute(counted).fetchone()
    assert before is not None and after is not None
    return int(after[0]) - int(before[0])


def plan_while_empty_then_fill(url: str) -> psycopg.Connection[Any]:
    """A connection whose lookup plan was made while the table was empty and analyzed, and which
    then sees the table hold 20,000 rows (no ANALYZE since)."""
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("TRUNCATE neoq_attempts")
        admin.execute("ANALYZE neoq_attempts")
    conn = psycopg.connect(url, autocommit=True)
    for job_id in range(10):  # more than the plan cache's five custom plans: the kept plan is made
        conn.execute("SELECT neoq_attempts_of(%s)", [job_id])
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(
            "INSERT INTO neoq_attempts (job_id, attempts, ran_at) SELECT g, 1, now() FROM generate_series(1, 20000) g"
        )
    return conn


@pg
def test_the_attempts_lookup_uses_the_index_whatever_the_statistics_said(pg_clean: str) -> None:
    conn = plan_while_empty_then_fill(pg_clean)
    try:
        assert scans_of_one_lookup(conn) == 0
    finally:
        conn.close()
        with psycopg.connect(pg_clean, autocommit=True) as admin:
            admin.execute("TRUNCATE neoq_attempts")


@pg
def test_without_the_migration_s_setting_the_lookup_scans_the_table(pg_clean: str) -> None:
    # The control: what migration 4 prevents does happen on this server without it.
    with psycopg.connect(pg_clean, autocommit=True) as admin:
        admin.execute("ALTER FUNCTION neoq_attempts_of(bigint) RESET enable_seqscan")
    try:
        conn = plan_while_empty_then_fill(pg_clean)
        try:
            assert scans_of_one_lookup(conn) == 1
        finally:
            conn.close()
    finally:
        with psycopg.connect(pg_clean, autocommit=True) as admin:
            admin.execute("ALTER FUNCTION neoq_attempts_of(bigint) SET enable_seqscan = off")
            admin.execute("TRUNCATE neoq_attempts")
