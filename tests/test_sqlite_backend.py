"""SQLite backend details: the command line on a file, a forked child, leases taken over, cancel and
pickup timings, a retry's due time kept in the file."""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cli_helpers import run_neoq

import neoq
from neoq import Handler, Job, JobStatus
from neoq.backends import Outcome
from neoq.backends.lease import Settlement
from neoq.backends.sqlite import SqliteBackend
from neoq.backends.sqlite.leasestore import SqliteLeaseStore
from neoq.job import prepare_job
from neoq.testing import wait_for


def test_the_command_line_works_on_a_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    stats = run_neoq(["--url", url, "stats"])
    assert stats.returncode == 1 and "migrate" in stats.stderr, stats.stderr  # a new file: no schema yet
    assert not (tmp_path / "jobs.db").exists(), "stats changed nothing"
    migrated = run_neoq(["--url", url, "migrate"])
    assert migrated.returncode == 0, migrated.stderr
    enqueued = run_neoq(["--url", url, "enqueue", "mail", '{"to": 7}'])
    assert enqueued.returncode == 0, enqueued.stderr
    job_id = enqueued.stdout.strip()
    with neoq.new(url) as nq:
        job = nq.get_job(job_id)
        assert job is not None and job.payload == {"to": 7} and job.status is JobStatus.NEW
    shown = run_neoq(["--url", url, "stats"])
    assert shown.returncode == 0 and "mail" in shown.stdout, shown.stderr
    cancelled = run_neoq(["--url", url, "jobs", "cancel", job_id])
    assert cancelled.returncode == 0, cancelled.stderr
    with neoq.new(url) as nq:
        assert nq.get_job(job_id).status is JobStatus.CANCELLED  # type: ignore[union-attr]


def test_a_forked_child_uses_its_own_connections_and_threads(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    with neoq.new(url) as nq:
        seen: list[str] = []
        nq.start("parent", Handler(lambda job: seen.append(job.payload["who"]), concurrency=2))
        nq.enqueue(Job(queue="parent", payload={"who": "before"}))
        wait_for(lambda: seen == ["before"], 10)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                os.close(read)
                child = nq.backend
                (job_id,) = child.enqueue([prepare_job(Job(queue="child", payload={"n": 1}))[0]])
                claim = child.look("child").claim
                assert claim is not None and claim.job.id == job_id
                child.settle(claim, Outcome(JobStatus.PROCESSED))
                job = child.get_job(job_id)
                os.write(write, json.dumps([job_id, job.status.value if job else None]).encode())
                child.close()
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        _, status = os.waitpid(pid, 0)
        answer = json.loads(os.read(read, 1000) or b"null")
        os.close(read)
        assert os.waitstatus_to_exitcode(status) == 0
        assert answer[1] == "processed"
        assert nq.get_job(answer[0]).status is JobStatus.PROCESSED  # type: ignore[union-attr]
        nq.enqueue(Job(queue="parent", payload={"who": "after"}))  # the parent goes on as before
        wait_for(lambda: seen == ["before", "after"], 10)


def test_a_lease_that_ran_out_is_taken_over_and_the_old_outcome_is_fenced_off(tmp_path: Path) -> None:
    path = str(tmp_path / "jobs.db")
    first, second = SqliteBackend(path, lease=0.3), SqliteBackend(path, lease=0.3)
    first.open()
    second.open()
    try:
        (job_id,) = first.enqueue([prepare_job(Job(queue="q", payload={}))[0]])
        lost = first.look("q").claim
        assert lost is not None and lost.job.attempts == 1
        engine = first._engine
        assert engine is not None
        engine.release(lost)  # no longer renewed: as if its process froze
        assert second.get_job(job_id).status is JobStatus.RUNNING  # type: ignore[union-attr]
        assert second.look("q").claim is None
        again = wait_for(lambda: second.look("q").claim, 5)
        assert again.job.id == job_id and again.job.attempts == 2
        # The first holder's late outcome names the old token: the store writes nothing.
        store = SqliteLeaseStore(first._conns, lambda queue, delay: None)  # type: ignore[arg-type]
        assert store.settle_many([Settlement(lost.token, Outcome(JobStatus.FAILED, "Boom: late"))]) == set()
        assert second.get_job(job_id).status is JobStatus.RUNNING  # type: ignore[union-attr]
        second.settle(again, Outcome(JobStatus.PROCESSED))
        job = second.get_job(job_id)  # reads wait for the batched outcomes of this client
        assert job is not None and job.status is JobStatus.PROCESSED and job.error is None and job.attempts == 2
    finally:
        first.close()
        second.close()


def test_a_retry_is_due_at_its_time_in_another_process(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    starts: list[float] = []

    def flaky(job: Job) -> None:
        starts.append(time.monotonic())
        if job.retries == 0:
            raise RuntimeError("once")

    with neoq.new(url) as nq:
        nq.start("flaky", Handler(flaky, backoff=lambda retries: 0.5))
        job_id = nq.enqueue(Job(queue="flaky", payload={}))
        wait_for(lambda: nq.get_job(job_id).status is JobStatus.PROCESSED, 10)  # type: ignore[union-attr]
    assert 0.5 <= starts[1] - starts[0] < 0.5 + 0.3, starts


def test_cancel_reaches_a_running_handler_within_a_second_and_pickup_is_quick(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    started = threading.Event()
    stopped: list[float] = []

    def long(job: Job) -> None:
        started.set()
        context = neoq.job_context()
        assert context is not None
        if context.cancelled.wait(10):
            stopped.append(time.monotonic())

    delays: list[float] = []
    with neoq.new(url) as worker, neoq.new(url) as producer:
        worker.start("long", long)
        worker.start("quick", lambda job: delays.append(time.time() - job.payload["t"]))
        job_id = producer.enqueue(Job(queue="long", payload={}))
        assert started.wait(5)
        cancelled_at = time.monotonic()
        producer.cancel_job(job_id)
        wait_for(lambda: stopped, 5)
        assert stopped[0] - cancelled_at < 1.0
        wait_for(lambda: producer.get_job(job_id).status is JobStatus.CANCELLED, 5)  # type: ignore[union-attr]
        for i in range(20):  # another client: seen by the worker's watcher, not by a signal of its own
            producer.enqueue(Job(queue="quick", payload={"i": i, "t": time.time()}))
            time.sleep(0.02)
        wait_for(lambda: len(delays) == 20, 10)
    assert statistics.median(delays) < 0.1, delays


def test_future_jobs_start_on_time_when_another_client_enqueued_them(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    ran: list[datetime] = []
    with neoq.new(url) as worker, neoq.new(url) as producer:
        worker.start("later", lambda job: ran.append(datetime.now(timezone.utc)))
        time.sleep(0.05)
        when = datetime.now(timezone.utc) + timedelta(seconds=0.6)
        producer.enqueue(Job(queue="later", payload={}, run_after=when))
        wait_for(lambda: ran, 5)
    assert when <= ran[0] < when + timedelta(seconds=0.3)
