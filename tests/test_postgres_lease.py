"""The lease mode on PostgreSQL: long jobs without timeout tuning, timeouts, PgBouncer (issue 9, points 1, 3, 4).

The long job runs far past both ``idle_transaction_timeout`` (1 s) and its lease (2 s): the
heartbeat renews the lease while the process lives. ``NEOQ_LEASE_JOB_SECONDS=600`` makes it the
10-minute job of the issue (marked slow). The PgBouncer test starts its own PgBouncer (from the
Debian package ``pgbouncer``; .ci/run installs it) in transaction pooling mode in front of the test
database, with fewer server connections than worker threads, and runs lease-mode jobs through it
with LISTEN off (claims poll) and no server-side prepared statements.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from pgfixtures import free_port, unique_name, wait_until, with_database

import neoq
from neoq import ConfigurationError, Job, JobStatus
from neoq.backends.postgres import PostgresBackend

pytestmark = pytest.mark.postgres

LONG_JOB = float(os.environ.get("NEOQ_LEASE_JOB_SECONDS", "10"))


def test_lease_options_are_validated(pg_url: str) -> None:
    with pytest.raises(ConfigurationError, match="mode must be one of"):
        PostgresBackend(pg_url, mode="leases")
    with pytest.raises(ConfigurationError, match="lease must be at least"):
        PostgresBackend(pg_url, lease=0.01)
    with pytest.raises(ConfigurationError, match="prepare_threshold"):
        PostgresBackend(pg_url, prepare_threshold="no")  # type: ignore[arg-type]


def test_a_lease_claim_takes_many_jobs_in_one_statement_and_holds_no_transaction(pg_clean: str) -> None:
    queue = unique_name("lease-batch")
    app = unique_name("neoq-lease-batch")
    entered = threading.Barrier(5, timeout=20)
    release = threading.Event()
    seen: list[object] = []

    def handler(job: Job) -> None:
        context = neoq.job_context()
        assert context is not None
        seen.append(context.transaction)
        entered.wait()
        release.wait(20)

    with neoq.new(pg_clean, mode="lease", lease=2, application_name=app) as nq:
        nq.enqueue_many([Job(queue=queue, payload={"i": i}) for i in range(4)])
        nq.start(queue, neoq.Handler(handler, concurrency=4))
        entered.wait()  # four handlers run at once
        with psycopg.connect(pg_clean, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT state FROM pg_stat_activity WHERE application_name = %s AND state LIKE 'idle in%%'", [app]
            ).fetchall()
            leases = conn.execute(
                "SELECT count(*), count(DISTINCT lease_owner), bool_and(run_after > now()) FROM neoq_jobs "
                "WHERE queue = %s AND status = 'new' AND lease_token > 0",
                [queue],
            ).fetchone()
        release.set()
        assert rows == []  # no transaction is open while the handlers run
        assert leases == (4, 1, True)  # four live leases, one holder
        assert seen == [None] * 4  # Claim.transaction is None in lease mode
        wait_until(lambda: nq.stats()[queue]["processed"] == 4, 20, "the jobs were processed")


@pytest.mark.slow
@pytest.mark.timeout(LONG_JOB + 120)  # the 10-minute run outlasts the suite's default per-test timeout
def test_a_long_job_outlives_its_lease_and_the_idle_timeout(pg_clean: str) -> None:
    queue = unique_name("lease-long")
    started = threading.Event()

    def handler(job: Job) -> None:
        started.set()
        time.sleep(LONG_JOB)  # never touches the database

    with neoq.new(pg_clean, mode="lease", lease=2, idle_transaction_timeout=1) as nq:
        job_id = nq.enqueue(Job(queue=queue, payload={}))
        nq.start(queue, neoq.Handler(handler, timeout=None, max_retries=0))
        assert started.wait(20)
        job = wait_until(
            lambda: (j := nq.get_job(job_id)) is not None and j.status not in (JobStatus.NEW, JobStatus.RUNNING) and j,
            LONG_JOB + 20,
            "the long job finished",
        )
    assert job.status is JobStatus.PROCESSED and job.attempts == 1 and job.error is None


def test_a_timeout_still_ends_a_lease_mode_attempt(pg_clean: str) -> None:
    queue = unique_name("lease-timeout")
    cancelled = threading.Event()

    def handler(job: Job) -> None:
        context = neoq.job_context()
        assert context is not None
        if context.cancelled.wait(30):
            cancelled.set()

    with neoq.new(pg_clean, mode="lease", lease=2) as nq:
        job_id = nq.enqueue(Job(queue=queue, payload={}))
        began = time.monotonic()
        nq.start(queue, neoq.Handler(handler, timeout=1, max_retries=0))
        job = wait_until(
            lambda: (j := nq.get_job(job_id)) is not None and j.status is JobStatus.FAILED and j, 20, "timed out"
        )
        assert time.monotonic() - began < 10
        assert cancelled.wait(5)
    assert job.error is not None and job.error.startswith("JobTimeoutError:") and job.attempts == 1


def test_cancelling_a_running_lease_mode_job_reaches_its_handler(pg_clean: str) -> None:
    queue = unique_name("lease-cancel")
    entered, cancelled = threading.Event(), threading.Event()

    def handler(job: Job) -> None:
        context = neoq.job_context()
        assert context is not None
        entered.set()
        if context.cancelled.wait(30):
            cancelled.set()

    with neoq.new(pg_clean, mode="lease", lease=30) as nq, neoq.new(pg_clean) as other:
        job_id = nq.enqueue(Job(queue=queue, payload={}))
        nq.start(queue, neoq.Handler(handler, timeout=None))
        assert entered.wait(20)
        began = time.monotonic()
        other.cancel_job(job_id)  # from another client: the heartbeat finds it cancelled
        assert cancelled.wait(5)
        assert time.monotonic() - began < 1.5
        assert nq.get_job(job_id).status is JobStatus.CANCELLED  # type: ignore[union-attr]


def test_a_write_in_progress_on_a_leased_job_adds_no_attempt_to_what_get_job_reads(pg_clean: str) -> None:
    """A leased job's row is locked, briefly, by its holder's own settle, renewal or give-back: that is
    not a second attempt (it was read as one: RUNNING at attempt 2 with the first failure unwritten)."""
    queue = unique_name("lease-locked-read")
    entered, release = threading.Event(), threading.Event()

    def handler(job: Job) -> None:
        entered.set()
        release.wait(30)

    with neoq.new(pg_clean, mode="lease", lease=30) as nq:
        job_id = nq.enqueue(Job(queue=queue, payload={}))
        nq.start(queue, neoq.Handler(handler, timeout=None))
        try:
            assert entered.wait(20)
            with psycopg.connect(pg_clean) as writer:  # a transaction, left open while get_job reads
                writer.execute("SELECT 1 FROM neoq_jobs WHERE id = %s FOR UPDATE", [int(job_id)])
                job = nq.get_job(job_id)
                assert job is not None
                assert (job.status, job.attempts) == (JobStatus.RUNNING, 1)
                assert nq.list_jobs(queue=queue, status=JobStatus.RUNNING)[0].attempts == 1
                writer.rollback()
        finally:
            release.set()


# -- PgBouncer -----------------------------------------------------------------------------------


def _pgbouncer() -> str | None:
    return shutil.which("pgbouncer") or next(
        (path for path in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.path.exists(path)), None
    )


@pytest.fixture
def pgbouncer_url(pg_url: str) -> Iterator[str]:
    """A PgBouncer in transaction pooling mode in front of the test database; yields its URL."""
    binary = _pgbouncer()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("pgbouncer is required under CI=true (apt-get install pgbouncer)", pytrace=False)
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    server = urlsplit(pg_url)
    dbname = server.path.lstrip("/")
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="neoq-pgbouncer-"))
    (tmp / "userlist.txt").write_text(f'"{server.username or "postgres"}" ""\n')
    (tmp / "pgbouncer.ini").write_text(
        f"""[databases]
{dbname} = host={server.hostname or "127.0.0.1"} port={server.port or 5432} dbname={dbname}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {tmp / "userlist.txt"}
pool_mode = transaction
; fewer server connections than worker threads: sessions are really shared
default_pool_size = 2
max_client_conn = 200
; libpq's options (synchronous_commit, idle timeout) cannot pass PgBouncer
ignore_startup_parameters = options, extra_float_digits
logfile = {tmp / "pgbouncer.log"}
pidfile = {tmp / "pgbouncer.pid"}
"""
    )
    prefix: list[str] = []
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        shutil.chown(tmp, "postgres")
        for name in ("userlist.txt", "pgbouncer.ini"):
            shutil.chown(tmp / name, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    proc = subprocess.Popen([*prefix, binary, str(tmp / "pgbouncer.ini")], stderr=subprocess.PIPE, text=True)
    url = with_database(f"postgresql://{server.username or 'postgres'}@127.0.0.1:{port}/x", dbname)

    def answers() -> bool:
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=2, prepare_threshold=None) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            assert proc.poll() is None, f"pgbouncer exited: {proc.stderr.read() if proc.stderr else ''}"
            return False
        return True

    try:
        wait_until(answers, 20, "pgbouncer answers", interval=0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


def test_lease_mode_through_pgbouncer_in_transaction_pooling(pg_clean: str, pgbouncer_url: str) -> None:
    queue = unique_name("lease-bouncer")
    done: list[int] = []
    lock = threading.Lock()

    def handler(job: Job) -> None:
        if job.payload["i"] % 10 == 0 and job.attempts == 1:
            raise RuntimeError("first attempts of every tenth job fail")
        with lock:
            done.append(job.payload["i"])

    options = {"mode": "lease", "lease": 2, "listen": False, "prepare_threshold": None, "poll_interval": 0.05}
    with neoq.new(pgbouncer_url, application_name=unique_name("neoq-bouncer"), **options) as nq:
        nq.enqueue_many([Job(queue=queue, payload={"i": i}) for i in range(200)])
        nq.start(queue, neoq.Handler(handler, concurrency=8, backoff=lambda retries: 0.1))
        wait_until(lambda: nq.stats().get(queue, {}).get("processed") == 200, 60, "every job was processed")
        # Waiting claims poll (no LISTEN through PgBouncer): a new job still starts promptly.
        began = time.monotonic()
        late = nq.enqueue(Job(queue=queue, payload={"i": 1001}))
        wait_until(lambda: nq.get_job(late).status is JobStatus.PROCESSED, 10, "the late job ran")  # type: ignore[union-attr]
        assert time.monotonic() - began < 2
        failed_once = [job for job in nq.list_jobs(queue=queue, limit=300) if job.attempts == 2]
    assert sorted(done) == [*range(200), 1001]
    assert len(failed_once) == 20


def test_outcomes_written_in_one_batch_keep_any_error_text(pg_clean: str) -> None:
    # The flusher sends each batch as array literals: quotes, backslashes, braces, commas,
    # newlines and non-ASCII text come back unchanged, next to processed jobs and retries of the
    # same batch; a NUL (which PostgreSQL text cannot hold) is shown escaped instead of failing it.
    queue = unique_name("lease-errors")
    texts = ['say "hi"', "back\\slash\\", "{a,b}", "NULL", "", " two\nlines\t", "ünï 😀", "a\x00b"]

    def handler(job: Job) -> None:
        i = job.payload["i"]
        if i < len(texts) and job.attempts == 1:
            raise ValueError(texts[i])

    with neoq.new(pg_clean, mode="lease", lease=2) as nq:
        ids = nq.enqueue_many([Job(queue=queue, payload={"i": i}, max_retries=1) for i in range(len(texts) + 20)])
        nq.start(queue, neoq.Handler(handler, concurrency=8, backoff=lambda retries: 60))
        wait_until(lambda: nq.stats().get(queue, {}).get("processed") == 20, 20, "the plain jobs were processed")
        waiting = [nq.get_job(job_id) for job_id in ids[: len(texts)]]
    for text, job in zip(texts, waiting, strict=True):
        assert job is not None and job.status is JobStatus.NEW and job.retries == 1
        assert job.error == (f"ValueError: {text}" if text else "ValueError").replace("\x00", "\\x00")
        assert job.run_after is not None and job.run_after > job.created_at  # type: ignore[operator]


def test_outcomes_written_in_one_batch_keep_results_and_tracebacks(pg_clean: str) -> None:
    # Results and tracebacks travel as array literals too, beside each other in one batch.
    queue = unique_name("lease-outcomes")
    results = [{"q": 'say "hi"', "b": "back\\slash", "c": "{a,b}"}, "NULL", [1, "ünï 😀"], 0]

    def handler(job: Job) -> object:
        i = job.payload["i"]
        if i >= len(results):
            raise KeyError(f"row {i}")
        return results[i]

    with neoq.new(pg_clean, mode="lease", lease=2) as nq:
        ids = nq.enqueue_many([Job(queue=queue, payload={"i": i}, max_retries=0) for i in range(len(results) + 3)])
        nq.start(queue, neoq.Handler(handler, concurrency=4))
        wait_until(lambda: nq.stats().get(queue, {}).get("failed") == 3, 20, "the failing jobs failed")
        wait_until(lambda: nq.stats().get(queue, {}).get("processed") == len(results), 20, "the others were processed")
        jobs = [nq.get_job(job_id) for job_id in ids]
    assert [job.result for job in jobs[: len(results)]] == results  # type: ignore[union-attr]
    for i, job in enumerate(jobs[len(results) :], start=len(results)):
        assert job is not None and job.error == f"KeyError: 'row {i}'" and job.result is None
        assert job.traceback is not None and job.traceback.endswith(f"KeyError: 'row {i}'\n")


def test_a_progress_report_of_a_lost_lease_does_not_land(pg_clean: str) -> None:
    queue = unique_name("lease-progress")
    holding, release = threading.Event(), threading.Event()
    leases: list[object] = []

    def handler(job: Job) -> None:
        context = neoq.job_context()
        assert context is not None
        context.progress(0.25, "mine")
        leases.append(context._claim.token)  # type: ignore[attr-defined]
        holding.set()
        release.wait(20)

    with neoq.new(pg_clean, mode="lease", lease=5) as nq:
        job_id = nq.enqueue(Job(queue=queue))
        nq.start(queue, handler)
        assert holding.wait(20)
        wait_until(lambda: nq.get_job(job_id).progress == 0.25, 5, "the holder's report is stored")  # type: ignore[union-attr]
        (lease,) = leases
        store = lease.engine._store  # type: ignore[attr-defined]
        with psycopg.connect(pg_clean, autocommit=True) as conn:  # the lease is lost: the job was leased again
            conn.execute("UPDATE neoq_jobs SET lease_token = lease_token + 1 WHERE id = %s", [int(job_id)])
        store.progress(lease, 0.75, "late")  # the old holder's late report, straight to the store
        job = nq.get_job(job_id)
        assert job is not None and (job.progress, job.progress_note) == (0.25, "mine")
        release.set()


def test_fast_jobs_run_once_each_and_close_puts_unstarted_leased_jobs_back(pg_clean: str) -> None:
    # Quick jobs keep the claim loops' buffer turning over, so they read ahead (lease the next
    # batch before the buffer runs dry). Every job still runs once, with one attempt counted, and
    # closing the client gives every leased job that never started back: due as before, its
    # attempt uncounted, no lease left on it.
    queue = unique_name("lease-ahead")
    runs: list[int] = []
    lock = threading.Lock()

    def handler(job: Job) -> None:
        with lock:
            runs.append(job.payload["i"])
        if job.payload["i"] >= 1500:
            time.sleep(0.002)  # the tail runs slower, so that the client closes mid-queue

    n = 3000
    with neoq.new(pg_clean, mode="lease", lease=5) as nq:
        nq.enqueue_many([Job(queue=queue, payload={"i": i}) for i in range(n)])
        nq.start(queue, neoq.Handler(handler, concurrency=8))
        wait_until(lambda: len(runs) >= 1600, 30, "most jobs ran")
    with lock:
        ran = sorted(runs)
    assert len(ran) == len(set(ran)) and ran[:1500] == list(range(1500))  # each ran once, the first 1500 all
    with psycopg.connect(pg_clean, autocommit=True) as conn:
        left = conn.execute(
            "SELECT count(*), count(j.lease_owner), coalesce(max(a.attempts), 0), bool_and(j.run_after <= now()) "
            "FROM neoq_jobs j LEFT JOIN neoq_attempts a ON a.job_id = j.id WHERE j.queue = %s AND j.status = 'new'",
            [queue],
        ).fetchone()
        done = conn.execute(
            "SELECT count(*), max(a.attempts) FROM neoq_jobs j JOIN neoq_attempts a ON a.job_id = j.id "
            "WHERE j.queue = %s AND j.status = 'processed'",
            [queue],
        ).fetchone()
    assert done == (len(ran), 1)  # every job that ran was recorded once, one attempt each
    assert left == (n - len(ran), 0, 0, True)  # the rest: not leased, never attempted, due


def test_slow_jobs_leave_no_job_attempted_twice_by_prefetch(pg_clean: str) -> None:
    # Handlers slower than the heartbeat interval: prefetched jobs wait longer than it and are put
    # back (attempt uncounted), and no read-ahead piles more up. Each job runs once, one attempt.
    queue = unique_name("lease-slow")
    runs: list[int] = []
    lock = threading.Lock()

    def handler(job: Job) -> None:
        time.sleep(0.12)
        with lock:
            runs.append(job.payload["i"])

    with neoq.new(pg_clean, mode="lease", lease=0.6) as nq:  # heartbeat every 0.2 s
        ids = nq.enqueue_many([Job(queue=queue, payload={"i": i}) for i in range(24)])
        nq.start(queue, neoq.Handler(handler, concurrency=3))
        wait_until(lambda: nq.stats().get(queue, {}).get("processed") == 24, 30, "every job was processed")
        jobs = [nq.get_job(job_id) for job_id in ids]
    assert sorted(runs) == list(range(24))
    assert [job.attempts if job else None for job in jobs] == [1] * 24


def test_idle_claim_loops_do_not_take_turns_leasing_nothing(pg_clean: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three idle loops beside a running job: each claim statement's end woke the others' poll
    waits, so they leased nothing back to back (about 2,000 statements a second)."""
    from neoq.backends.postgres.leasestore import PostgresLeaseStore

    fetches: list[float] = []
    original = PostgresLeaseStore.fetch

    def counting(self: PostgresLeaseStore, queue: str, limit: int, lease: float, owner: str) -> object:
        fetches.append(time.monotonic())
        return original(self, queue, limit, lease, owner)

    monkeypatch.setattr(PostgresLeaseStore, "fetch", counting)
    queue = unique_name("lease-idle")
    started, release = threading.Event(), threading.Event()

    def handler(job: Job) -> None:
        started.set()
        release.wait(20)

    with neoq.new(pg_clean, mode="lease", poll_interval=2.0) as nq:
        nq.enqueue(Job(queue=queue, payload={}))
        nq.start(queue, neoq.Handler(handler, timeout=None, concurrency=4))
        assert started.wait(20)
        time.sleep(0.3)
        before = len(fetches)
        time.sleep(2.0)
        during = len(fetches) - before
        release.set()
    # Three loops polling every 2 s lease a few times; a signal or a due lease expiry adds a few more.
    assert during < 40, f"{during} claim statements in 2 s from idle loops"
