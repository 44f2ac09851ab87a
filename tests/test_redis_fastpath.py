"""The Redis backend's short ways: one job enqueued by enqueue_one.lua (the fingerprint taken with
HSETNX, an id given back on a duplicate), the enqueue that leases for this client's waiting claim
loops (a pickup in one round trip, pause and priorities kept), and the scripts' own connections
(a connection the server closed is connected again before use)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import redis
from redisfixtures import REDIS_TEST_DB

import neoq
from neoq import DuplicateJobError, Job, JobStatus
from neoq.backends.redis import RedisBackend
from neoq.backends.redis import scripts as scripts_module
from neoq.backends.redis.store import RedisLeaseStore
from neoq.testing import wait_for

pytestmark = pytest.mark.redis


def _backend(nq: neoq.Neoq) -> RedisBackend:
    backend = nq.backend
    assert isinstance(backend, RedisBackend) and backend._open is not None
    return backend


def _server(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url.split("?", 1)[0], decode_responses=True)


def test_a_duplicate_takes_no_id_and_a_unique_for_refusal_leaves_no_fingerprint(redis_url: str) -> None:
    with neoq.new(redis_url, check_config=False) as nq:
        first = int(nq.enqueue(Job(queue="d", payload={"n": 1})))
        with pytest.raises(DuplicateJobError) as dup:
            nq.enqueue(Job(queue="d", payload={"n": 1}))
        assert dup.value.job_id == str(first)
        windowed = int(nq.enqueue(Job(queue="d", payload={"n": 2}, unique_for=60)))
        assert windowed == first + 1  # the duplicate gave its id back
        nq.cancel_job(str(windowed))  # its fingerprint is free; its unique_for window is not
        with pytest.raises(DuplicateJobError, match="within its unique_for") as again:
            nq.enqueue(Job(queue="d", payload={"n": 2}, unique_for=60))
        assert again.value.job_id == str(windowed)
        settings = _backend(nq).settings
        server = _server(redis_url)
        try:
            fingerprints = server.hvals(settings.key("fp:d"))
        finally:
            server.close()
        assert fingerprints == [str(first)]  # the refused job's fingerprint was not left behind
        assert int(nq.enqueue(Job(queue="d", payload={"n": 3}))) == windowed + 1
        assert nq.stats()["d"]["new"] == 2 and nq.stats()["d"]["cancelled"] == 1


def _count_fetches(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    fetched: list[str] = []
    real = RedisLeaseStore.fetch

    def fetch(self: RedisLeaseStore, queue: str, *args: Any) -> Any:
        fetched.append(queue)
        return real(self, queue, *args)

    monkeypatch.setattr(RedisLeaseStore, "fetch", fetch)
    return fetched


def test_an_enqueue_leases_for_a_waiting_loop_of_this_client(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fetched = _count_fetches(monkeypatch)
    started, release = threading.Event(), threading.Event()
    runs: list[int] = []

    def handler(job: Job) -> None:
        runs.append(job.payload["n"])
        started.set()
        release.wait(10)

    with neoq.new(redis_url, check_config=False, poll_interval=60) as nq:
        backend = _backend(nq)
        nq.start("h", handler, concurrency=1)
        wait_for(lambda: fetched and backend.waiting.queue("h").claiming == 1, 10)  # looked once, waits
        before = len(fetched)
        job_id = nq.enqueue(Job(queue="h", payload={"n": 1}))
        running = nq.get_job(job_id)
        assert running is not None and running.status is JobStatus.RUNNING and running.attempts == 1
        assert started.wait(10) and runs == [1]
        assert len(fetched) == before  # the loop took the job the enqueue leased: no fetch of its own
        release.set()
        wait_for(lambda: nq.stats()["h"]["processed"] == 1, 10)


def test_the_enqueue_leases_nothing_for_a_paused_queue_and_the_highest_priority_first(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetched = _count_fetches(monkeypatch)
    order: list[str] = []
    release = threading.Event()

    def handler(job: Job) -> None:
        order.append(job.payload["name"])
        release.wait(10)

    with neoq.new(redis_url, check_config=False, poll_interval=60) as nq:
        backend = _backend(nq)
        nq.pause_queue("p")
        low = nq.enqueue(Job(queue="p", payload={"name": "low"}, priority=-5))
        nq.start("p", handler, concurrency=1)
        wait_for(lambda: fetched and backend.waiting.queue("p").claiming == 1, 10)
        waiting = nq.enqueue(Job(queue="p", payload={"name": "first"}))
        high = nq.enqueue(Job(queue="p", payload={"name": "high"}, priority=5))
        assert {nq.get_job(i).status for i in (low, waiting, high)} == {JobStatus.NEW}  # type: ignore[union-attr]
        nq.resume_queue("p")
        wait_for(lambda: order, 10)
        assert order == ["high"]  # the resumed loop's fetch: priority first
        release.set()
        wait_for(lambda: nq.stats()["p"]["processed"] == 3, 10)
        assert order == ["high", "first", "low"]


def test_a_connection_the_server_closed_is_connected_again_unless_it_was_just_used(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with neoq.new(redis_url, check_config=False) as nq:
        origin = _backend(nq)._open.origin  # type: ignore[union-attr]
        server = _server(redis_url)

        def kill() -> None:
            killed = server.client_kill_filter(_type="normal", skipme=True, client_name=f"neoq-{origin}")
            assert killed >= 1

        try:
            nq.enqueue(Job(queue="c", payload={"n": 1}))
            monkeypatch.setattr(scripts_module, "_FRESH", -1.0)  # every connection looked at before use
            kill()
            nq.enqueue(Job(queue="c", payload={"n": 2}))
            monkeypatch.setattr(scripts_module, "_FRESH", 3600.0)  # none looked at: used just now
            kill()
            with pytest.raises(neoq.BackendConnectionError):
                nq.enqueue(Job(queue="c", payload={"n": 3}))
            nq.enqueue(Job(queue="c", payload={"n": 4}))  # a connection that failed is looked at first
            assert nq.stats()["c"]["new"] == 3
        finally:
            server.close()


def test_the_scripts_connections_use_the_database_of_the_url(redis_url: str) -> None:
    with neoq.new(redis_url, check_config=False) as nq:
        job_id = nq.enqueue(Job(queue="db", payload={}))
        key = _backend(nq).settings.key(f"job:{job_id}")
        server = _server(redis_url)
        try:
            assert server.connection_pool.connection_kwargs["db"] == REDIS_TEST_DB
            assert server.exists(key) == 1
        finally:
            server.close()


def test_replies_are_read_as_redis_py_reads_them_whole_or_waiting_for_more() -> None:
    parse, more = scripts_module._parse, scripts_module._MORE
    replies = [
        (b":42\r\n", 42),
        (b"$5\r\nh\xc3\xa9ll\r\n", "héll"),
        (b"$-1\r\n", None),
        (b"_\r\n", None),
        (b"*3\r\n:1\r\n$0\r\n\r\n*1\r\n+OK\r\n", [1, "", ["OK"]]),
        (b"%1\r\n$1\r\nk\r\n#f\r\n", {"k": False}),
        (b"~2\r\n,1.5\r\n(7\r\n", [1.5, 7]),
        (b"=8\r\ntxt:text\r\n", "text"),
    ]
    for data, value in replies:
        assert parse(data, 0) == (value, len(data))
        for cut in range(len(data)):  # any part of a reply asks for more
            assert parse(data[:cut], 0)[0] is more, (data, cut)
    error, end = parse(b"-NOSCRIPT No matching script\r\n", 0)
    assert isinstance(error, scripts_module._Error) and end == 30
    assert isinstance(error.exception(None), redis.ResponseError)


@pytest.mark.parametrize("protocol", [2, 3])
def test_the_scripts_speak_either_protocol(redis_url: str, protocol: int) -> None:
    base, query = redis_url.split("?", 1)
    with neoq.new(f"{base}?protocol={protocol}&{query}", check_config=False) as nq:
        job_id = nq.enqueue(Job(queue="r", payload={"text": "é"}))
        with pytest.raises(DuplicateJobError):
            nq.enqueue(Job(queue="r", payload={"text": "é"}))
        job = nq.get_job(job_id)
        assert job is not None and job.payload == {"text": "é"} and job.error is None
        done = threading.Event()
        nq.start("r", lambda job: done.set())
        assert done.wait(10)
        wait_for(lambda: nq.stats()["r"]["processed"] == 1, 10)
