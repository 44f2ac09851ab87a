"""A heartbeat that read its leases before one was given back (or its retry written) renews nothing of it.

The lease keeps its token then, but no one holds it: renewing it put the job off by a whole lease
(found on MySQL, where a rate-limited job stalled 30 s; PostgreSQL and SQLite had the same gap).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pgfixtures import unique_name

import neoq
from neoq import Job


def _held_lease(nq: neoq.Neoq, queue: str) -> tuple[str, Any, threading.Event]:
    """Start a job whose handler waits; return its id, its lease and the event that lets it end."""
    leases: list[Any] = []
    holding, release = threading.Event(), threading.Event()

    def handler(job: Job) -> None:
        context = neoq.job_context()
        assert context is not None
        leases.append(context._claim.token)  # type: ignore[attr-defined]
        holding.set()
        release.wait(20)

    job_id = nq.enqueue(Job(queue=queue))
    nq.start(queue, neoq.Handler(handler, timeout=None))
    assert holding.wait(20)
    return job_id, leases[0], release


@pytest.mark.postgres
def test_postgres_renews_no_lease_that_was_given_back(pg_clean: str) -> None:
    queue = unique_name("renew-race")
    with neoq.new(pg_clean, mode="lease", lease=30) as nq:
        job_id, lease, release = _held_lease(nq, queue)
        try:
            with psycopg.connect(pg_clean, autocommit=True) as conn:
                # As lease_return (or a retry's settle) leaves it: due now, no owner, the same token.
                conn.execute("UPDATE neoq_jobs SET run_after = now(), lease_owner = NULL WHERE id = %s", [int(job_id)])
                lease.engine._store.renew([lease], 30.0)  # the heartbeat's older list, straight to the store
                row = conn.execute(
                    "SELECT extract(epoch FROM run_after - now()) FROM neoq_jobs WHERE id = %s", [int(job_id)]
                ).fetchone()
            assert row is not None and float(row[0]) <= 1.0, f"the job was put off by {float(row[0]):.1f} s"
        finally:
            release.set()


def test_sqlite_renews_no_lease_that_was_given_back(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    with neoq.new(f"sqlite:///{path}", lease=30) as nq:
        job_id, lease, release = _held_lease(nq, "renew-race")
        try:
            now_us = int(time.time() * 1e6)
            with sqlite3.connect(path, timeout=10) as conn:
                conn.execute(
                    "UPDATE neoq_jobs SET run_after = ?, lease_owner = NULL WHERE id = ?", (now_us, int(job_id))
                )
            lease.engine._store.renew([lease], 30.0)
            with sqlite3.connect(path, timeout=10) as conn:
                (run_after,) = conn.execute("SELECT run_after FROM neoq_jobs WHERE id = ?", (int(job_id),)).fetchone()
            assert run_after - now_us <= 1_000_000, f"the job was put off by {(run_after - now_us) / 1e6:.1f} s"
        finally:
            release.set()
