"""Isolation between clients, connections after shutdown, hostile names and payloads, migrations:
acceptance points 7 and 8."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from pgfixtures import connections_of, unique_name, wait_until

import neoq
from neoq import Job, JobStatus
from neoq.backends.postgres import PostgresBackend
from neoq.backends.postgres.migrations import available_migrations

pytestmark = pytest.mark.postgres


def test_shutdown_of_one_client_neither_stops_nor_slows_another(pg_clean: str) -> None:
    first_app, second_app = unique_name(), unique_name()
    entered, finish = threading.Event(), threading.Event()
    ran: list[str] = []

    def slow(job: Job) -> None:
        entered.set()
        finish.wait(10)
        ran.append("slow")

    second = neoq.new(pg_clean, application_name=second_app)
    try:
        first = neoq.new(pg_clean, application_name=first_app)
        first.start("shared", lambda job: ran.append("first"))
        second.start("slowq", slow)
        second.start("shared", lambda job: ran.append("second"))
        slow_id = second.enqueue(Job(queue="slowq", payload={}))
        assert entered.wait(10)
        started = time.monotonic()
        first.shutdown()
        shutdown_took = time.monotonic() - started
        assert connections_of(pg_clean, second_app) >= 2  # the other client keeps its connections
        # The other client's running job is untouched and its queue still picks jobs up at once.
        latencies = []
        for n in range(10):
            sent = time.monotonic()
            job_id = second.enqueue(Job(queue="shared", payload={"n": n}))
            wait_until(
                lambda job_id=job_id: second.get_job(job_id).status is JobStatus.PROCESSED,  # type: ignore[union-attr]
                10,
                "processed by the other client",
                interval=0.001,
            )
            latencies.append(time.monotonic() - sent)
        finish.set()
        wait_until(lambda: second.get_job(slow_id).status is JobStatus.PROCESSED, 10, "slow done")  # type: ignore[union-attr]
        assert ran.count("second") == 10 and "first" not in ran
        print(
            f"\nshutdown took {shutdown_took * 1000:.0f}ms; the other client then ran jobs in "
            f"{sorted(latencies)[5] * 1000:.1f}ms (median)"
        )
        assert sorted(latencies)[5] < 0.1
        wait_until(lambda: connections_of(pg_clean, first_app) == 0, 5, "the first client's sessions are gone")
    finally:
        second.shutdown()
    wait_until(lambda: connections_of(pg_clean, second_app) == 0, 5, "the second client's sessions are gone")


def test_no_connection_is_left_after_shutdown_even_with_an_abandoned_handler(pg_clean: str) -> None:
    app = unique_name()
    entered, release = threading.Event(), threading.Event()

    def stubborn(job: Job) -> None:
        context = neoq.job_context()
        assert context is not None
        context.transaction.execute("SELECT 1")
        entered.set()
        release.wait(10)  # ignores cancellation

    nq = neoq.new(pg_clean, application_name=app)
    nq.start("stubborn", stubborn, concurrency=2)
    nq.start("other", lambda job: None, concurrency=3)
    job_id = nq.enqueue(Job(queue="stubborn", payload={}))
    assert entered.wait(10)
    assert connections_of(pg_clean, app) >= 3
    nq.shutdown(timeout=0.2)
    try:
        wait_until(lambda: connections_of(pg_clean, app) == 0, 5, f"no session of {app} is left")
        with neoq.new(pg_clean, application_name=unique_name()) as again:
            job = again.get_job(job_id)
            assert job is not None and job.status is JobStatus.NEW and job.attempts == 1
    finally:
        release.set()


def test_backend_close_is_idempotent_and_release_after_close_is_tolerated(
    pg_clean: str, pg_backend_factory: Callable[..., PostgresBackend]
) -> None:
    backend = pg_backend_factory()
    prepared, _ = neoq.job.prepare_job(Job(queue="late", payload={}))
    backend.enqueue([prepared])
    claim = backend.claim("late", 5)
    assert claim is not None
    backend.close()
    backend.close()
    backend.release(claim)  # an abandoned handler thread returning late
    wait_until(lambda: connections_of(pg_clean, backend.application_name) == 0, 5, "no session left")
    with pytest.raises(neoq.BackendError):
        backend.claim("late", 0)


HOSTILE_QUEUES = [
    "it's",
    'say "hi"',
    "UPPER and lower",
    "  spaces  inside ",
    "ünïcödé ✓ 🎉 中文",
    "'; DROP TABLE neoq_jobs; --",
    "$1 %s %(x)s {}",
    "back\\slash",
    "q:colon:c:1",
    "x" * 128,
]


def test_hostile_queue_names_work_as_plain_names_end_to_end(pg_clean: str) -> None:
    seen: dict[str, Any] = {}
    done = threading.Event()

    def handler(job: Job) -> None:
        seen[job.queue] = job.payload
        if len(seen) == len(HOSTILE_QUEUES):
            done.set()

    with neoq.new(pg_clean, application_name=unique_name()) as nq:
        for queue in HOSTILE_QUEUES:
            nq.start(queue, handler, concurrency=1)
        ids = [nq.enqueue(Job(queue=queue, payload={"queue": queue})) for queue in HOSTILE_QUEUES]
        assert done.wait(20), f"ran only {sorted(seen)}"
        assert seen == {queue: {"queue": queue} for queue in HOSTILE_QUEUES}
        assert set(nq.stats()) == set(HOSTILE_QUEUES)
        for queue, job_id in zip(HOSTILE_QUEUES, ids, strict=True):
            assert [job.id for job in nq.list_jobs(queue=queue)] == [job_id]
    with psycopg.connect(pg_clean) as conn:
        assert conn.execute("SELECT count(*) FROM neoq_jobs").fetchone() == (len(HOSTILE_QUEUES),)


def test_any_json_payload_round_trips_exactly_up_to_more_than_a_mebibyte(pg_clean: str) -> None:
    big = {"blob": "é" * (700 * 1024), "list": list(range(20000)), "nested": [[{"a": [None, True, False]}]]}
    assert len(json.dumps(big).encode()) > 1024 * 1024
    payloads: list[dict[str, Any]] = [
        big,
        {"numbers": [0, -0.0, 1e16, 1.5e-300, -1.7976931348623157e308, 2**64, -(2**70), 0.1 + 0.2]},
        {"text": "\u2028\u2029\"'\\\n\t\r\x01 😀 \ud7ff", "": "empty key", "key with spaces": {}},
        {"z": 1, "a": 2, "m": {"y": [], "b": {}}},
        {"deep": [[[[[[[[[[{"x": "y"}]]]]]]]]]]},
    ]
    got: dict[int, Any] = {}
    done = threading.Event()

    def handler(job: Job) -> None:
        got[job.payload.get("index", -1)] = job.payload
        if len(got) == len(payloads):
            done.set()

    with neoq.new(pg_clean, application_name=unique_name()) as nq:
        nq.start("payloads", handler)
        for index, payload in enumerate(payloads):
            job_id = nq.enqueue(Job(queue="payloads", payload=dict(payload, index=index)))
            stored = nq.get_job(job_id)
            assert stored is not None
            assert json.dumps(stored.payload, sort_keys=True) == json.dumps(dict(payload, index=index), sort_keys=True)
            assert list(stored.payload) == [*payload, "index"], "key order changed"
        assert done.wait(20)
    for index, payload in enumerate(payloads):
        assert got[index] == dict(payload, index=index)
        assert json.dumps(got[index]) == json.dumps(dict(payload, index=index))


def test_migrations_apply_once_when_many_processes_start_at_once(pg_new_database: Callable[[], str]) -> None:
    url = pg_new_database()

    def open_close(n: int) -> None:
        backend = PostgresBackend(url, application_name=unique_name())
        backend.open()
        backend.close()

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(open_close, range(6)))
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT version, name FROM neoq_migrations").fetchall()
    assert rows[:5] == [
        (1, "initial"),
        (2, "lease"),
        (3, "attempts_in_the_claim"),
        (4, "attempts_lookup_by_index"),
        (5, "outcomes"),
    ]
    assert rows == [(version, name) for version, name, _ in available_migrations()]
    assert PostgresBackend(url).migrate() == []
