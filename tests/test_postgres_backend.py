"""PostgresBackend details: options, handlers that misuse the transaction, pool exhaustion, late cancellations."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from pgfixtures import unique_name, wait_until

import neoq
from neoq import ConfigurationError, Handler, Job, JobStatus
from neoq.backends.postgres import PostgresBackend
from neoq.backends.postgres.queries import parse_queries
from neoq.job import prepare_job

pytestmark = pytest.mark.postgres

URL = "postgresql://u:pw@127.0.0.1:5432/db"


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"pool_min_size": 0}, "pool_min_size"),
        ({"pool_max_size": True}, "pool_max_size"),
        ({"pool_min_size": 5, "pool_max_size": 2}, "pool_min_size"),
        ({"synchronous_commit": "sometimes"}, "synchronous_commit"),
        ({"idle_transaction_timeout": -1}, "idle_transaction_timeout"),
        ({"poll_interval": "2"}, "poll_interval"),
        ({"connect_timeout": float("nan")}, "connect_timeout"),
    ],
)
def test_bad_options_raise_configuration_error(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        PostgresBackend(URL, **options)


def test_bad_urls_raise_configuration_error_without_the_password() -> None:
    with pytest.raises(ConfigurationError):
        PostgresBackend(123)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError) as info:
        PostgresBackend("postgresql://u:hunter2@host:notaport/db?bogus_option=1")
    assert "hunter2" not in str(info.value)
    with pytest.raises(ConfigurationError):
        neoq.new("postgresql://u@h/db", pool_min_size=-3)
    with pytest.raises(TypeError, match=r"PostgresBackend\(\) got an unexpected keyword argument 'pool_size'"):
        PostgresBackend(URL, pool_size=3)  # type: ignore[call-arg]
    backend = PostgresBackend(URL, synchronous_commit=False, application_name="mine")
    assert "pw" not in repr(backend) and "127.0.0.1" in repr(backend)
    assert backend.application_name == "mine"


def test_named_queries_are_parsed_once_and_strictly() -> None:
    parsed = parse_queries("-- name: a\n-- a comment\nSELECT 1;\n\n-- name: b\nSELECT\n  2;\n")
    assert parsed == {"a": "SELECT 1", "b": "SELECT\n  2"}
    with pytest.raises(ValueError, match="twice"):
        parse_queries("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n")
    # A fragment written once (job_view) stands in for an include line of a later block.
    text = "-- name: view\nSELECT x\nFROM t\n\n-- name: one\n-- include: view\nWHERE id = 1;\n"
    assert parse_queries(text)["one"] == "SELECT x\nFROM t\nWHERE id = 1"
    with pytest.raises(ValueError, match="not defined before it"):
        parse_queries("-- name: one\n-- include: view\nWHERE id = 1;\n-- name: view\nSELECT x\n")


def test_primitives_before_open_raise_backend_error() -> None:
    backend = PostgresBackend(URL)
    with pytest.raises(neoq.BackendError):
        backend.claim("q", 0)
    with pytest.raises(neoq.BackendError):
        backend.stats()
    backend.close()  # closing what was never opened is harmless


def test_a_handler_that_commits_the_job_transaction_is_reported_and_the_job_runs_again(
    pg_clean: str, caplog: pytest.LogCaptureFixture
) -> None:
    attempts: list[int] = []

    def handler(job: Job) -> None:
        attempts.append(job.attempts)
        if job.attempts == 1:
            neoq.job_context().transaction.commit()  # type: ignore[union-attr]

    with neoq.new(pg_clean, application_name=unique_name()) as nq:
        nq.start("commits", Handler(handler, concurrency=1))
        job_id = nq.enqueue(Job(queue="commits", payload={}))
        wait_until(lambda: nq.get_job(job_id).status is JobStatus.PROCESSED, 10, "processed")  # type: ignore[union-attr]
    assert attempts == [1, 2]
    assert any("must not commit" in record.getMessage() for record in caplog.records)


def test_a_handler_returning_with_its_transaction_in_error_is_not_processed(pg_clean: str) -> None:
    attempts: list[int] = []

    def handler(job: Job) -> None:
        attempts.append(job.attempts)
        if job.attempts == 1:
            with pytest.raises(psycopg.errors.DivisionByZero):
                neoq.job_context().transaction.execute("SELECT 1/0")  # type: ignore[union-attr]

    with neoq.new(pg_clean, application_name=unique_name()) as nq:
        nq.start("inerror", Handler(handler, concurrency=1))
        job_id = nq.enqueue(Job(queue="inerror", payload={}))
        job = wait_until(
            lambda: (j := nq.get_job(job_id)) is not None and j.status is JobStatus.PROCESSED and j, 10, "processed"
        )
    assert attempts == [1, 2] and job.attempts == 2


def test_jobs_wait_for_a_connection_when_the_pool_is_smaller_than_the_concurrency(
    pg_clean: str, caplog: pytest.LogCaptureFixture
) -> None:
    running, peak = [0], [0]
    lock = threading.Lock()

    def handler(job: Job) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.03)
        with lock:
            running[0] -= 1

    with neoq.new(pg_clean, application_name=unique_name(), pool_max_size=2) as nq:
        nq.start("small", Handler(handler, concurrency=5))
        ids = nq.enqueue_many([Job(queue="small", payload={"n": n}) for n in range(12)])
        for job_id in ids:
            wait_until(lambda job_id=job_id: nq.get_job(job_id).status is JobStatus.PROCESSED, 20, "processed")  # type: ignore[union-attr]
    assert peak[0] <= 2
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "neoq" in r.name]


def test_a_cancellation_that_raced_the_claim_cancels_the_job_without_running_it(
    pg_clean: str, pg_backend_factory: Callable[..., PostgresBackend]
) -> None:
    backend = pg_backend_factory(synchronous_commit="local")
    (job_id,) = backend.enqueue([prepare_job(Job(queue="raced", payload={}))[0]])
    with psycopg.connect(pg_clean, autocommit=True) as conn:
        conn.execute("INSERT INTO neoq_cancellations (job_id) VALUES (%s)", [int(job_id)])
    assert backend.claim("raced", 0) is None
    job = backend.get_job(job_id)
    assert job is not None and job.status is JobStatus.CANCELLED and job.attempts == 0


def test_a_cancellation_during_the_settle_of_a_retry_makes_the_job_cancelled(
    pg_clean: str, pg_backend_factory: Callable[..., PostgresBackend]
) -> None:
    backend = pg_backend_factory()
    (job_id,) = backend.enqueue([prepare_job(Job(queue="retrycancel", payload={}))[0]])
    claim = backend.claim("retrycancel", 5)
    assert claim is not None
    cancelled: list[str] = []
    backend.set_cancel_callback(cancelled.append)
    backend.cancel_job(job_id)  # running: a request and a notification
    wait_until(lambda: cancelled, 5, "the cancel callback is called")
    backend.settle(claim, neoq.backends.Outcome(JobStatus.NEW, "ValueError: x", None, 1))
    backend.release(claim)
    job = backend.get_job(job_id)
    assert job is not None and job.status is JobStatus.CANCELLED
    with psycopg.connect(pg_clean) as conn:
        assert conn.execute("SELECT count(*) FROM neoq_cancellations").fetchone() == (0,)


def test_a_job_retried_right_after_its_cancellation_runs(pg_clean: str) -> None:
    entered = threading.Event()
    runs: list[bool] = []

    def handler(job: Job) -> None:
        context = neoq.job_context()
        assert context is not None
        runs.append(True)
        if len(runs) == 1:
            entered.set()
            context.cancelled.wait(10)

    with neoq.new(pg_clean, application_name=unique_name()) as nq:
        nq.start("cancel-retry", handler)
        job_id = nq.enqueue(Job(queue="cancel-retry", payload={}))
        assert entered.wait(10)
        nq.cancel_job(job_id)
        wait_until(lambda: nq.get_job(job_id).status is JobStatus.CANCELLED, 5, "cancelled")  # type: ignore[union-attr]
        nq.retry_job(job_id)  # within the time the cancellation is remembered
        wait_until(lambda: nq.get_job(job_id).status is JobStatus.PROCESSED, 5, "processed")  # type: ignore[union-attr]
    assert runs == [True, True]


def counting_probes(backend: PostgresBackend, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the time of every look at the queue that ``backend``'s claims make (``look``)."""
    probes: list[float] = []
    real_look = backend.look

    def look(queue: str) -> Any:
        probes.append(time.monotonic())
        return real_look(queue)

    monkeypatch.setattr(backend, "look", look)
    return probes


