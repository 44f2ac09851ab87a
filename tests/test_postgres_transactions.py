"""The job's transaction and transactional enqueue: acceptance point 3, and the idle timeout of point 5."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from pgfixtures import unique_name, wait_until

import neoq
from neoq import DuplicateJobError, Handler, Job, JobStatus

pytestmark = pytest.mark.postgres


@pytest.fixture
def side_table(pg_url: str) -> Iterator[str]:
    """A table of its own that handlers write to through the job's transaction."""
    name = "side_" + unique_name("t").replace("-", "_")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (job_id bigint, note text)")
    yield name
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE {name}")


def rows_of(url: str, table: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(f"SELECT job_id, note FROM {table} ORDER BY note").fetchall()


@pytest.fixture
def nq(pg_clean: str) -> Iterator[neoq.Neoq]:
    with neoq.new(pg_clean, application_name=unique_name(), shutdown_timeout=5) as client:
        yield client


def test_handler_writes_commit_together_with_processed(nq: neoq.Neoq, pg_url: str, side_table: str) -> None:
    wrote, finish = threading.Event(), threading.Event()

    def handler(job: Job) -> None:
        context = neoq.job_context()
        assert context is not None and isinstance(context.transaction, psycopg.Connection)
        context.transaction.execute(f"INSERT INTO {side_table} VALUES (%s, 'done')", [int(job.id or 0)])
        wrote.set()
        finish.wait(10)

    nq.start("tx", handler)
    job_id = nq.enqueue(Job(queue="tx", payload={}))
    assert wrote.wait(10)
    # Written but not committed: nobody else sees the write, and the job is still running.
    assert rows_of(pg_url, side_table) == []
    assert nq.get_job(job_id).status is JobStatus.RUNNING  # type: ignore[union-attr]
    finish.set()
    wait_until(lambda: nq.get_job(job_id).status is JobStatus.PROCESSED, 10, "processed")  # type: ignore[union-attr]
    assert rows_of(pg_url, side_table) == [(int(job_id), "done")]


def test_handler_writes_roll_back_when_it_raises_and_the_retry_is_recorded(
    nq: neoq.Neoq, pg_url: str, side_table: str
) -> None:
    def handler(job: Job) -> None:
        context = neoq.job_context()
        assert context is not None
        context.transaction.execute(f"INSERT INTO {side_table} VALUES (%s, %s)", [int(job.id or 0), str(job.attempts)])
        if job.attempts == 1:
            raise ValueError("first attempt fails")

    nq.start("txfail", Handler(handler, max_retries=2, backoff=lambda retries: 0.05))
    job_id = nq.enqueue(Job(queue="txfail", payload={}))
    job = wait_until(
        lambda: (j := nq.get_job(job_id)) is not None and j.status is JobStatus.PROCESSED and j, 10, "processed"
    )
    assert job.attempts == 2 and job.retries == 1
    assert rows_of(pg_url, side_table) == [(int(job_id), "2")]


def test_timeout_cancels_the_running_query_rolls_back_and_leaves_a_healthy_pool(
    nq: neoq.Neoq, pg_url: str, side_table: str
) -> None:
    after: list[str] = []
    returned = threading.Event()

    def handler(job: Job) -> None:
        context = neoq.job_context()
        assert context is not None
        conn = context.transaction
        conn.execute(f"INSERT INTO {side_table} VALUES (%s, %s)", [int(job.id or 0), f"attempt {job.attempts}"])
        if job.attempts == 1:
            try:
                conn.execute("SELECT pg_sleep(60)")
            except psycopg.Error as exc:
                after.append(type(exc).__name__)
            # The attempt is over: the transaction is closed to this handler.
            try:
                conn.execute(f"INSERT INTO {side_table} VALUES (%s, 'late')", [int(job.id or 0)])
                after.append("late write accepted")
            except psycopg.Error as exc:
                after.append(type(exc).__name__)
            returned.set()

    nq.start("txtimeout", Handler(handler, timeout=0.3, max_retries=1, backoff=lambda retries: 0.2, concurrency=1))
    start = time.monotonic()
    job_id = nq.enqueue(Job(queue="txtimeout", payload={}))
    assert returned.wait(10)
    cancelled_in = time.monotonic() - start
    job = wait_until(
        lambda: (j := nq.get_job(job_id)) is not None and j.status is JobStatus.PROCESSED and j, 10, "processed"
    )
    assert after[0] == "QueryCanceled" and after[1] != "late write accepted"
    assert job.attempts == 2 and job.retries == 1
    # The first attempt's write and its late write are gone; the second attempt's committed.
    assert rows_of(pg_url, side_table) == [(int(job_id), "attempt 2")]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        sleeping = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60)%'")
        assert sleeping.fetchone() == (0,)
    print(f"\nthe timed-out query was cancelled and the handler returned {cancelled_in * 1000:.0f}ms after enqueue")
    assert cancelled_in < 3
    # The pool is healthy: more jobs run and commit through it.
    ids = [nq.enqueue(Job(queue="txtimeout", payload={"n": n})) for n in range(5)]
    for other in ids:
        wait_until(lambda other=other: nq.get_job(other).status is JobStatus.PROCESSED, 10, "processed")  # type: ignore[union-attr]


