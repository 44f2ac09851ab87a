"""Fault 2, the database restarts mid-run. This test starts a PostgreSQL server of its own (never
the shared one other test runs use) and stops and starts it while a worker runs and a producer
enqueues: enqueue raises BackendConnectionError promptly during the outage, the worker reconnects
by itself, processing resumes within seconds of the server's return, and nothing is lost."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from conftest import FULL, create_effects_table, figures, percentile
from pgfixtures import PgServer, _unavailable, find_pg_bindir, unique_name, wait_until

import neoq
from neoq import BackendConnectionError, Job

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

#: How long each outage lasts (the server is down), seconds. Past 7 s, psycopg_pool's own
#: reconnection backoff (1, 2, 4, 8 s ...) would have left the pools empty for seconds more.
OUTAGE = {"fast": 20.0 if FULL else 3.0, "immediate": 20.0 if FULL else 8.0}
#: The promise: processing resumes within this many seconds of the server answering again.
RESUME_WITHIN = 5.0
#: An enqueue that cannot reach the server must fail within this many seconds, not hang.
PROMPT = 2.0


@pytest.fixture(scope="module")
def own_server() -> Iterator[PgServer]:
    """A throwaway PostgreSQL server on a free port, for this module alone."""
    bindir = find_pg_bindir()
    if bindir is None:
        # A skip, except under CI=true where it is a failure.
        _unavailable("no PostgreSQL binaries (initdb, pg_ctl) to start a server of the test's own")
    server = PgServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_server_restart_loses_nothing_and_processing_resumes(
    own_server: PgServer, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL)  # the outage is expected to log loudly
    url = own_server.url
    create_effects_table(url)
    queue = unique_name(f"chaos-restart-{mode}")
    app = unique_name("neoq-chaos-restart")
    done: dict[str, float] = {}

    def handler(job: neoq.Job) -> None:
        context = neoq.job_context()
        assert context is not None
        time.sleep(0.005)
        started = time.time()
        context.transaction.execute(
            "INSERT INTO chaos_effects VALUES (%s, %s, 0, %s, %s, %s)",
            [int(job.id or 0), job.queue, job.attempts, job.payload.get("sent"), started],
        )
        done[job.id or ""] = started

    accepted: list[str] = []
    refused: list[float] = []  # how long each refused enqueue took
    refused_sent: list[float] = []  # when each refused enqueue was sent
    calls: list[tuple[float, float]] = []  # (start, duration) of every enqueue
    other_errors: list[BaseException] = []
    stop = threading.Event()

    with neoq.new(url, application_name=app, shutdown_timeout=10) as nq:
        nq.start(queue, handler, concurrency=4)

        def produce() -> None:
            n = 0
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    accepted.append(nq.enqueue(Job(queue=queue, payload={"n": n, "sent": time.time()})))
                except BackendConnectionError:
                    refused.append(time.monotonic() - sent)
                    refused_sent.append(sent)
                except BaseException as exc:  # anything else is a failure of the test
                    other_errors.append(exc)
                calls.append((sent, time.monotonic() - sent))
                n += 1
                stop.wait(0.02)  # a steady trickle of jobs (pacing, not synchronisation)

        producer = threading.Thread(target=produce, name="chaos-producer")
        producer.start()
        try:
            wait_until(lambda: len(done) >= 50, 30, "the worker processes jobs before the restart")
            down_at = time.monotonic()
            own_server.stop(mode)
            stopped_at = time.monotonic()  # the server is down by now (pg_ctl stop waits for it)
            time.sleep(OUTAGE[mode])  # the outage itself
            started_at = time.monotonic()
            own_server.start()
            up_at = time.monotonic()
            up_wall = time.time()
            # Processing resumes: a job starts after the server is back.
            wait_until(lambda: any(t >= up_wall for t in done.values()), 30, "a job runs after the restart")
            resumed = min(t for t in done.values() if t >= up_wall) - up_wall
            count_after = len(accepted)
            wait_until(lambda: len(accepted) >= count_after + 50, 30, "enqueue works again")
        finally:
            stop.set()
            producer.join()
        wait_until(lambda: all(job_id in done for job_id in accepted), 60, "every accepted job is processed")

        def unprocessed() -> int:
            with psycopg.connect(url, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM neoq_jobs WHERE queue = %s AND status <> 'processed'", [queue]
                ).fetchone()
            return int(row[0]) if row else 0

        # Also a job whose enqueue was refused although it was stored (see in_doubt below).
        wait_until(lambda: unprocessed() == 0, 60, "every stored job is processed")

    with psycopg.connect(url, autocommit=True) as conn:
        stored = conn.execute("SELECT count(*) FROM neoq_jobs WHERE queue = %s", [queue]).fetchone()
        per_job = dict(
            conn.execute(
                "SELECT job_id, count(*) FROM chaos_effects WHERE queue = %s GROUP BY job_id", [queue]
            ).fetchall()
        )
        statuses = dict(
            conn.execute("SELECT status, count(*) FROM neoq_jobs WHERE queue = %s GROUP BY status", [queue]).fetchall()
        )
    # Every enqueue made while the server was down ended promptly (it could only fail).
    during = [took for (sent, took) in calls if down_at <= sent and sent + took <= started_at]
    # Hung: sent while the server was down and still waiting, long past PROMPT, when it came back. A
    # call that merely was in flight at the restart (a few ms) is not one.
    hung = [
        took for (sent, took) in calls if down_at <= sent < started_at and sent + took > started_at and took >= PROMPT
    ]
    figures(
        f"database restart ({mode})",
        outage_s=f"{up_at - down_at:.1f}",
        accepted=len(accepted),
        stored=stored[0] if stored else None,
        refused_during_outage=len(refused),
        refused_p50_ms=f"{percentile(refused, 0.5) * 1000:.0f}",
        refused_max_ms=f"{max(refused, default=0) * 1000:.0f}",
        calls_during_outage=len(during),
        hung_until_restart=len(hung),
        resumed_after_s=f"{resumed:.2f}",
        statuses=statuses,
    )
    assert not other_errors, other_errors
    assert refused, "no enqueue ran into the outage"
    assert max(refused) < PROMPT, f"an enqueue during the outage took {max(refused):.2f}s to fail"
    assert not hung, f"enqueue calls blocked through the outage for {hung} s instead of failing"
    # An enqueue in flight when the server went down may have committed without its answer reaching
    # the client: an in-doubt commit, which no client can tell from a failed one. It can only be one
    # sent before the server was down (while it was stopping, too), and at most one: the producer
    # sends one at a time.
    in_doubt = min(1, sum(1 for sent in refused_sent if sent < stopped_at))
    assert stored is not None and len(accepted) <= stored[0] <= len(accepted) + in_doubt, (
        f"{stored[0] if stored else None} jobs stored for {len(accepted)} accepted enqueues "
        f"({in_doubt} refused one(s) in flight when the server went down)"
    )
    assert statuses == {"processed": stored[0]}
    # Every accepted job ran; so did the in-doubt one, if it was stored, and nothing else.
    accepted_ids = {int(i) for i in accepted}
    assert accepted_ids <= set(per_job), f"accepted jobs that never ran: {sorted(accepted_ids - set(per_job))}"
    assert len(set(per_job) - accepted_ids) == stored[0] - len(accepted), (
        f"jobs ran that were neither accepted nor in doubt: {sorted(set(per_job) - accepted_ids)}"
    )
    assert set(per_job.values()) == {1}, "an effect was committed twice"
    assert resumed < RESUME_WITHIN, f"processing resumed {resumed:.2f}s after the server came back"
