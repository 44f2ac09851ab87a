"""The in-memory backend's claims and the watchdog, under concurrency.

Claims of due jobs and the settle of processed ones do not take the store's lock (whoever pops a
job's live entry owns it, see ``neoq/backends/memory/``); these tests race them against the
locked operations and check that no job runs twice, none is lost, and timeouts still fire on time.
"""

from __future__ import annotations

import collections
import threading
import time

import neoq
from neoq import Handler, Job, JobStatus
from neoq.testing import wait_for


def test_cancel_races_with_claims_and_nothing_runs_twice_or_is_lost() -> None:
    n = 3000
    runs: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def handler(job: Job) -> None:
        with lock:
            runs[job.id or ""] += 1
        time.sleep(0.0002)  # slow enough that the cancels below meet the claims midway

    with neoq.new(retention_processed=None, retention_failed=None) as nq:
        ids = nq.enqueue_many([Job(queue="race", payload={"i": i}) for i in range(n)])
        nq.start("race", Handler(handler, concurrency=8, max_retries=0))
        for job_id in ids[::-3]:  # from the last job back: the cancels meet eight claim loops
            nq.cancel_job(job_id)
        wait_for(lambda: nq.stats().get("race", {}).get("new", 1) == 0, timeout=60)
        # Every job settled: new and running both 0 (the last claims may still run after new is 0).
        wait_for(lambda: nq.stats()["race"]["running"] == 0 and sum(nq.stats()["race"].values()) == n)
        statuses = {job_id: nq.get_job(job_id).status for job_id in ids}  # type: ignore[union-attr]
    assert max(runs.values()) == 1, "a job ran twice"
    for job_id, status in statuses.items():
        assert status in (JobStatus.PROCESSED, JobStatus.CANCELLED), (job_id, status)
        if job_id not in runs:
            assert status is JobStatus.CANCELLED, f"job {job_id} never ran and is {status.value}"
    cancelled = sum(1 for status in statuses.values() if status is JobStatus.CANCELLED)
    processed = sum(1 for status in statuses.values() if status is JobStatus.PROCESSED)
    assert cancelled + processed == n
    assert processed == sum(1 for job_id in runs if statuses[job_id] is JobStatus.PROCESSED)
    print(f"{cancelled} cancelled, {processed} processed, {len(runs)} handlers run")


def test_fingerprints_are_free_again_after_settles_without_the_lock() -> None:
    with neoq.new() as nq:
        done = threading.Event()
        count = [0]

        def handler(job: Job) -> None:
            count[0] += 1
            if count[0] == 500:
                done.set()

        nq.enqueue_many([Job(queue="again", payload={"i": i}) for i in range(500)])
        nq.start("again", Handler(handler, concurrency=4))
        assert done.wait(30)
        wait_for(lambda: nq.stats()["again"]["processed"] == 500)
        # Every fingerprint was freed by its settle: the same payloads enqueue again.
        assert len(nq.enqueue_many([Job(queue="again", payload={"i": i}) for i in range(500)])) == 500


def test_a_queue_started_later_with_a_shorter_timeout_still_times_out_on_time() -> None:
    entered: dict[str, float] = {}
    released = threading.Event()
    running_long = threading.Event()

    def slow(job: Job) -> None:
        running_long.set()
        released.wait(10)

    def hangs(job: Job) -> None:
        entered[job.id or ""] = time.monotonic()
        context = neoq.job_context()
        assert context is not None
        context.cancelled.wait(10)

    with neoq.new() as nq:
        # The watchdog first plans with the long queue's 30 s timeout and a running attempt...
        nq.start("long", Handler(slow, timeout=30, concurrency=1))
        nq.enqueue(Job(queue="long"))
        assert running_long.wait(5)
        # ...then a queue whose attempts end after 0.2 s starts: it must look again.
        nq.start("short", Handler(hangs, timeout=0.2, max_retries=0, concurrency=1))
        job_id = nq.enqueue(Job(queue="short"))
        job = wait_for(lambda: (j := nq.get_job(job_id)) is not None and j.status is JobStatus.FAILED and j, timeout=5)
        ended = time.monotonic()
        released.set()
    assert job.error is not None and job.error.startswith("JobTimeoutError:")
    lateness = ended - (entered[job_id] + 0.2)
    assert lateness < 1.0, f"timed out {lateness:.3f}s late"


def test_deadline_shorter_than_the_planned_wake_up_kicks_the_watchdog() -> None:
    from datetime import datetime, timedelta, timezone

    def hangs(job: Job) -> None:
        context = neoq.job_context()
        assert context is not None
        context.cancelled.wait(10)

    with neoq.new() as nq:
        nq.start("deadlines", Handler(hangs, timeout=60, max_retries=0, concurrency=2))
        started = time.monotonic()
        job_id = nq.enqueue(Job(queue="deadlines", deadline=datetime.now(timezone.utc) + timedelta(seconds=0.3)))
        job = wait_for(lambda: (j := nq.get_job(job_id)) is not None and j.status is JobStatus.FAILED and j, timeout=5)
        elapsed = time.monotonic() - started
    assert job.error is not None and job.error.startswith("DeadlineExceededError:")
    assert 0.25 <= elapsed < 2.0, elapsed