def all_loops_waiting(backend: PostgresBackend, queue: str, probes: list[float]) -> Callable[[], bool]:
    """Whether the queue was looked at and its eight claim loops are all in a claim now."""
    return lambda: bool(probes) and backend.waiting.queue(queue).claiming == 8


def test_a_look_answers_at_once_with_a_claim_or_when_the_next_job_comes_due(
    pg_backend_factory: Callable[..., PostgresBackend],
) -> None:
    """``look`` never waits: it claims a due job and says whether more are due (and if not, when the
    next comes due), or says when the next job comes due and whether others hold due jobs."""
    backend = pg_backend_factory(poll_interval=60)
    queue = unique_name("looks")
    empty = backend.look(queue)
    assert (empty.claim, empty.due_in, empty.held) == (None, None, False)
    later = datetime.now(timezone.utc) + timedelta(seconds=30)
    jobs = [Job(queue=queue, payload={"n": 0}), Job(queue=queue, payload={}, run_after=later)]
    backend.enqueue([prepare_job(job)[0] for job in jobs])
    first = backend.look(queue)
    assert first.claim is not None and first.claim.job.payload == {"n": 0}
    assert not first.more and first.due_in is not None and 25 < first.due_in <= 30
    # The due job is held by the claim above: nothing to take, but others hold due jobs.
    held = backend.look(queue)
    assert held.claim is None and held.held and held.due_in is not None and 25 < held.due_in <= 30
    backend.settle(first.claim, neoq.backends.Outcome(JobStatus.PROCESSED))
    backend.release(first.claim)
    settled = backend.look(queue)
    assert settled.claim is None and not settled.held and settled.due_in is not None
    backend.enqueue([prepare_job(Job(queue=queue, payload={"n": n}))[0] for n in (1, 2)])
    second = backend.look(queue)
    assert second.claim is not None and second.claim.job.payload == {"n": 1} and second.more
    backend.settle(second.claim, neoq.backends.Outcome(JobStatus.PROCESSED))
    backend.release(second.claim)


