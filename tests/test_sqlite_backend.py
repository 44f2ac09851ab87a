"""SQLite backend details: the command line on a file, a forked child, leases taken over, cancel and
pickup timings, a retry's due time kept in the file."""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cli_helpers import run_neoq

import neoq
from neoq import Handler, Job, JobStatus
from neoq.backends import Outcome
from neoq.backends.lease import LeaseToken, Settlement
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


def _in_a_forked_child(work: Callable[[], object]) -> tuple[int, object]:
    """Run ``work`` in a child forked now: its exit code, and what it returned (as JSON)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(read)
            os.write(write, json.dumps(work()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    answer = json.loads(os.read(read, 1000) or b"null")
    os.close(read)
    return os.waitstatus_to_exitcode(status), answer


def test_a_forked_child_uses_its_own_connections_and_threads(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    with neoq.new(url) as nq:
        seen: list[str] = []
        nq.start("parent", Handler(lambda job: seen.append(job.payload["who"]), concurrency=2))
        nq.enqueue(Job(queue="parent", payload={"who": "before"}))
        wait_for(lambda: seen == ["before"], 10)

        def in_the_child() -> object:
            child = nq.backend
            (job_id,) = child.enqueue([prepare_job(Job(queue="child", payload={"n": 1}))[0]])
            claim = child.look("child").claim
            assert claim is not None and claim.job.id == job_id
            child.settle(claim, Outcome(JobStatus.PROCESSED))
            job = child.get_job(job_id)
            child.close()
            return [job_id, job.status.value if job else None]

        code, answer = _in_a_forked_child(in_the_child)
        assert code == 0
        assert answer[1] == "processed"  # type: ignore[index]
        assert nq.get_job(answer[0]).status is JobStatus.PROCESSED  # type: ignore[index, union-attr]
        nq.enqueue(Job(queue="parent", payload={"who": "after"}))  # the parent goes on as before
        wait_for(lambda: seen == ["before", "after"], 10)


def test_a_fork_waits_for_a_write_under_way_so_the_child_can_write(tmp_path: Path) -> None:
    # SQLite keeps a file's locks in the process's memory too: a child forked while a thread of its
    # parent was inside a write would inherit "the write lock is held" and wait out busy_timeout.
    backend = SqliteBackend(str(tmp_path / "jobs.db"), busy_timeout=3)
    backend.open()
    try:
        conns = backend._conns
        assert conns is not None
        inside, go = threading.Event(), threading.Event()

        def slow_write(conn: object) -> None:
            inside.set()
            go.wait(10)

        writer = threading.Thread(target=conns.write, args=(slow_write, "a slow write"))
        writer.start()
        assert inside.wait(10)
        threading.Timer(0.2, go.set).start()  # the write ends while fork() waits for it

        def in_the_child() -> object:
            ended_before_the_fork = go.is_set()  # the parent's memory as it was at the fork
            (job_id,) = backend.enqueue([prepare_job(Job(queue="child", payload={}))[0]])
            return [ended_before_the_fork, job_id]

        code, answer = _in_a_forked_child(in_the_child)
        writer.join(10)
        assert code == 0
        assert answer[0] is True  # type: ignore[index]  # fork() waited for the write to end
        assert backend.get_job(answer[1]) is not None  # type: ignore[index]
    finally:
        backend.close()


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


def test_a_large_batch_keeps_its_order_and_a_duplicate_in_its_last_chunk_stores_nothing(tmp_path: Path) -> None:
    with neoq.new(f"sqlite:///{tmp_path / 'jobs.db'}") as nq:
        # 250 jobs: three multi-row INSERTs (100, 100, 50); each id names the job at its place.
        ids = nq.enqueue_many([Job(queue="q", payload={"i": i}) for i in range(250)])
        assert len(ids) == 250 and [int(job_id) for job_id in ids] == list(range(int(ids[0]), int(ids[0]) + 250))
        for index in (0, 99, 100, 199, 200, 249):
            assert nq.get_job(ids[index]).payload == {"i": index}  # type: ignore[union-attr]
        batch = [Job(queue="q", payload={"j": i}) for i in range(230)] + [Job(queue="q", payload={"i": 3})]
        try:
            nq.enqueue_many(batch)
        except neoq.DuplicateJobError as exc:
            assert exc.job_id == ids[3]
        else:  # pragma: no cover - the test's failure
            raise AssertionError("the duplicate was stored")
        assert nq.stats()["q"]["new"] == 250


def test_one_settling_write_fences_each_outcome_of_a_batch_of_several_statements(tmp_path: Path) -> None:
    backend = SqliteBackend(str(tmp_path / "jobs.db"))
    backend.open()
    try:
        ids = backend.enqueue([prepare_job(Job(queue="q", payload={"i": i}))[0] for i in range(150)])
        store = backend._lease_store()
        leased = store.fetch("q", 100, 30.0, "me")[0] + store.fetch("q", 100, 30.0, "me")[0]
        assert [item[1] for item in leased] == [int(job_id) for job_id in ids]  # claim order: oldest first
        engine = backend._engine
        assert engine is not None
        batch = []
        for index, (_job, key, token, due_at, _) in enumerate(leased):
            stale = index % 7 == 3  # a lost lease: its token is not the job's any more
            lease = LeaseToken(engine, key, "q", token - 1 if stale else token, due_at, leased_at=0.0)
            if index % 5 == 0:
                outcome = Outcome(JobStatus.NEW, "Boom: again", retries=1, run_after=due_at + timedelta(hours=1))
            elif index % 5 == 1:
                outcome = Outcome(JobStatus.FAILED, "Boom: done", traceback="tb")
            else:
                outcome = Outcome(JobStatus.PROCESSED, result=json.dumps({"n": index}))
            batch.append(Settlement(lease, outcome))
        written = store.settle_many(batch)
        assert written == {key for index, (_, key, *_rest) in enumerate(leased) if index % 7 != 3}
        for index, job_id in enumerate(ids):
            job = backend.get_job(job_id)
            assert job is not None
            if index % 7 == 3:
                assert job.status is JobStatus.RUNNING and job.error is None, (index, job)
            elif index % 5 == 0:
                assert job.status is JobStatus.NEW and job.retries == 1 and job.error == "Boom: again", (index, job)
                assert job.finished_at is None and job.run_after == leased[index][3] + timedelta(hours=1)
            elif index % 5 == 1:
                assert job.status is JobStatus.FAILED and job.traceback == "tb" and job.finished_at is not None
                assert job.run_after == leased[index][3]
            else:
                assert job.status is JobStatus.PROCESSED and job.result == {"n": index} and job.error is None
    finally:
        backend.close()


def test_a_claim_reads_each_priority_range_through_its_index(tmp_path: Path) -> None:
    from neoq.backends.sqlite.leasestore import _PICK

    backend = SqliteBackend(str(tmp_path / "jobs.db"))
    backend.open()
    try:
        backend.enqueue([prepare_job(Job(queue="q", payload={"i": i}, priority=i % 3 - 1))[0] for i in range(9)])
        plan = backend._conns.read(  # type: ignore[union-attr]
            lambda conn: conn.execute("EXPLAIN QUERY PLAN " + _PICK, {"queue": "q", "now": 0, "room": 5}).fetchall(),
            "explaining",
        )
        steps = [row[3] for row in plan]
        # Never a walk over every due job of the queue to find the few of another priority.
        assert sum("USING INDEX neoq_jobs_due_priority" in step for step in steps) == 2, steps
        store = backend._lease_store()
        leased = store.fetch("q", 9, 30.0, "me")[0]
        assert [job.priority for job, *_ in leased] == [1, 1, 1, 0, 0, 0, -1, -1, -1]
    finally:
        backend.close()


def test_the_clients_own_checkpoints_keep_the_wal_small(tmp_path: Path) -> None:
    # SQLite's automatic checkpoint is off on neoq's connections (it would run inside a commit, under
    # the client's write lock); the pool makes them itself. Without them the WAL would grow by every
    # page written: 3,000 single enqueues write about 50 MB of frames.
    path = tmp_path / "jobs.db"
    with neoq.new(f"sqlite:///{path}") as nq:
        for i in range(3000):
            nq.enqueue(Job(queue="q", payload={"i": i}))
        wal = Path(f"{path}-wal").stat().st_size
        assert wal < 16 * 2**20, wal
        assert nq.stats()["q"]["new"] == 3000
