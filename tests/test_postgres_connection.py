"""Connection trouble: acceptance point 9. Outages are simulated by a TCP proxy that the test cuts."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from pgfixtures import TcpProxy, free_port, unique_name, wait_until

import neoq
from neoq import BackendConnectionError, Job, JobStatus
from neoq.backends.postgres import PostgresBackend

pytestmark = pytest.mark.postgres


@pytest.fixture
def proxy(pg_url: str) -> Iterator[TcpProxy]:
    proxy = TcpProxy.to(pg_url)
    yield proxy
    proxy.close()


def test_a_refused_connection_raises_backend_connection_error_at_once_without_the_password() -> None:
    url = f"postgresql://app:s3cr3t-pw@127.0.0.1:{free_port()}/neoq"
    start = time.monotonic()
    with pytest.raises(BackendConnectionError) as info:
        neoq.new(url, connect_timeout=2)
    assert time.monotonic() - start < 2.5
    assert "s3cr3t-pw" not in str(info.value) and "127.0.0.1" in str(info.value)
    assert "s3cr3t-pw" not in repr(PostgresBackend(url))


def test_a_server_that_never_answers_raises_within_the_connect_timeout(pg_url: str) -> None:
    hole = TcpProxy.to(pg_url, blackhole=True)
    try:
        start = time.monotonic()
        with pytest.raises(BackendConnectionError):
            neoq.new(hole.url_for(pg_url), connect_timeout=2)
        took = time.monotonic() - start
    finally:
        hole.close()
    print(f"\nunanswered connection reported after {took:.2f}s (connect_timeout=2)")
    assert 1.5 < took < 3.5


def test_workers_survive_an_outage_and_resume_losing_nothing(
    pg_clean: str, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL)  # the outage is expected to log loudly
    app = unique_name()
    with psycopg.connect(pg_clean, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS outage_effects (job_id bigint, attempt int)")
        conn.execute("TRUNCATE outage_effects")
    entered, cut_done = threading.Event(), threading.Event()

    def handler(job: neoq.Job) -> None:
        context = neoq.job_context()
        assert context is not None
        context.transaction.execute("INSERT INTO outage_effects VALUES (%s, %s)", [int(job.id or 0), job.attempts])
        if job.payload.get("inflight") and job.attempts == 1:
            entered.set()
            cut_done.wait(10)

    direct = neoq.new(pg_clean, application_name=unique_name())
    # A long poll interval: after the outage, only the notifications can wake the workers quickly.
    nq = neoq.new(proxy.url_for(pg_clean), application_name=app, connect_timeout=2, poll_interval=30)
    try:
        nq.start("outage", handler, concurrency=2)
        inflight = nq.enqueue(Job(queue="outage", payload={"inflight": True}))
        assert entered.wait(10)
        proxy.cut()
        cut_done.set()
        start = time.monotonic()
        with pytest.raises(BackendConnectionError):
            nq.enqueue(Job(queue="outage", payload={"during": "outage"}))
        with pytest.raises(BackendConnectionError):
            nq.enqueue(Job(queue="outage", payload={"during": "outage", "again": True}))
        assert time.monotonic() - start < 2 * (2 + 1.5), "enqueue hung during the outage"
        # Meanwhile other processes keep enqueueing straight into the database.
        waiting = direct.enqueue_many([Job(queue="outage", payload={"n": n}) for n in range(20)])
        time.sleep(1.0)  # the outage lasts a moment: the workers run into it
        proxy.restore()
        for job_id in [inflight, *waiting]:
            wait_until(
                lambda job_id=job_id: direct.get_job(job_id).status is JobStatus.PROCESSED,  # type: ignore[union-attr]
                30,
                f"job {job_id} is processed after the outage",
            )
        with psycopg.connect(pg_clean, autocommit=True) as conn:
            rows = conn.execute("SELECT job_id, count(*) FROM outage_effects GROUP BY job_id").fetchall()
            assert sorted(rows) == sorted((int(i), 1) for i in [inflight, *waiting])
            # The listener is back (its last statement was LISTEN, or its check of pending
            # cancellations): a new job is picked up by notification, far sooner than the poll.
            wait_until(
                lambda: conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                    " AND (query LIKE 'LISTEN%%' OR query LIKE '%%FROM neoq_cancellations%%')",
                    [app],
                ).fetchone()
                == (1,),
                20,
                "the listener reconnects",
            )
        sent = time.monotonic()
        after = direct.enqueue(Job(queue="outage", payload={"after": True}))
        wait_until(lambda: direct.get_job(after).status is JobStatus.PROCESSED, 10, "picked up")  # type: ignore[union-attr]
        assert time.monotonic() - sent < 1.5
        job = direct.get_job(inflight)
        assert job is not None and job.attempts == 2
    finally:
        nq.shutdown()
        direct.shutdown()