def start_claim_loops(
    backend: PostgresBackend, queue: str, timeout: float, stop: threading.Event, got: list[tuple[str, float]]
) -> list[threading.Thread]:
    """Eight threads claiming from ``queue`` with ``timeout`` until ``stop``; each claimed job is
    settled PROCESSED and recorded in ``got`` as (id, when)."""

    def loop() -> None:
        while not stop.is_set():
            claim = backend.claim(queue, timeout)
            if claim is not None:
                got.append((claim.job.id or "", time.monotonic()))
                backend.settle(claim, neoq.backends.Outcome(JobStatus.PROCESSED))
                backend.release(claim)

    threads = [threading.Thread(target=loop) for _ in range(8)]
    for thread in threads:
        thread.start()
    return threads


def test_an_idle_claim_loop_does_not_look_again_until_something_happens(
    pg_backend_factory: Callable[..., PostgresBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim that timed out on an empty queue leaves what it saw to the loop's next claim, which
    does not look at the queue again until a signal, a due time or the poll interval."""
    backend = pg_backend_factory(poll_interval=60)
    probes = counting_probes(backend, monkeypatch)
    queue = unique_name("idle-probes")
    assert backend.claim(queue, 0.05) is None
    assert len(probes) == 1
    for _ in range(3):
        assert backend.claim(queue, 0.05) is None
    assert len(probes) == 1, "an idle claim looked at the queue with nothing to look for"
    # An enqueue signals the queue: the next claim looks at once and takes the job.
    (job_id,) = backend.enqueue([prepare_job(Job(queue=queue, payload={}))[0]])
    started = time.monotonic()
    claim = backend.claim(queue, 5)
    assert claim is not None and claim.job.id == job_id
    assert time.monotonic() - started < 2.5, "the claim waited instead of looking at once"
    backend.settle(claim, neoq.backends.Outcome(JobStatus.PROCESSED))
    backend.release(claim)


@pytest.mark.parametrize("listen", [True, False])
def test_idle_claim_loops_look_once_per_poll_interval_between_them(
    pg_clean: str,
    pg_backend_factory: Callable[..., PostgresBackend],
    monkeypatch: pytest.MonkeyPatch,
    listen: bool,
) -> None:
    """Eight idle claim loops look at the queue about once per poll interval between them (each on
    its own when notifications are off, listen=False), and a job inserted without a notification
    is still found within about a poll interval."""
    poll = 0.3
    backend = pg_backend_factory(poll_interval=poll, listen=listen)
    probes = counting_probes(backend, monkeypatch)
    queue = unique_name("idle-loops")
    stop = threading.Event()
    got: list[tuple[str, float]] = []
    threads = start_claim_loops(backend, queue, 1.0, stop, got)
    try:
        wait_until(all_loops_waiting(backend, queue, probes), 10, "every loop waits in a claim")
        before = len(probes)
        time.sleep(3.0)  # counted over ten poll intervals
        looks = len(probes) - before
        # A job whose notification never comes: inserted with plain SQL.
        with psycopg.connect(pg_clean, autocommit=True) as conn:
            prepared = prepare_job(Job(queue=queue, payload={"lost": True}))[0]
            row = conn.execute(
                "INSERT INTO neoq_jobs (queue, fingerprint, payload) VALUES (%s, %s, '{}') RETURNING id",
                [queue, prepared.fingerprint],
            ).fetchone()
            inserted = time.monotonic()
        assert row is not None
        wait_until(lambda: got, 10, "the loops find the job without its notification")
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert got[0][0] == str(row[0])
    found_after = got[0][1] - inserted
    assert found_after < poll + 0.7, f"the job was found {found_after:.2f} s after its insert"
    if listen:
        assert looks <= 16, f"{looks} looks in ten poll intervals: the waiting loops each looked"
    else:
        assert looks >= 40, f"only {looks} looks in ten poll intervals: the loops did not each look"


def test_a_caller_that_never_waits_still_looks_every_poll_interval(
    pg_clean: str, pg_backend_factory: Callable[..., PostgresBackend]
) -> None:
    """``claim(queue, 0)`` in a loop: what an earlier claim saw is reused only while it is current,
    so a job inserted without a notification, and a future job coming due, are still found."""
    poll = 0.3
    backend = pg_backend_factory(poll_interval=poll)
    queue = unique_name("no-wait")

    def claim_within(seconds: float) -> Any:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            claim = backend.claim(queue, 0)
            if claim is not None:
                return claim
            time.sleep(0.01)  # the caller's own polling pace
        return None

    assert claim_within(0.2) is None  # the queue is empty: what it saw is kept
    with psycopg.connect(pg_clean, autocommit=True) as conn:  # no notification
        conn.execute(
            "INSERT INTO neoq_jobs (queue, fingerprint, payload) VALUES (%s, 'lost', '{}')", [queue]
        )
    claim = claim_within(poll + 1.0)
    assert claim is not None, "a job inserted without a notification was never looked for"
    backend.settle(claim, neoq.backends.Outcome(JobStatus.PROCESSED))
    backend.release(claim)
    # A future job: the look that saw it knew its due time, and the claims look again once it passes.
    due = datetime.now(timezone.utc) + timedelta(seconds=0.5)
    (job_id,) = backend.enqueue([prepare_job(Job(queue=queue, payload={"later": 1}, run_after=due))[0]])
    assert backend.claim(queue, 0) is None
    claim = claim_within(3.0)
    assert claim is not None and claim.job.id == job_id
    lateness = (datetime.now(timezone.utc) - due).total_seconds()
    assert 0 <= lateness < 0.3, f"the future job was claimed {lateness:.2f} s after it came due"
    backend.settle(claim, neoq.backends.Outcome(JobStatus.PROCESSED))
    backend.release(claim)


def test_a_signal_is_looked_into_once_not_by_every_waiting_loop(
    pg_backend_factory: Callable[..., PostgresBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trickle of enqueues while eight loops wait: each job is claimed promptly, and the loops
    that were not woken do not each look again afterwards (someone looked after the signal)."""
    backend = pg_backend_factory(poll_interval=60)  # no timed looks: only signals make the loops look
    probes = counting_probes(backend, monkeypatch)
    claims_begun: dict[int, int] = {}  # thread ident -> claims it entered
    real_claim = backend.claim

    def claim(queue: str, timeout: float) -> Any:
        ident = threading.get_ident()
        claims_begun[ident] = claims_begun.get(ident, 0) + 1
        return real_claim(queue, timeout)

    monkeypatch.setattr(backend, "claim", claim)
    queue = unique_name("trickle")
    stop = threading.Event()
    got: list[tuple[str, float]] = []
    threads = start_claim_loops(backend, queue, 0.5, stop, got)
    try:
        wait_until(all_loops_waiting(backend, queue, probes), 10, "every loop waits in a claim")
        # Every loop's first claim timed out and it waits in its next one: the looks counted from
        # here on are the signals' alone.
        wait_until(
            lambda: len(claims_begun) == 8 and min(claims_begun.values()) >= 2, 10, "every loop's first claim timed out"
        )
        before = len(probes)
        sent: list[float] = []
        for n in range(10):
            sent.append(time.monotonic())
            backend.enqueue([prepare_job(Job(queue=queue, payload={"n": n}))[0]])
            wait_until(lambda count=n + 1: len(got) >= count, 5, "the job is claimed")  # type: ignore[misc]
            time.sleep(0.2)  # a trickle: the next job after the loops' wake-ups (pacing)
        looks = len(probes) - before
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    delays = [claimed - at for (_, claimed), at in zip(got, sent, strict=True)]
    assert max(delays) < 0.5, f"a job waited {max(delays):.2f} s for a claim"
    # One look per job: the woken loop's, whose claim also says nothing else is due, so neither the
    # other loops nor that loop's next claim look again. With every waiting loop looking again: about 45.
    assert looks <= 15, f"{looks} looks for 10 signalled jobs: the other waiting loops each looked again"


def test_progress_does_not_wait_for_the_claims_row_lock_and_goes_with_its_job(pg_clean: str) -> None:
    # Transaction mode: the claim's transaction holds the job row's lock while the handler runs; a
    # report is an autocommit upsert beside it (neoq_progress), seen by other connections at once.
    # retry_job and pruning remove the report with the job's outcome.
    queue = unique_name("progress-lock")
    seen: list[tuple[float | None, str | None]] = []

    with neoq.new(pg_clean, shutdown_timeout=5) as nq:

        def handler(job: Job) -> str:
            context = neoq.job_context()
            assert context is not None and context.transaction is not None  # the row is locked now
            context.progress(0.5, "half")
            wait_until(lambda: nq.get_job(job.id or "").progress == 0.5, 5, "another connection sees the report")
            shown = nq.get_job(job.id or "")
            assert shown is not None
            seen.append((shown.progress, shown.progress_note))
            return "done"

        job_id = nq.enqueue(Job(queue=queue))
        nq.start(queue, handler)
        wait_until(lambda: nq.get_job(job_id).status is JobStatus.PROCESSED, 10, "the job is processed")
        assert seen == [(0.5, "half")]
        with psycopg.connect(pg_clean) as conn:
            count = "SELECT count(*) FROM neoq_progress WHERE job_id = %s"
            assert conn.execute(count, [int(job_id)]).fetchone() == (1,)
            nq.backend.prune({JobStatus.PROCESSED: datetime.now(timezone.utc) + timedelta(hours=1)}, 100)
            assert nq.get_job(job_id) is None
            assert conn.execute(count, [int(job_id)]).fetchone() == (0,)
