"""Fault 4, poison jobs: a handler that raises every time, one that never returns, and one that kills
its process each end FAILED after max_retries + 1 attempts, while a healthy queue served by the same
worker keeps its latency and throughput."""

from __future__ import annotations

import signal
import statistics
import threading
import time
from collections.abc import Callable

import psycopg
import pytest
from conftest import FULL, ChaosWorker, WorkerStartError, figures, percentile
from pgfixtures import unique_name, wait_until

import neoq
from neoq import Job, JobStatus

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

MAX_RETRIES = 2
#: Healthy jobs of the baseline, and at least as many beside the poison (one every 10 ms).
HEALTHY_JOBS = 600 if FULL else 200
POISON_JOBS = 5 if FULL else 2  # of each kind


def healthy_latencies(url: str, queue: str, ids: list[str]) -> list[float]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT started - sent FROM chaos_effects WHERE queue = %s AND job_id = ANY(%s)",
            [queue, [int(i) for i in ids]],
        ).fetchall()
    assert len(rows) == len(ids)
    return [float(r[0]) for r in rows]


def run_healthy(
    client: neoq.Neoq,
    queue: str,
    tag: str,
    until: Callable[[], bool] | None = None,
    unfinished: Callable[[], str] = lambda: "",
) -> list[str]:
    """Enqueue healthy jobs one every 10 ms, HEALTHY_JOBS of them and then on until ``until()``; return their ids."""
    ids: list[str] = []
    deadline = time.monotonic() + 120
    while len(ids) < HEALTHY_JOBS or (until is not None and not until()):
        assert time.monotonic() < deadline, f"the poison jobs never finished: {unfinished()}"
        ids.append(client.enqueue(Job(queue=queue, payload={"tag": tag, "n": len(ids), "sent": time.time()})))
        time.sleep(0.01)  # a steady trickle (pacing, not synchronisation)
    wait_until(
        lambda: all(client.get_job(i).status is JobStatus.PROCESSED for i in ids),  # type: ignore[union-attr]
        60,
        f"the {tag} healthy jobs ran",
    )
    return ids


def describe(client: neoq.Neoq, poison_ids: dict[str, list[str]], deaths: int) -> str:
    """The poison jobs not FAILED yet, by kind, with their status, attempts and error (for a failure message)."""
    left = []
    for kind, ids in poison_ids.items():
        for job_id in ids:
            job = client.get_job(job_id)
            if job is None or job.status is not JobStatus.FAILED:
                state = "gone" if job is None else f"{job.status.value} attempts={job.attempts} error={job.error!r}"
                left.append(f"{kind} {job_id}: {state}")
    return f"{'; '.join(left)} (killer deaths so far: {deaths})"


