"""What the Redis backend adds to the suites: its URL and prefix, keys under the prefix and one
hash tag, fencing of a late settle, attempts counted at the lease, scripts loaded again after
NOSCRIPT, the durability warnings, no password in errors, connections closed at shutdown."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest
import redis
from redisfixtures import RedisServer, delete_prefix, free_port, redis_prefix

import neoq
from neoq import ConfigurationError, Job, JobStatus
from neoq.backends.base import Outcome
from neoq.backends.lease import LeaseToken, Settlement
from neoq.backends.redis import RedisBackend
from neoq.backends.redis.settings import namespace_of, parse_settings
from neoq.backends.redis.store import RedisLeaseStore
from neoq.job import prepare_job
from neoq.testing import wait_for

pytestmark = pytest.mark.redis


def test_the_prefix_comes_from_the_url_or_the_option_and_gets_a_hash_tag() -> None:
    assert parse_settings("redis://h:6379/2").namespace == "neoq:{neoq}:"
    assert parse_settings("redis://h/2?prefix=app:").namespace == "app:{app}:"
    assert parse_settings("redis://h/2", prefix="app").namespace == "app{app}:"
    assert namespace_of("{tenant7}:jobs:") == "{tenant7}:jobs:"
    assert parse_settings("unix:///run/redis.sock?db=3&prefix=x:").url == "unix:///run/redis.sock?db=3"
    assert parse_settings("rediss://h:6380/0").url == "rediss://h:6380/0"
    with pytest.raises(ConfigurationError, match="twice"):
        parse_settings("redis://h/0?prefix=a:", prefix="b:")
    with pytest.raises(ConfigurationError, match="lease must be at least"):
        RedisBackend("redis://h/0", lease=0.01)
    with pytest.raises(ConfigurationError, match="redis://, rediss:// or unix://"):
        RedisBackend("http://h/0")
    with pytest.raises(TypeError, match="unexpected keyword argument 'pool_size'"):
        RedisBackend("redis://h/0", pool_size=3)  # type: ignore[call-arg]


def test_neoq_new_finds_the_backend_by_each_scheme(redis_url: str) -> None:
    with neoq.new(redis_url, check_config=False) as nq:
        assert isinstance(nq.backend, RedisBackend)
        flow = {"priority", "pause", "snooze", "unique_for", "global_limit", "rate_limit"}
        assert nq.backend.capabilities == {"shared", "notify", *flow}
    for url in ("rediss://127.0.0.1:1/0", "unix:///nowhere.sock"):
        assert isinstance(RedisBackend.from_url(url), RedisBackend)


def test_every_key_starts_with_the_prefix_and_shares_one_hash_tag(redis_db_url: str) -> None:
    prefix = redis_prefix("keys")
    url = f"{redis_db_url}?prefix={prefix}"
    tag = prefix.rstrip(":")
    try:
        with neoq.new(url, check_config=False, lease=1) as nq:
            nq.enqueue_many([Job(queue="k", payload={"i": i}) for i in range(3)])
            nq.enqueue(Job(queue="k2", payload={}, run_after=datetime.now(timezone.utc) + timedelta(hours=1)))
            nq.start("k", lambda job: None)
            wait_for(lambda: nq.stats()["k"]["processed"] == 3, 10)
            nq.start_cron("* * * * * *", lambda job: None, queue="tick")
            wait_for(lambda: "tick" in nq.stats(), 10)
        client = redis.Redis.from_url(redis_db_url, decode_responses=True)
        try:
            keys = list(client.scan_iter(match=f"*{tag}*", count=1000))
        finally:
            client.close()
        assert keys
        assert all(key.startswith(f"{prefix}{{{tag}}}:") for key in keys), keys
    finally:
        delete_prefix(redis_db_url, prefix)


def test_a_late_settle_from_a_lost_lease_is_refused_and_attempts_count_at_the_lease(redis_url: str) -> None:
    backend = RedisBackend(redis_url, check_config=False)
    backend.open()
    try:
        job, _ = prepare_job(Job(queue="fence", payload={"x": 1}))
        (job_id,) = backend.enqueue([job])
        opened = backend._open
        assert opened is not None
        store = RedisLeaseStore(opened.scripts)
        first, _, _ = store.fetch("fence", 5, 0.05, "a")  # a lease of 50 ms
        assert [(j.id, j.attempts, j.status) for j, *_ in first] == [(job_id, 1, JobStatus.RUNNING)]
        assert backend.get_job(job_id).status is JobStatus.RUNNING  # type: ignore[union-attr]
        time.sleep(0.1)  # the lease runs out: the job is due again, for anyone
        assert backend.get_job(job_id).status is JobStatus.NEW  # type: ignore[union-attr]
        second, _, _ = store.fetch("fence", 5, 30, "b")
        (_, key, token2, due_at, _), (_, _, token1, _, _) = second[0], first[0]
        assert second[0][0].attempts == 2 and token2 > token1

        def lease(token: int) -> LeaseToken:
            return LeaseToken(backend, key, "fence", token, due_at)  # type: ignore[arg-type]

        late = Settlement(lease(token1), Outcome(JobStatus.FAILED, "RuntimeError: late"))
        assert store.settle_many([late]) == set()  # fenced off: the first holder lost its lease
        assert backend.get_job(job_id).status is JobStatus.RUNNING  # type: ignore[union-attr]
        assert store.settle_many([Settlement(lease(token2), Outcome(JobStatus.PROCESSED))]) == {key}
        done = backend.get_job(job_id)
        assert done is not None and done.status is JobStatus.PROCESSED and done.attempts == 2
    finally:
        backend.close()


def test_scripts_are_loaded_again_after_noscript_and_warnings_name_what_may_lose_jobs(
    redis_own_server: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_own_server(appendonly=False, extra=("--maxmemory-policy", "allkeys-lru"))
    with caplog.at_level(logging.WARNING, logger="neoq.backends.redis"):
        nq = neoq.new(server.url)
    try:
        text = caplog.text
        assert "appendonly off" in text and "maxmemory-policy allkeys-lru" in text
        caplog.clear()
        neoq.new(server.url).shutdown()  # once per server and process
        assert "appendonly" not in caplog.text
        nq.enqueue(Job(queue="s", payload={"n": 1}))
        admin = redis.Redis.from_url(server.url)
        try:
            admin.script_flush()  # as after a restart: every script is gone
        finally:
            admin.close()
        nq.enqueue(Job(queue="s", payload={"n": 2}))
        assert nq.stats()["s"]["new"] == 2
    finally:
        nq.shutdown()
    caplog.clear()
    durable = redis_own_server(appendonly=True)
    with caplog.at_level(logging.WARNING, logger="neoq.backends.redis"):
        neoq.new(durable.url).shutdown()
    assert "appendonly" not in caplog.text and "maxmemory" not in caplog.text


def test_no_password_in_errors_and_an_unreachable_server_fails_within_the_connect_timeout(
    redis_own_server: Callable[..., RedisServer],
) -> None:
    secret = "s3cr3t-pw"
    server = redis_own_server(extra=("--requirepass", "the-right-one"))
    with pytest.raises(neoq.BackendError) as wrong:
        neoq.new(f"redis://:{secret}@127.0.0.1:{server.port}/0?prefix=x:")
    assert secret not in str(wrong.value) and "invalid" in str(wrong.value).lower()
    with neoq.new(f"redis://:the-right-one@127.0.0.1:{server.port}/0?prefix=x:", check_config=False) as nq:
        nq.enqueue(Job(queue="a", payload={}))
    started = time.monotonic()
    with pytest.raises(neoq.BackendConnectionError) as refused:
        neoq.new(f"redis://user:{secret}@127.0.0.1:{free_port()}/0", connect_timeout=0.5)
    assert time.monotonic() - started < 5
    assert secret not in str(refused.value) and secret not in repr(RedisBackend(f"redis://u:{secret}@h/0"))


def _connections(url: str, name: str) -> int:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return sum(1 for entry in client.client_list() if entry.get("name") == name)
    finally:
        client.close()


def test_every_connection_is_closed_at_shutdown(redis_url: str) -> None:
    nq = neoq.new(redis_url, check_config=False)
    backend = nq.backend
    assert isinstance(backend, RedisBackend) and backend._open is not None
    name = f"neoq-{backend._open.origin}"
    nq.start("c", lambda job: None)
    nq.enqueue(Job(queue="c", payload={}))
    wait_for(lambda: nq.stats()["c"]["processed"] == 1, 10)
    server = redis_url.split("?", 1)[0]
    assert _connections(server, name) >= 2  # the wake-up connection and at least one more
    nq.shutdown()
    assert _connections(server, name) == 0


def test_a_namespace_runs_on_a_redis_cluster(redis_own_server: Callable[..., RedisServer]) -> None:
    nodes = [
        redis_own_server(extra=("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")) for _ in range(3)
    ]
    addresses = [f"127.0.0.1:{node.port}" for node in nodes]
    created = subprocess.run(
        ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stdout + created.stderr

    def ready() -> bool:
        for node in nodes:
            client = redis.Redis(port=node.port)
            try:
                if "cluster_state:ok" not in client.execute_command("CLUSTER", "INFO", NEVER_DECODE=True).decode():
                    return False
            finally:
                client.close()
        return True

    wait_for(ready, 30)
    served = set()
    for prefix in ("a:", "b:", "c:"):  # three slots, on three nodes
        served.add(redis.cluster.key_slot(f"{prefix}{{{prefix[:-1]}}}:seq".encode()) * 3 // 16384)
        _use_the_cluster(f"redis://127.0.0.1:{nodes[0].port}/0?cluster=true&prefix={prefix}")
    assert served == {0, 1, 2}


def _use_the_cluster(url: str) -> None:
    # The worker's timed look comes every 30 s: only the pub/sub wake-up can start the job soon.
    with neoq.new(url, check_config=False) as producer, neoq.new(url, check_config=False, poll_interval=30) as worker:
        done: list[str] = []
        worker.start("cq", lambda job: done.append(str(job.id)))
        wait_for(lambda: worker.backend.waiting.queue("cq").claiming > 0, 5)  # the worker waits
        sent = time.monotonic()
        job_id = producer.enqueue(Job(queue="cq", payload={}))
        wait_for(lambda: done == [job_id], 5)
        assert time.monotonic() - sent < 1.0
        later = datetime.now(timezone.utc) + timedelta(hours=1)
        waiting = producer.enqueue(Job(queue="later", payload={}, run_after=later))
        producer.cancel_job(waiting)
        wait_for(lambda: producer.stats()["cq"]["processed"] == 1, 5)
        assert producer.stats()["later"]["cancelled"] == 1
        assert [job.id for job in producer.list_jobs(limit=5)] == [waiting, job_id]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Python 3.12+ warns about forking with threads
def test_a_client_opened_before_fork_works_in_the_child_and_stays_usable_in_the_parent(redis_url: str) -> None:
    # An app server's way: the app (and its client) is loaded and used once, then workers are forked.
    with neoq.new(redis_url, check_config=False) as nq:
        nq.enqueue(Job(queue="before", payload={}))
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                ran: list[str] = []
                job_id = nq.enqueue(Job(queue="child", payload={"from": "child"}))
                nq.start("child", lambda job: ran.append(str(job.id)))
                wait_for(lambda: ran == [job_id], 10)
                nq.shutdown()
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert nq.stats()["child"]["processed"] == 1
        nq.start("before", lambda job: None)  # the parent's connections still work
        nq.enqueue(Job(queue="before", payload={"again": True}))
        wait_for(lambda: nq.stats()["before"]["processed"] == 2, 10)


def test_prune_forgets_unique_for_windows_older_than_the_failed_jobs_cutoff(redis_url: str) -> None:
    backend = RedisBackend(redis_url, check_config=False)
    backend.open()
    client = redis.Redis.from_url(redis_url.split("?")[0], decode_responses=True)
    try:
        hour = timedelta(hours=1)
        one, _ = prepare_job(Job(queue="a b", payload={"n": 1}, unique_for=hour))  # enqueue_one.lua
        batch = [prepare_job(Job(queue=q, payload={"n": 2}, unique_for=hour))[0] for q in ("a b", "c")]
        ids = backend.enqueue([one]) + backend.enqueue(batch)  # the batch script
        for job_id in ids:
            backend.cancel_job(job_id)
        key = backend._settings.key
        assert client.hlen(key("uf:a b")) == 2 and client.hlen(key("uf:c")) == 1
        before = datetime.now(timezone.utc) - hour
        backend.prune({JobStatus.FAILED: before}, 100)
        assert client.zcard(key("ufat")) == 3  # opened after the cutoff: kept
        with pytest.raises(neoq.DuplicateJobError):
            backend.enqueue([one])
        backend.prune({JobStatus.FAILED: datetime.now(timezone.utc) + timedelta(seconds=1)}, 100)
        assert client.exists(key("uf:a b"), key("uf:c"), key("ufat")) == 0
        assert backend.enqueue([one])  # its window is forgotten, as retention_failed documents
    finally:
        client.close()
        backend.close()
