"""Who may do what on PostgreSQL (issue 15, defects 1 and 6).

- A cancellation is what ``cancel_job`` recorded in the client's own schema; a ``c:<id>``
  notification is only a hint to look there. A role with no privilege on neoq's tables cannot
  cancel a running job by notifying, and clients of two schemas of one database (each its own
  ``search_path``) do not cancel each other's job that has the same id.
- The listener never dies: a failure inside it is logged at ERROR with its traceback and it
  starts again.
- A role with exactly the grants of docs/postgres.md ("A role for workers") and no DDL right
  opens clients on a current schema and does everything workers and producers do, in both modes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import psycopg
import pytest
from pgfixtures import unique_name, wait_until
from pgroles import revoke_public, role, worker_grants

import neoq
from neoq import Job, JobStatus
from neoq.backends.postgres import PostgresBackend
from neoq.backends.postgres.migrations import available_migrations

pytestmark = pytest.mark.postgres


class Runs:
    """Handlers that block until released and record whether their job's cancellation reached them.

    A job's payload names it; ``started[name]`` is set when its handler runs, ``cancelled[name]``
    when its ``job_context().cancelled`` was set before it was released.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started: dict[str, threading.Event] = {}
        self.cancelled: dict[str, threading.Event] = {}
        self.release = threading.Event()

    def events(self, name: str) -> tuple[threading.Event, threading.Event]:
        with self.lock:
            return (
                self.started.setdefault(name, threading.Event()),
                self.cancelled.setdefault(name, threading.Event()),
            )

    def handler(self, job: Job) -> None:
        context = neoq.job_context()
        assert context is not None
        started, cancelled = self.events(job.payload["name"])
        started.set()
        end = time.monotonic() + 30
        while not self.release.is_set() and time.monotonic() < end:
            if context.cancelled.wait(0.01):
                cancelled.set()
                return
        if context.cancelled.is_set():
            cancelled.set()


def wait_started(runs: Runs, *names: str) -> None:
    for name in names:
        assert runs.events(name)[0].wait(20), f"job {name} did not start"


# -- defect 1: notifications are hints -----------------------------------------------------------


def test_a_role_without_privileges_cannot_cancel_a_running_job_by_notifying(pg_clean: str) -> None:
    runs = Runs()
    queue = unique_name("forged-cancel")
    with role(pg_clean) as intruder_url, neoq.new(pg_clean, shutdown_timeout=5) as nq, neoq.new(pg_clean) as other:
        nq.start(queue, neoq.Handler(runs.handler, concurrency=2, timeout=60))
        victim = nq.enqueue(Job(queue=queue, payload={"name": "victim"}))
        marker = nq.enqueue(Job(queue=queue, payload={"name": "marker"}))
        wait_started(runs, "victim", "marker")
        with psycopg.connect(intruder_url, autocommit=True) as intruder:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                intruder.execute("INSERT INTO neoq_cancellations (job_id) VALUES (%s)", [int(victim)])
            intruder.execute("SELECT pg_notify('neoq', %s)", [f"c:{victim}"])
        # The marker's real cancellation reaches the listener after the forged one: once it is
        # delivered, the forged one has been looked at too.
        other.cancel_job(marker)
        assert runs.cancelled["marker"].wait(5)
        assert not runs.cancelled["victim"].is_set(), "a forged notification cancelled the job"
        runs.release.set()
        done = wait_until(
            lambda: (
                (j := nq.get_job(victim)) is not None
                and j.status in (JobStatus.PROCESSED, JobStatus.FAILED, JobStatus.CANCELLED)
                and j
            ),
            10,
            "done",
        )
        assert done.status is JobStatus.PROCESSED
        assert nq.get_job(marker).status is JobStatus.CANCELLED  # type: ignore[union-attr]


@pytest.fixture
def two_schemas(pg_new_database: Callable[[], str]) -> tuple[str, str]:
    """One database with neoq's schema in two schemas; the URLs of clients of each (``search_path``
    in the connection string's ``options``)."""
    url = pg_new_database()
    urls = []
    with psycopg.connect(url, autocommit=True) as conn:
        for schema in ("tenant_a", "tenant_b"):
            conn.execute(f"CREATE SCHEMA {schema}")
            urls.append(f"{url}?options={quote(f'-csearch_path={schema}')}")
    for schema_url in urls:
        assert PostgresBackend(schema_url).migrate() == [version for version, _, _ in available_migrations()]
    return urls[0], urls[1]


