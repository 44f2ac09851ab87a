"""Flow control on MySQL/MariaDB beyond the suites: across clients, race-free, in the caller's transaction."""

from __future__ import annotations

import threading
import time

import pytest
from myfixtures import connect

import neoq
from neoq import DuplicateJobError, Handler, Job, JobStatus, RateLimit
from neoq.testing import wait_for

pytestmark = pytest.mark.mysql

MODES = ["lease", "transaction"]


@pytest.mark.parametrize("mode", MODES)
def test_a_pause_holds_for_every_client_until_resumed(mysql_clean: str, mode: str) -> None:
    ran: list[str] = []
    with neoq.new(mysql_clean, mode=mode) as worker, neoq.new(mysql_clean) as admin:
        worker.start("shared_pause", Handler(lambda job: ran.append(job.id or ""), concurrency=4))
        admin.pause_queue("shared_pause")
        assert worker.paused_queues() == {"shared_pause"}
        ids = admin.enqueue_many([Job(queue="shared_pause", payload={"n": n}) for n in range(5)])
        time.sleep(0.5)  # watched: nothing may start while paused
        assert ran == []
        assert {job.status for job in map(admin.get_job, ids) if job is not None} == {JobStatus.NEW}
        admin.resume_queue("shared_pause")  # no notification: the worker's poll finds it
        wait_for(lambda: len(ran) == 5, 10)


def test_jobs_leased_ahead_go_back_when_another_client_pauses(mysql_clean: str) -> None:
    started: list[str] = []
    gate = threading.Event()

    def handler(job: Job) -> None:
        started.append(job.id or "")
        gate.wait(10)

    with neoq.new(mysql_clean, lease=5) as worker, neoq.new(mysql_clean) as admin:
        admin.enqueue_many([Job(queue="ahead", payload={"n": n}) for n in range(20)])
        worker.start("ahead", Handler(handler, concurrency=2))  # leases ahead (prefetch: its concurrency)
        wait_for(lambda: len(started) == 2, 10)
        admin.pause_queue("ahead")
        time.sleep(0.3)  # the worker's looks read the paused queues every poll_interval
        gate.set()
        wait_for(lambda: admin.stats()["ahead"]["processed"] == 2, 10)
        time.sleep(0.3)
        assert len(started) == 2
        assert admin.stats()["ahead"]["new"] == 18 and admin.stats()["ahead"]["running"] == 0


def test_unique_for_lets_exactly_one_of_concurrent_enqueues_in(mysql_clean: str) -> None:
    clients = [neoq.new(mysql_clean) for _ in range(6)]
    outcomes: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(clients))

    def enqueue(nq: neoq.Neoq) -> None:
        barrier.wait()
        for _ in range(5):
            try:
                nq.enqueue(Job(queue="race", payload={}, fingerprint="same", unique_for=60))
                result = "in"
            except DuplicateJobError:
                result = "refused"
            with lock:
                outcomes.append(result)

    try:
        threads = [threading.Thread(target=enqueue, args=(nq,)) for nq in clients]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for nq in clients:
            nq.shutdown()
    assert outcomes.count("in") == 1 and outcomes.count("refused") == 29


def test_unique_for_holds_whatever_became_of_the_job_and_in_the_callers_transaction(mysql_clean: str) -> None:
    with neoq.new(mysql_clean) as nq:
        first = nq.enqueue(Job(queue="uniq_tx", payload={}, fingerprint="k", unique_for=60))
        nq.cancel_job(first)
        conn = connect(mysql_clean)
        try:
            with pytest.raises(DuplicateJobError) as info:
                nq.enqueue(Job(queue="uniq_tx", payload={}, fingerprint="k", unique_for=60), connection=conn)
            assert info.value.job_id == first
            conn.rollback()
            # Another key in the caller's transaction: stored once it commits, its window with it.
            second = nq.enqueue(Job(queue="uniq_tx", payload={}, fingerprint="j", unique_for=60), connection=conn)
            conn.commit()
        finally:
            conn.close()
        with pytest.raises(DuplicateJobError):
            nq.enqueue(Job(queue="uniq_tx", payload={}, fingerprint="j", unique_for=60))
        assert nq.get_job(second) is not None


@pytest.mark.parametrize("mode", MODES)
def test_a_rate_limit_is_shared_by_two_clients(mysql_clean: str, mode: str) -> None:
    starts: list[float] = []
    lock = threading.Lock()

    def handler(job: Job) -> None:
        with lock:
            starts.append(time.monotonic())

    rate = RateLimit(4, 1.0)  # counted 50 ms longer: a loaded machine's delay from the start taken to the handler
    clients = [neoq.new(mysql_clean, mode=mode) for _ in range(2)]
    try:
        for nq in clients:
            nq.start("rated_two", Handler(handler, concurrency=3, rate_limit=rate))
        clients[0].enqueue_many([Job(queue="rated_two", payload={"n": n}) for n in range(12)])
        wait_for(lambda: clients[0].stats()["rated_two"]["processed"] == 12, 30)
        ordered = sorted(starts)
        busiest = max(sum(1 for s in ordered if first <= s < first + 1.0) for first in ordered)
        assert busiest <= 4
        jobs = clients[0].list_jobs(queue="rated_two", limit=20)
        assert {job.attempts for job in jobs} == {1}
    finally:
        for nq in clients:
            nq.shutdown()


@pytest.mark.parametrize("mode", MODES)
def test_a_global_limit_is_shared_by_two_clients(mysql_clean: str, mode: str) -> None:
    lock = threading.Lock()
    running = [0]
    peak = [0]

    def handler(job: Job) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1

    clients = [neoq.new(mysql_clean, mode=mode) for _ in range(2)]
    try:
        for nq in clients:
            nq.start("limited_two", Handler(handler, concurrency=4, global_limit=3))
        clients[0].enqueue_many([Job(queue="limited_two", payload={"n": n}) for n in range(30)])
        wait_for(lambda: clients[0].stats()["limited_two"]["processed"] == 30, 60)
        assert peak[0] == 3
    finally:
        for nq in clients:
            nq.shutdown()


def test_prune_forgets_closed_unique_for_windows_only(mysql_clean: str) -> None:
    with neoq.new(mysql_clean) as nq:
        nq.enqueue(Job(queue="windows", payload={}, fingerprint="short", unique_for=0.2))
        nq.enqueue(Job(queue="windows", payload={}, fingerprint="long", unique_for=60))
        time.sleep(0.3)  # the short window closes
        nq.backend.prune({}, 100)
        conn = connect(mysql_clean)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT fingerprint FROM neoq_unique_windows WHERE queue = 'windows'")
                assert [row[0] for row in cur.fetchall()] == [b"long"]
        finally:
            conn.close()
