"""Fault 6, soak: a mixed load (successes, failures, retries, future jobs, cron) on PostgreSQL for
SOAK_SECONDS (60 in make test; make soak: 600 by default). After a warm-up, threads, open files,
PostgreSQL connections and memory (RSS) stay flat, and every job ends as it should."""

from __future__ import annotations

import logging
import os
import random
import statistics
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from conftest import figures
from pgfixtures import unique_name, wait_until

import neoq
from neoq import Job

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS") or 60)
#: Samples taken before this are warm-up (pools filling, threads starting, caches).
WARM_UP = max(15.0, SOAK_SECONDS * 0.2)
SAMPLE_EVERY = 2.0
#: Jobs a second, spread over the kinds below.
RATE = 25
#: RSS may grow by this much from the first to the last third after the warm-up (allocator noise).
RSS_TOLERANCE_MB = 8.0


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def connections(conn: psycopg.Connection[Any], apps: list[str]) -> int:
    row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = ANY(%s)", [apps]).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.timeout(SOAK_SECONDS + 240)
def test_soak_mixed_load_keeps_threads_files_connections_and_memory_flat(pg_url: str) -> None:
    tag = unique_name("soak")
    ok, failing, retried, cron = (f"{tag}-{kind}" for kind in ("ok", "fail", "retry", "cron"))
    worker_app, producer_app = unique_name("neoq-soak-worker"), unique_name("neoq-soak-producer")
    # The outcome lines go nowhere: pytest's log capture would keep every record in memory.
    quiet = logging.getLogger(f"chaos.soak.{tag}")
    quiet.propagate = False
    quiet.addHandler(logging.NullHandler())

    def succeed(job: neoq.Job) -> None:
        context = neoq.job_context()
        assert context is not None
        context.transaction.execute("SELECT 1")

    def fail(job: neoq.Job) -> None:
        raise RuntimeError("soak: this job fails")

    def fail_once(job: neoq.Job) -> None:
        if job.attempts == 1:
            raise RuntimeError("soak: the first attempt fails")

    ticks = 0

    def tick(job: neoq.Job) -> None:
        nonlocal ticks
        ticks += 1

    enqueued = {ok: 0, failing: 0, retried: 0}
    future = 0
    samples: list[tuple[float, int, int, int, float]] = []  # (t, threads, files, connections, rss)
    rng = random.Random(7)
    with (
        neoq.new(pg_url, application_name=worker_app, logger=quiet) as worker,
        neoq.new(pg_url, application_name=producer_app, logger=quiet) as producer,
        psycopg.connect(pg_url, autocommit=True) as admin,
    ):
        worker.start(ok, succeed, concurrency=4)
        worker.start(failing, neoq.Handler(fail, concurrency=2, max_retries=0))
        worker.start(retried, neoq.Handler(fail_once, concurrency=2, max_retries=3, backoff=lambda retries: 0.2))
        worker.start_cron("* * * * * *", tick, queue=cron)
        start = time.monotonic()
        next_sample = start
        n = 0
        while (now := time.monotonic()) < start + SOAK_SECONDS:
            if now >= next_sample:
                samples.append(
                    (
                        now - start,
                        threading.active_count(),
                        open_files(),
                        connections(admin, [worker_app, producer_app]),
                        rss_mb(),
                    )
                )
                next_sample += SAMPLE_EVERY
            kind = rng.random()
            if kind < 0.6:
                queue = ok
                run_after = None
                if rng.random() < 0.25:
                    run_after = datetime.now(timezone.utc) + timedelta(seconds=rng.uniform(0.2, 3))
                    future += 1
                producer.enqueue(Job(queue=queue, payload={"n": n}, run_after=run_after))
            elif kind < 0.8:
                queue = failing
                producer.enqueue(Job(queue=queue, payload={"n": n}))
            else:
                queue = retried
                producer.enqueue(Job(queue=queue, payload={"n": n}))
            enqueued[queue] += 1
            n += 1
            time.sleep(1 / RATE)  # the offered load's pace
        ran_for = time.monotonic() - start

        def settled() -> bool:
            stats = worker.stats()
            return (
                stats[ok]["processed"] == enqueued[ok]
                and stats[failing]["failed"] == enqueued[failing]
                and stats[retried]["processed"] == enqueued[retried]
            )

        wait_until(settled, 60, "every soak job is settled")
        stats = worker.stats()

    steady = [s for s in samples if s[0] >= WARM_UP]
    assert len(steady) >= 6, "too few samples after the warm-up"
    third = max(2, len(steady) // 3)
    rss_first = statistics.median(s[4] for s in steady[:third])
    rss_last = statistics.median(s[4] for s in steady[-third:])

    def span(index: int) -> str:
        values = [s[index] for s in steady]
        return f"{min(values)}..{max(values)}"

    figures(
        "soak",
        seconds=f"{ran_for:.0f}",
        jobs=n,
        future=future,
        cron_ticks=ticks,
        stats={q.rsplit("-", 1)[1]: {k: v for k, v in s.items() if v} for q, s in stats.items() if q.startswith(tag)},
        samples=len(steady),
        threads=span(1),
        open_files=span(2),
        pg_connections=span(3),
        rss_mb=f"{rss_first:.1f} -> {rss_last:.1f} (max {max(s[4] for s in steady):.1f})",
    )
    threads = [s[1] for s in steady]
    files = [s[2] for s in steady]
    conns = [s[3] for s in steady]
    assert max(threads) - min(threads) <= 2, f"threads moved: {threads}"
    assert max(files) - min(files) <= 4, f"open files moved: {files}"
    assert max(conns) - min(conns) <= 3, f"connections moved: {conns}"
    assert rss_last - rss_first < RSS_TOLERANCE_MB, f"RSS grew from {rss_first:.1f} to {rss_last:.1f} MB"
    assert stats[cron]["failed"] == 0 and ticks >= ran_for * 0.8
