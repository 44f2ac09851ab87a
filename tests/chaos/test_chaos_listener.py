"""Fault 3, lost wake-ups: the listener's connection is terminated (pg_terminate_backend) while jobs
flow in from another client. No job is lost, none waits longer than the poll interval, and the
listener comes back by itself, after which wake-ups are prompt again."""

from __future__ import annotations

import logging
import statistics
import time
from typing import Any

import psycopg
import pytest
from conftest import FULL, figures
from pgfixtures import unique_name, wait_until

import neoq
from neoq import Job

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

POLL_INTERVAL = 1.0
KILLS = 6 if FULL else 3
#: Jobs between two kills (one every 50 ms).
JOBS_PER_ROUND = 40
#: Scheduling slack on a shared 2-core machine on top of the poll interval.
SLACK = 0.5


def listener_pid(conn: psycopg.Connection[Any], app: str) -> int | None:
    row = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
        " AND (query LIKE 'LISTEN%%' OR query LIKE 'SELECT job_id FROM neoq_cancellations%%')",
        [app],
    ).fetchone()
    return None if row is None else int(row[0])


@pytest.mark.timeout(180)
def test_a_killed_listener_delays_jobs_by_at_most_the_poll_interval_and_comes_back(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)  # each kill logs a warning by design
    queue = unique_name("chaos-listener")
    app = unique_name("neoq-chaos-listener")
    started: dict[str, float] = {}

    def handler(job: neoq.Job) -> None:
        started[job.id or ""] = time.time()

    sent: dict[str, float] = {}
    killed_at: list[float] = []
    back_after: list[float] = []
    with (
        neoq.new(pg_url, application_name=app, poll_interval=POLL_INTERVAL) as worker,
        neoq.new(pg_url, application_name=unique_name("neoq-chaos-producer")) as producer,
        psycopg.connect(pg_url, autocommit=True) as admin,
    ):
        worker.start(queue, handler, concurrency=2)
        for round_ in range(KILLS + 1):
            for n in range(JOBS_PER_ROUND):
                at = time.time()
                sent[producer.enqueue(Job(queue=queue, payload={"round": round_, "n": n}))] = at
                time.sleep(0.05)  # a steady trickle (pacing, not synchronisation)
            if round_ == KILLS:
                break
            pid = wait_until(lambda: listener_pid(admin, app), 10, "the listener is connected")
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
            killed_at.append(time.time())
            new_pid = wait_until(
                lambda pid=pid: (p := listener_pid(admin, app)) is not None and p != pid and p, 10, "it reconnects"
            )
            assert new_pid != pid
            back_after.append(time.time() - killed_at[-1])
        wait_until(lambda: all(job_id in started for job_id in sent), 30, "every job ran")
        # After the last reconnection, wake-ups are prompt again: a fresh batch is picked up by notification.
        fresh = []
        for n in range(20):
            at = time.time()
            job_id = producer.enqueue(Job(queue=queue, payload={"fresh": n}))
            wait_until(lambda job_id=job_id: job_id in started, 10, "a fresh job runs", interval=0.002)
            fresh.append(started[job_id] - at)
            time.sleep(0.02)

    latency = {job_id: started[job_id] - at for job_id, at in sent.items()}
    # Jobs enqueued in the second after a kill are the ones that can miss their wake-up.
    exposed = [
        lat for job_id, lat in latency.items() if any(0 <= sent[job_id] - kill < POLL_INTERVAL for kill in killed_at)
    ]
    figures(
        "lost wake-ups",
        jobs=len(sent),
        listener_kills=len(killed_at),
        listener_back_after_ms=[round(b * 1000) for b in back_after],
        latency_p50_ms=f"{statistics.median(latency.values()) * 1000:.1f}",
        latency_max_ms=f"{max(latency.values()) * 1000:.0f}",
        after_kill_max_ms=f"{max(exposed, default=0) * 1000:.0f}",
        fresh_p50_ms=f"{statistics.median(fresh) * 1000:.1f}",
        poll_interval_ms=f"{POLL_INTERVAL * 1000:.0f}",
    )
    assert max(latency.values()) < POLL_INTERVAL + SLACK, "a job waited longer than the poll interval"
    assert max(back_after) < 5, "the listener took long to come back"
    assert statistics.median(fresh) < 0.05, "wake-ups are not prompt after the listener came back"