def test_clients_on_two_schemas_do_not_cancel_each_others_job_with_the_same_id(two_schemas: tuple[str, str]) -> None:
    url_a, url_b = two_schemas
    runs_a, runs_b = Runs(), Runs()
    with (
        neoq.new(url_a, shutdown_timeout=5) as a,
        neoq.new(url_b, shutdown_timeout=5) as b,
        neoq.new(url_a) as cancels_a,
        neoq.new(url_b) as cancels_b,
    ):
        a.start("work", neoq.Handler(runs_a.handler, timeout=60))
        b.start("work", neoq.Handler(runs_b.handler, concurrency=2, timeout=60))
        job_a = a.enqueue(Job(queue="work", payload={"name": "a"}))
        victim = b.enqueue(Job(queue="work", payload={"name": "victim"}))
        marker = b.enqueue(Job(queue="work", payload={"name": "marker"}))
        assert job_a == victim  # each schema numbers its own jobs
        wait_started(runs_a, "a")
        wait_started(runs_b, "victim", "marker")

        began = time.monotonic()
        cancels_a.cancel_job(job_a)  # another client of schema a: through the store and a notification
        assert runs_a.cancelled["a"].wait(5)
        took = time.monotonic() - began
        # Schema b's listener got the same 'c:<id>'; the marker's cancellation comes after it.
        cancels_b.cancel_job(marker)
        assert runs_b.cancelled["marker"].wait(5)
        assert not runs_b.cancelled["victim"].is_set(), "a cancellation in schema a cancelled schema b's job"
        runs_b.release.set()
        done = wait_until(
            lambda: (
                (j := b.get_job(victim)) is not None
                and j.status in (JobStatus.PROCESSED, JobStatus.FAILED, JobStatus.CANCELLED)
                and j
            ),
            10,
            "done",
        )
        assert done.status is JobStatus.PROCESSED
        assert wait_until(lambda: a.get_job(job_a).status is JobStatus.CANCELLED, 5, "a cancelled")  # type: ignore[union-attr]
    assert took < 1.0, f"the cancellation took {took:.3f}s to reach the handler in another client"


def test_a_cancellation_from_another_client_reaches_the_handler_within_a_second(pg_clean: str) -> None:
    runs = Runs()
    queue = unique_name("real-cancel")
    with neoq.new(pg_clean, shutdown_timeout=5) as nq, neoq.new(pg_clean) as other:
        nq.start(queue, neoq.Handler(runs.handler, timeout=60))
        job_id = nq.enqueue(Job(queue=queue, payload={"name": "job"}))
        wait_started(runs, "job")
        began = time.monotonic()
        other.cancel_job(job_id)
        assert runs.cancelled["job"].wait(5)
        took = time.monotonic() - began
        wait_until(lambda: nq.get_job(job_id).status is JobStatus.CANCELLED, 5, "cancelled")  # type: ignore[union-attr]
    assert took < 1.0, f"the cancellation took {took:.3f}s"


# -- the listener never dies -----------------------------------------------------------------------


def test_a_failure_inside_the_listener_is_logged_and_the_listener_starts_again(
    pg_clean: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="neoq")
    queue = unique_name("listener-restart")
    ran = threading.Event()
    # A long poll interval: only notifications, which need the listener, wake the idle claim soon.
    with neoq.new(pg_clean, poll_interval=60) as nq, neoq.new(pg_clean) as producer:
        nq.start(queue, lambda job: ran.set())
        backend = nq.backend
        assert isinstance(backend, PostgresBackend)
        wait_until(lambda: backend._pools.listener._conn is not None, 5, "the listener listens")  # type: ignore[union-attr]
        real_held_ids = backend._held_ids
        failures: list[int] = []

        def held_ids() -> list[int]:
            if not failures:
                failures.append(1)
                raise SystemExit("a failure nothing inside neoq expects")
            return real_held_ids()

        monkeypatch.setattr(backend, "_held_ids", held_ids)
        listener_pid = backend._pools.listener._conn.info.backend_pid  # type: ignore[union-attr]
        with psycopg.connect(pg_clean, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [listener_pid])
        # The reconnect fails once (the lookup of cancellations requested while it was away).
        wait_until(lambda: failures, 10, "the listener reconnects and fails")
        record = wait_until(
            lambda: next((r for r in caplog.records if r.levelno == logging.ERROR and "listener" in r.message), None),
            10,
            "an ERROR line about the listener",
        )
        assert record.exc_info is not None and record.exc_info[0] is SystemExit
        wait_until(
            lambda: (c := backend._pools.listener._conn) is not None and c.info.backend_pid != listener_pid,  # type: ignore[union-attr]
            10,
            "the listener is connected again",
        )
        producer.enqueue(Job(queue=queue, payload={}))
        assert ran.wait(5), "the listener did not come back: the notification woke nobody"
        assert [t for t in threading.enumerate() if t.name == "neoq-pg-listener"]