def test_enqueue_through_a_connection_is_invisible_and_silent_until_commit(
    nq: neoq.Neoq, pg_connect: Callable[..., Any]
) -> None:
    listener = pg_connect(autocommit=True)
    listener.execute("LISTEN neoq")
    ran = threading.Event()
    nq.start("txenq", lambda job: ran.set())
    conn = pg_connect()
    job_id = nq.enqueue(Job(queue="txenq", payload={"a": 1}), connection=conn)
    assert nq.get_job(job_id) is None
    assert list(listener.notifies(timeout=0.3)) == [], "a worker was woken before the commit"
    assert not ran.is_set()
    conn.commit()
    notes = list(listener.notifies(timeout=2, stop_after=1))
    assert [n.payload for n in notes] == ["q:txenq"]
    assert ran.wait(10)
    wait_until(lambda: nq.get_job(job_id).status is JobStatus.PROCESSED, 10, "processed")  # type: ignore[union-attr]


def test_enqueue_through_a_connection_vanishes_on_rollback(nq: neoq.Neoq, pg_connect: Callable[..., Any]) -> None:
    listener = pg_connect(autocommit=True)
    listener.execute("LISTEN neoq")
    conn = pg_connect()
    ids = nq.enqueue_many([Job(queue="txroll", payload={"n": n}) for n in range(3)], connection=conn)
    conn.rollback()
    assert [nq.get_job(job_id) for job_id in ids] == [None, None, None]
    assert list(listener.notifies(timeout=0.3)) == []
    assert nq.stats() == {}


def test_a_duplicate_through_a_connection_leaves_the_callers_transaction_usable(
    nq: neoq.Neoq, pg_connect: Callable[..., Any]
) -> None:
    existing = nq.enqueue(Job(queue="txdup", payload={"k": 1}))
    conn = pg_connect()
    conn.execute("CREATE TEMP TABLE mine (x int)")
    conn.execute("INSERT INTO mine VALUES (1)")
    with pytest.raises(DuplicateJobError) as info:
        nq.enqueue(Job(queue="txdup", payload={"k": 1}), connection=conn)
    assert info.value.job_id == existing
    second = nq.enqueue(Job(queue="txdup", payload={"k": 2}), connection=conn)
    assert conn.execute("SELECT x FROM mine").fetchall() == [(1,)]
    conn.commit()
    assert nq.get_job(second) is not None
    # Autocommit connections work too: the statement is its own transaction.
    auto = pg_connect(autocommit=True)
    assert nq.get_job(nq.enqueue(Job(queue="txdup", payload={"k": 3}), connection=auto)) is not None
    with pytest.raises(neoq.ConfigurationError):
        nq.enqueue(Job(queue="txdup", payload={"k": 4}), connection=object())


def test_a_handler_idle_past_the_idle_timeout_loses_its_session_and_the_job_runs_again(
    pg_clean: str, side_table: str
) -> None:
    attempts: list[int] = []

    def handler(job: Job) -> None:
        context = neoq.job_context()
        assert context is not None
        attempts.append(job.attempts)
        context.transaction.execute(f"INSERT INTO {side_table} VALUES (%s, %s)", [int(job.id or 0), str(job.attempts)])
        if job.payload["idle"] == "always" or job.attempts == 1:
            # Sit idle in the transaction past the idle timeout; PostgreSQL ends the session.
            time.sleep(1.6)

    with neoq.new(pg_clean, application_name=unique_name(), idle_transaction_timeout=1) as nq:
        nq.start("idle", Handler(handler, concurrency=3, timeout=30, max_retries=1, backoff=lambda retries: 0))
        once = nq.enqueue(Job(queue="idle", payload={"idle": "once"}))
        always = nq.enqueue(Job(queue="idle", payload={"idle": "always"}))
        job = wait_until(
            lambda: (j := nq.get_job(once)) is not None and j.status is JobStatus.PROCESSED and j, 20, "processed"
        )
        assert job.attempts == 2
        failed = wait_until(
            lambda: (j := nq.get_job(always)) is not None and j.status is JobStatus.FAILED and j, 20, "failed"
        )
        # Two attempts (max_retries + 1) lost their session; the third claim saw the count.
        assert failed.attempts == 3 and failed.error is not None and failed.error.startswith("WorkerLostError:")
    assert rows_of(pg_clean, side_table) == [(int(once), "2")]