@pytest.mark.timeout(300)
def test_poison_jobs_fail_after_max_retries_plus_one_without_slowing_other_queues(
    chaos_db: str, chaos_workers: Callable[..., ChaosWorker]
) -> None:
    tag = unique_name("chaos-poison")
    healthy, raising, hanging, killing = (f"{tag}-{kind}" for kind in ("healthy", "raise", "hang", "kill"))
    poison = {"max_retries": MAX_RETRIES, "backoff": 0.5}
    # One worker serves the healthy queue beside the raising and hanging ones. A hung handler keeps
    # its thread forever (it ignores cancellation), so that queue needs one thread per attempt.
    main_settings = {
        healthy: {"concurrency": 2},
        raising: {"concurrency": 1, **poison},
        hanging: {"concurrency": POISON_JOBS * (MAX_RETRIES + 1), "timeout": 0.5, **poison},
    }
    chaos_workers(chaos_db, main_settings)
    # A job that kills its process takes down whatever else that process runs, so it gets its own.
    killer_settings = {killing: {"concurrency": 1, **poison}}
    killer = chaos_workers(chaos_db, killer_settings)

    with neoq.new(chaos_db, application_name=unique_name("neoq-chaos-producer")) as client:
        baseline_ids = run_healthy(client, healthy, "baseline")
        poison_ids = {
            kind: client.enqueue_many([Job(queue=queue, payload={"mode": kind, "n": n}) for n in range(POISON_JOBS)])
            for kind, queue in (("raise", raising), ("hang", hanging), ("kill", killing))
        }
        every = [job_id for ids in poison_ids.values() for job_id in ids]
        deaths = 0
        # Meanwhile the harness restarts the killer process whenever a job kills it, like a supervisor.
        stop = threading.Event()

        supervisor_errors: list[str] = []

        def restart() -> ChaosWorker:
            """A new killer process. Its handlers start before it says ``ready``, so a killing job may end
            it first: that is a death like the others, and the supervisor starts another."""
            nonlocal deaths
            while True:
                try:
                    return chaos_workers(chaos_db, killer_settings)
                except WorkerStartError as exc:
                    if exc.returncode != -signal.SIGKILL:
                        raise
                    deaths += 1

        def supervise() -> None:
            nonlocal killer, deaths
            while not stop.is_set():
                if not killer.alive():
                    deaths += 1
                    try:
                        killer = restart()
                    except Exception as exc:  # reported in the failure message: a restart that failed
                        supervisor_errors.append(repr(exc))
                        return
                stop.wait(0.05)

        supervisor = threading.Thread(target=supervise, name="chaos-supervisor")
        supervisor.start()
        try:
            # Healthy jobs flow for as long as the poison jobs are at work.
            poison_started = time.monotonic()
            poisoned_ids = run_healthy(
                client,
                healthy,
                "poisoned",
                until=lambda: all(client.get_job(i).status is JobStatus.FAILED for i in every),  # type: ignore[union-attr]
                unfinished=lambda: f"{describe(client, poison_ids, deaths)}; supervisor errors: {supervisor_errors}",
            )
            poison_s = time.monotonic() - poison_started
        finally:
            stop.set()
            supervisor.join()
        poisoned_jobs = {kind: [client.get_job(i) for i in ids] for kind, ids in poison_ids.items()}

    base = healthy_latencies(chaos_db, healthy, baseline_ids)
    during = healthy_latencies(chaos_db, healthy, poisoned_ids)
    attempts = {kind: sorted({job.attempts for job in jobs if job}) for kind, jobs in poisoned_jobs.items()}
    errors = {
        kind: sorted({(job.error or "").split(":")[0] for job in jobs if job}) for kind, jobs in poisoned_jobs.items()
    }
    figures(
        "poison jobs",
        max_retries=MAX_RETRIES,
        attempts=attempts,
        errors=errors,
        killer_deaths=deaths,
        poison_phase_s=f"{poison_s:.1f}",
        healthy_jobs=HEALTHY_JOBS,
        healthy_p50_ms=f"{statistics.median(base) * 1000:.1f} -> {statistics.median(during) * 1000:.1f}",
        healthy_p99_ms=f"{percentile(base, 0.99) * 1000:.1f} -> {percentile(during, 0.99) * 1000:.1f}",
        healthy_jobs_during_poison=len(poisoned_ids),
    )
    assert attempts["raise"] == [MAX_RETRIES + 1]
    assert attempts["hang"] == [MAX_RETRIES + 1]
    assert errors == {"raise": ["RuntimeError"], "hang": ["JobTimeoutError"], "kill": ["WorkerLostError"]}
    # A killing job runs max_retries + 1 times (each kills its worker); the claim after that sees
    # the count and fails it without running it.
    assert deaths == POISON_JOBS * (MAX_RETRIES + 1)
    assert attempts["kill"] == [MAX_RETRIES + 2]
    # The healthy queue does not notice: its median pickup stays within a few ms of the baseline's.
    assert statistics.median(during) < max(3 * statistics.median(base), statistics.median(base) + 0.02)
    assert percentile(during, 0.99) < 0.5