# -- defect 6: a role without DDL rights -----------------------------------------------------------


@pytest.fixture
def schema_and_role(pg_new_database: Callable[[], str]) -> Iterator[tuple[str, str]]:
    """A current schema made by its owner (its URL), and the URL of a role with exactly the
    documented grants and nothing granted to PUBLIC."""
    url = pg_new_database()
    PostgresBackend(url).migrate()
    revoke_public(url)
    with role(url, worker_grants()) as role_url:
        with psycopg.connect(role_url, autocommit=True) as conn:
            assert conn.execute("SELECT has_schema_privilege('public', 'CREATE')").fetchone() == (False,)
        yield url, role_url


@pytest.mark.parametrize("mode", ["transaction", "lease"])
def test_a_role_with_the_documented_grants_runs_everything_without_ddl_rights(
    schema_and_role: tuple[str, str], mode: str
) -> None:
    _, worker_url = schema_and_role
    runs = Runs()
    with neoq.new(worker_url, mode=mode, shutdown_timeout=5) as nq, neoq.new(worker_url) as other:
        backend = nq.backend
        assert isinstance(backend, PostgresBackend)
        assert backend.migrate() == [] and backend.missing_migrations() == []
        # Enqueue: one job, a batch written with COPY (ids from the sequence), a job for later.
        first = nq.enqueue(Job(queue="work", payload={"name": "first"}))
        batch = nq.enqueue_many([Job(queue="batch", payload={"n": n}) for n in range(70)])
        later = nq.enqueue(
            Job(queue="work", payload={"name": "later"}, run_after=datetime.now(timezone.utc) + timedelta(hours=1))
        )
        nq.start("work", neoq.Handler(runs.handler, concurrency=2, timeout=60))
        nq.handler("batch")(lambda job: None)
        assert nq.drain(timeout=20) == 70
        wait_started(runs, "first")
        # Cancel: a waiting job at once, a running one from another client.
        nq.cancel_job(later)
        assert nq.get_job(later).status is JobStatus.CANCELLED  # type: ignore[union-attr]
        other.cancel_job(first)
        assert runs.cancelled["first"].wait(5)
        wait_until(lambda: nq.get_job(first).status is JobStatus.CANCELLED, 10, "cancelled")  # type: ignore[union-attr]
        # Retry; it runs to PROCESSED.
        runs.release.set()
        nq.retry_job(first)
        wait_until(lambda: nq.get_job(first).status is JobStatus.PROCESSED, 10, "processed")  # type: ignore[union-attr]
        assert {job.status for job in nq.list_jobs(queue="batch", limit=100)} == {JobStatus.PROCESSED}
        stats = nq.stats()
        assert stats["batch"]["processed"] == 70
        assert (stats["work"]["processed"], stats["work"]["cancelled"]) == (1, 1)
        # Cron ticks and pruning.
        tick = datetime(2030, 1, 1, tzinfo=timezone.utc)
        assert backend.enqueue_tick(Job(queue="ticks", payload={}, fingerprint="t"), "k", tick) is not None
        assert backend.last_tick("k") == tick
        cutoff = datetime.now(timezone.utc) + timedelta(days=1)
        finished = (JobStatus.PROCESSED, JobStatus.FAILED, JobStatus.CANCELLED)
        assert backend.prune(dict.fromkeys(finished, cutoff), 1000) == 72
        assert nq.get_job(batch[0]) is None


def test_a_role_that_may_not_apply_a_missing_migration_is_told_what_to_do(schema_and_role: tuple[str, str]) -> None:
    owner_url, worker_url = schema_and_role
    with psycopg.connect(owner_url, autocommit=True) as conn:
        conn.execute("DELETE FROM neoq_migrations WHERE version = 4")  # a schema from before an upgrade
    with pytest.raises(neoq.BackendError) as info:
        neoq.new(worker_url)
    assert "needs migrations 4" in str(info.value) and "neoq migrate" in str(info.value)
    assert PostgresBackend(owner_url).migrate() == [4]
    neoq.new(worker_url).shutdown()
