"""The backends' dashboard half (capabilities "dashboard" and "workers") on memory and PostgreSQL:
search paged by key, summaries, activity, bulk actions, and the worker registry kept by the runtime."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import neoq
from neoq import Job, JobStatus
from neoq.backends.search import JobQuery, JobSearch, WorkerInfo, WorkerRegistry
from neoq.testing import wait_for


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest) -> str:
    return "memory://" if request.param == "memory" else str(request.getfixturevalue("pg_clean"))


@pytest.fixture
def nq(url: str) -> Iterator[neoq.Neoq]:
    client = neoq.new(url)
    try:
        yield client
    finally:
        client.shutdown(timeout=5)


def _search(nq: neoq.Neoq) -> Any:
    assert {"dashboard", "workers"} <= nq.backend.capabilities
    assert isinstance(nq.backend, JobSearch) and isinstance(nq.backend, WorkerRegistry)
    return nq.backend


def _ids(page: Any) -> list[str]:
    return [job.id for job in page.jobs]


def test_search_pages_by_key_and_filters(nq: neoq.Neoq) -> None:
    search = _search(nq)
    ids = nq.enqueue_many([Job(queue="s-a" if n % 2 else "s-b", payload={"n": n, "tag": f"t{n}"}) for n in range(25)])
    newest_first = list(reversed(ids))
    seen: list[str] = []
    query = JobQuery(limit=10)
    while True:
        page = search.search_jobs(query)
        seen += _ids(page)
        if page.next is None:
            break
        query = dataclasses.replace(query, before=page.next)
    assert seen == newest_first
    assert _ids(search.search_jobs(JobQuery(queue="s-a", limit=100))) == [
        i for i in newest_first if int(i) % 2 == int(ids[1]) % 2
    ]
    assert _ids(search.search_jobs(JobQuery(text="T13"))) == [ids[13]]  # case-insensitive, in the payload
    assert _ids(search.search_jobs(JobQuery(status=JobStatus.FAILED))) == []
    future = datetime.now(timezone.utc) + timedelta(hours=1)
    assert _ids(search.search_jobs(JobQuery(since=future))) == []
    assert len(_ids(search.search_jobs(JobQuery(until=future, limit=100)))) == 25
    assert _ids(search.search_jobs(JobQuery(before="not-an-id"))) == []


def test_summaries_activity_and_bulk_actions(nq: neoq.Neoq) -> None:
    search = _search(nq)
    bad = nq.enqueue_many([Job(queue="b-fail", payload={"n": n}, max_retries=0) for n in range(3)])
    nq.enqueue_many([Job(queue="b-ok", payload={"n": n}) for n in range(4)])
    waiting = nq.enqueue_many([Job(queue="b-wait", payload={"n": n}) for n in range(5)])
    nq.start("b-fail", lambda job: 1 / 0, max_retries=0)
    nq.start("b-ok", lambda job: None)
    wait_for(
        lambda: nq.stats().get("b-fail", {}).get("failed") == 3 and nq.stats()["b-ok"]["processed"] == 4, timeout=10
    )
    summaries = {summary.queue: summary for summary in search.queue_summaries()}
    assert summaries["b-fail"].counts == {"new": 0, "running": 0, "processed": 0, "failed": 3, "cancelled": 0}
    assert summaries["b-wait"].counts["new"] == 5
    oldest = summaries["b-wait"].oldest_waiting
    assert oldest is not None and oldest <= datetime.now(timezone.utc) + timedelta(seconds=1)
    assert summaries["b-ok"].oldest_waiting is None
    minutes = search.activity(datetime.now(timezone.utc) - timedelta(hours=1))
    assert sum(item.processed for item in minutes) >= 4 and sum(item.failed for item in minutes) == 3
    assert sum(item.failed for item in search.activity(datetime.now(timezone.utc) - timedelta(hours=1), "b-ok")) == 0
    # Bulk cancel of one queue's waiting jobs; bulk retry of the failed ones (they fail again).
    assert search.bulk_cancel(JobQuery(queue="b-wait", status=JobStatus.NEW), 3) == 3
    assert sorted(nq.get_job(i).status.value for i in waiting) == ["cancelled"] * 3 + ["new"] * 2  # type: ignore[union-attr]
    assert search.bulk_retry(JobQuery(queue="b-fail"), 100) == 3
    wait_for(
        lambda: all(nq.get_job(i).attempts == 1 and nq.get_job(i).status is JobStatus.FAILED for i in bad), timeout=10
    )  # type: ignore[union-attr]
    assert search.bulk_retry(JobQuery(queue="b-wait", status=JobStatus.NEW), 100) == 0  # only finished jobs


def test_the_runtime_announces_its_worker_and_forgets_it_at_shutdown(nq: neoq.Neoq, url: str) -> None:
    registry = _search(nq)
    assert [w for w in registry.list_workers() if w.pid == os.getpid()] == []
    nq.start("w-one", lambda job: None, concurrency=3)
    nq.start("w-two", lambda job: time.sleep(0.5), concurrency=2)
    mine = wait_for(lambda: [w for w in registry.list_workers() if w.pid == os.getpid()])
    assert len(mine) == 1 and mine[0].queues == {"w-one": 3, "w-two": 2} and mine[0].concurrency == 5
    assert mine[0].started_at is not None and mine[0].last_seen is not None
    nq.shutdown(timeout=5)
    if url == "memory://":  # the private store keeps its records after close
        assert [w for w in registry.list_workers() if w.pid == os.getpid()] == []
    else:  # a shared store: another client sees this process gone
        with neoq.new(url) as other:
            assert [w for w in other.backend.list_workers() if w.pid == os.getpid()] == []  # type: ignore[attr-defined]


def test_a_worker_that_stops_beating_is_forgotten(nq: neoq.Neoq) -> None:
    registry = _search(nq)
    gone = WorkerInfo("elsewhere:4242:dead", "elsewhere", 4242, {"q": 1})
    registry.announce_worker(gone)
    assert [w.id for w in registry.list_workers()] == ["elsewhere:4242:dead"]
    time.sleep(1.1)
    assert registry.list_workers(ttl=1.0) == []
    assert registry.list_workers() == []  # forgotten for good, not only hidden
    registry.forget_worker("never-announced")  # unknown ids are ignored


def _worker_process(url: str) -> subprocess.Popen[str]:
    tests = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": f"{tests}{os.pathsep}{tests.parent}"}
    return subprocess.Popen(
        [sys.executable, "-m", "neoq", "--url", url, "worker", "cli_app:make"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )


@pytest.mark.postgres
def test_a_worker_process_is_listed_while_it_lives(pg_clean: str) -> None:
    """Another process's worker: listed with its queues, forgotten at once when it stops, and
    forgotten after the time to live when it is killed (it cannot say goodbye)."""
    with neoq.new(pg_clean) as reader:
        registry: Any = reader.backend
        for ending in (signal.SIGTERM, signal.SIGKILL):
            process = _worker_process(pg_clean)
            try:
                pid = process.pid
                # Announced with its first queue, then again with each one it starts.
                wait_for(
                    lambda pid=pid: [w for w in registry.list_workers() if w.pid == pid and len(w.queues) == 2],
                    timeout=30,
                )
                assert [w.queues for w in registry.list_workers() if w.pid == pid] == [{"work": 2, "other": 4}]
            finally:
                process.send_signal(ending)
                process.wait(timeout=30)
            if ending == signal.SIGTERM:
                assert [w for w in registry.list_workers() if w.pid == process.pid] == []
            else:
                assert [w.pid for w in registry.list_workers()] == [process.pid]  # silent, not yet forgotten
                time.sleep(1.2)
                assert registry.list_workers(ttl=1.0) == []


@pytest.mark.parametrize("mode", ["transaction", "lease"])
def test_running_jobs_are_found_in_every_mode(url: str, mode: str) -> None:
    if mode == "lease" and url == "memory://":
        pytest.skip("memory:// has one mode")
    release = threading.Event()
    options = {} if mode == "transaction" else {"mode": "lease"}
    with neoq.new(url, **options) as nq:
        search = _search(nq)
        running = nq.enqueue(Job(queue="r-busy", payload={"n": 0}))
        waiting = nq.enqueue_many([Job(queue="r-busy", payload={"n": n}) for n in range(1, 4)])
        nq.start("r-busy", lambda job: release.wait(30), concurrency=1)
        try:
            wait_for(lambda: _ids(search.search_jobs(JobQuery(status=JobStatus.RUNNING))) == [running], timeout=10)
            assert _ids(search.search_jobs(JobQuery(status=JobStatus.NEW))) == list(reversed(waiting))
            summary = {s.queue: s for s in search.queue_summaries()}["r-busy"]
            assert summary.counts["running"] == 1 and summary.counts["new"] == 3
            assert summary.oldest_waiting is not None
        finally:
            release.set()


@pytest.mark.postgres
def test_a_running_job_with_a_priority_is_found_behind_a_long_queue(pg_clean: str, monkeypatch: Any) -> None:
    from neoq.backends.postgres import search as pg_search

    monkeypatch.setattr(pg_search, "RUNNING_HEAD", 2)  # the head looked at: shorter than the queue
    release = threading.Event()
    with neoq.new(pg_clean) as nq:
        search = _search(nq)
        nq.enqueue_many([Job(queue="r-prio", payload={"n": n}) for n in range(4)])
        urgent = nq.enqueue(Job(queue="r-prio", payload={"urgent": True}, priority=10))
        nq.start("r-prio", lambda job: release.wait(30), concurrency=1)
        try:
            wait_for(lambda: _ids(search.search_jobs(JobQuery(status=JobStatus.RUNNING))) == [urgent], timeout=10)
            assert {s.queue: s for s in search.queue_summaries()}["r-prio"].counts["running"] == 1
        finally:
            release.set()
