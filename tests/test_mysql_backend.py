"""What the MySQL/MariaDB backend promises beyond the suites: URLs, exact text, UTC times, migrations, locks."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from myfixtures import connect, server_kwargs, with_database

import neoq
from neoq import ConfigurationError, Handler, Job, JobStatus
from neoq.backends.mysql import MySQLBackend
from neoq.backends.mysql.backend import require_version
from neoq.backends.mysql.flow import FLOW_CAPABILITIES as FLOW
from neoq.errors import BackendConnectionError
from neoq.testing import wait_for

pytestmark = pytest.mark.mysql

SECRET = "Hunter2Swordfish"


def test_both_schemes_build_the_backend_and_capabilities_follow_the_mode(mysql_clean: str) -> None:
    with neoq.new(mysql_clean) as nq:
        assert type(nq.backend) is MySQLBackend
        assert nq.backend.capabilities == {"shared", "enqueue_in_transaction"} | FLOW
    with neoq.new(mysql_clean.replace("mysql://", "mariadb://", 1), mode="transaction") as nq:
        assert nq.backend.capabilities == {"shared", "enqueue_in_transaction", "transaction"} | FLOW


@pytest.mark.parametrize(
    ("url", "options", "says"),
    [
        ("mysql://u:p@127.0.0.1:3306/", {}, "names no database"),
        ("mysql://u:p@127.0.0.1:3306/db?sslmode=x", {}, "unknown URL parameter"),
        ("mysql://u:p@127.0.0.1:3306/db", {"mode": "fast"}, "mode must be"),
        ("mysql://u:p@127.0.0.1:3306/db", {"lease": 0}, "lease must be above 0"),
        ("mysql://u:p@127.0.0.1:3306/db", {"colour": "red"}, "unknown MySQL option"),
    ],
)
def test_bad_settings_are_refused_before_connecting(url: str, options: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigurationError, match=says):
        MySQLBackend(url, **options)  # type: ignore[arg-type]


def test_no_password_in_errors_or_repr() -> None:
    url = f"mysql://neoq:{SECRET}@127.0.0.1:1/db?connect_timeout=2"
    backend = MySQLBackend(url)
    assert SECRET not in repr(backend)
    with pytest.raises(BackendConnectionError) as info:
        backend.open()
    assert SECRET not in str(info.value) and "127.0.0.1" in str(info.value)


def test_wrong_password_is_reported_without_it(mysql_url: str) -> None:
    kwargs = server_kwargs(mysql_url)
    url = f"mysql://{kwargs['user']}:{SECRET}@{kwargs['host']}:{kwargs['port']}/nosuchdb"
    with pytest.raises(neoq.NeoqError) as info:
        neoq.new(url)
    assert SECRET not in str(info.value)


def test_old_servers_are_refused_with_a_clear_error() -> None:
    require_version("10.11.19-MariaDB-0+deb12u1", "mysql://h/db")
    require_version("8.0.36", "mysql://h/db")
    with pytest.raises(ConfigurationError, match=r"needs MariaDB 10\.6 or later"):
        require_version("10.5.23-MariaDB", "mysql://h/db")
    with pytest.raises(ConfigurationError, match=r"needs MySQL 8\.0 or later"):
        require_version("5.7.44-log", "mysql://h/db")


def test_text_is_compared_exactly(mysql_clean: str) -> None:
    with neoq.new(mysql_clean) as nq:
        for queue in ("q", "Q", "q "):
            nq.enqueue(Job(queue=queue, payload={}, fingerprint="f"))
        nq.enqueue(Job(queue="q", payload={}, fingerprint="F"))
        nq.enqueue(Job(queue="q", payload={}, fingerprint="f "))
        odd = 'it\'s \\ "x" ; -- %s ü'
        many = nq.enqueue_many([Job(queue="q", payload={"odd": odd}, fingerprint=odd), Job(queue=odd, payload={})])
        assert [(j.queue, j.fingerprint, j.payload) for j in map(nq.get_job, many)] == [  # type: ignore[union-attr]
            ("q", odd, {"odd": odd}),
            (odd, nq.get_job(many[1]).fingerprint, {}),  # type: ignore[union-attr]
        ]
        with pytest.raises(neoq.DuplicateJobError):
            nq.enqueue(Job(queue="q", payload={}, fingerprint="f"))
        assert {queue: counts["new"] for queue, counts in nq.stats().items()} == {"q": 4, "Q": 1, "q ": 1, odd: 1}


def test_times_are_utc_with_microseconds_whatever_the_session_zone(mysql_clean: str) -> None:
    when = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=-3)))
    with neoq.new(mysql_clean) as nq:
        caller = connect(mysql_clean)
        try:
            with caller.cursor() as cur:
                cur.execute("SET time_zone = '+05:00'")
            job_id = nq.enqueue(Job(queue="tz", payload={}, run_after=when), connection=caller)
            caller.commit()
        finally:
            caller.close()
        job = nq.get_job(job_id)
        assert job is not None and job.run_after == when and job.run_after.tzinfo == timezone.utc
        assert job.created_at is not None
        assert abs(job.created_at - datetime.now(timezone.utc)) < timedelta(seconds=30)


def test_migrations_apply_once_when_processes_start_together(mysql_server: str) -> None:
    name = f"neoq_test_mysql_migrate_{time.monotonic_ns() % 10**9}"
    admin = connect(mysql_server, autocommit=True)
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}`")
        url = with_database(mysql_server, name)
        assert MySQLBackend(url).missing_migrations() == [1, 2, 3]
        applied: list[list[int]] = []
        threads = [threading.Thread(target=lambda: applied.append(MySQLBackend(url).migrate())) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(applied) == [[], [], [], [1, 2, 3]]
        assert MySQLBackend(url).missing_migrations() == []
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


def test_a_held_claim_blocks_no_enqueue_and_reads_running(mysql_clean: str) -> None:
    """READ COMMITTED: the row lock a transaction-mode claim holds leaves inserts and reads alone."""
    entered, release = threading.Event(), threading.Event()

    def hold(job: Job) -> None:
        entered.set()
        release.wait(10)

    with neoq.new(mysql_clean, mode="transaction") as nq:
        nq.start("held", Handler(hold, concurrency=1))
        held = nq.enqueue(Job(queue="held", payload={"n": 0}))
        assert entered.wait(10)
        started = time.monotonic()
        for n in range(1, 21):
            nq.enqueue(Job(queue="held", payload={"n": n}))
        with pytest.raises(neoq.DuplicateJobError) as info:
            nq.enqueue(Job(queue="held", payload={"n": 0}))
        assert info.value.job_id == held
        assert time.monotonic() - started < 2.0
        assert nq.get_job(held).status is JobStatus.RUNNING  # type: ignore[union-attr]
        assert nq.stats()["held"]["running"] == 1
        release.set()
        wait_for(lambda: nq.get_job(held).status is JobStatus.PROCESSED, 10)  # type: ignore[union-attr]


def test_a_transaction_mode_claim_reads_every_field_whatever_its_text(mysql_clean: str) -> None:
    """The claim's row comes back packed ('|'-separated fields, the fingerprint last): texts holding '|' survive."""
    odd = "a|b||ü 'x' \\ %s|"
    seen: list[Job] = []

    def handler(job: Job) -> None:
        seen.append(job)
        if len(seen) == 1:
            raise RuntimeError(odd)

    with neoq.new(mysql_clean, mode="transaction") as nq:
        job_id = nq.enqueue(Job(queue=odd, payload={"odd": odd}, fingerprint=odd, priority=3, max_retries=2))
        nq.start(odd, Handler(handler, backoff=lambda retries: 0))
        wait_for(lambda: nq.get_job(job_id).status is JobStatus.PROCESSED, 10)  # type: ignore[union-attr]
    first, second = seen
    assert [(j.id, j.queue, j.fingerprint, j.payload, j.priority, j.max_retries) for j in seen] == [
        (job_id, odd, odd, {"odd": odd}, 3, 2)
    ] * 2
    assert (first.attempts, first.error, first.retries) == (1, None, 0)
    assert (second.attempts, second.retries, odd in (second.error or "")) == (2, 1, True)


def test_a_handler_writes_through_its_transaction(mysql_clean: str) -> None:
    with neoq.new(mysql_clean, mode="transaction") as nq:
        setup = connect(mysql_clean, autocommit=True)
        try:
            with setup.cursor() as cur:
                cur.execute("CREATE TABLE IF NOT EXISTS effects (n INT NOT NULL)")
                cur.execute("DELETE FROM effects")
        finally:
            setup.close()

        def write(job: Job) -> None:
            context = neoq.job_context()
            assert context is not None
            with context.transaction.cursor() as cur:
                cur.execute("INSERT INTO effects (n) VALUES (%s)", (job.payload["n"],))
            if job.payload["n"] == 2:
                raise RuntimeError("rolled back")

        nq.start("effects", Handler(write, concurrency=2, max_retries=0))
        ok = nq.enqueue(Job(queue="effects", payload={"n": 1}))
        bad = nq.enqueue(Job(queue="effects", payload={"n": 2}))
        wait_for(lambda: nq.get_job(ok).status is JobStatus.PROCESSED, 10)  # type: ignore[union-attr]
        wait_for(lambda: nq.get_job(bad).status is JobStatus.FAILED, 10)  # type: ignore[union-attr]
        reader = connect(mysql_clean, autocommit=True)
        try:
            with reader.cursor() as cur:
                cur.execute("SELECT n FROM effects ORDER BY n")
                assert cur.fetchall() == ((1,),)
        finally:
            reader.close()


def test_a_batch_larger_than_one_statement_is_all_or_nothing(mysql_clean: str) -> None:
    with neoq.new(mysql_clean) as nq:
        ids = nq.enqueue_many([Job(queue="big", payload={"i": i}) for i in range(5000)])
        assert len(set(ids)) == 5000
        assert [nq.get_job(ids[i]).payload["i"] for i in (0, 2500, 4999)] == [0, 2500, 4999]  # type: ignore[union-attr]
        batch = [Job(queue="big", payload={"i": 10_000 + i}) for i in range(4500)]
        batch.append(Job(queue="big", payload={"i": 7}))
        with pytest.raises(neoq.DuplicateJobError) as info:
            nq.enqueue_many(batch)
        assert info.value.job_id == ids[7]
        assert nq.stats()["big"]["new"] == 5000


@pytest.mark.parametrize("mode", ["lease", "transaction"])
def test_a_forked_child_runs_jobs_with_a_client_opened_before_the_fork(mysql_clean: str, mode: str) -> None:
    """An app server that forks its workers after loading the app (gunicorn --preload)."""
    import os

    with neoq.new(mysql_clean, mode=mode, lease=2) as nq:
        nq.handler(f"fork-{mode}")(lambda job: None)
        job_id = nq.enqueue(Job(queue=f"fork-{mode}", payload={}))
        assert nq.stats()[f"fork-{mode}"]["new"] == 1  # the parent's pools hold connections now
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                assert nq.drain(timeout=10) == 1
                nq.shutdown()  # lease mode writes its outcomes in batches: the last ones at close
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert nq.get_job(job_id).status is JobStatus.PROCESSED  # type: ignore[union-attr]
        assert nq.enqueue(Job(queue=f"fork-{mode}", payload={"after": 1}))  # the parent's sessions still work


def test_a_streamed_batch_reports_its_errors_as_if_every_job_was_checked_first(mysql_clean: str) -> None:
    """A large batch is prepared while its chunks are written (batches.stream): whatever it sent is
    rolled back, and the error is the one checking every job first finds."""
    with neoq.new(mysql_clean) as nq:
        stored = nq.enqueue(Job(queue="s", payload={"i": 3}))
        # An invalid job while the first chunk's INSERT is still outstanding.
        batch = [Job(queue="s", payload={"i": 10_000 + i}) for i in range(800)]
        batch[700] = Job(queue="s", payload={"bad": float("nan")})
        with pytest.raises(neoq.InvalidJobError, match="job 700"):
            nq.enqueue_many(batch)
        # A duplicate of the stored job in the first chunk, an invalid job at the end: the invalid one.
        batch = [Job(queue="s", payload={"i": i}) for i in range(1200)]
        batch.append(Job(queue="s", payload={"bad": float("inf")}))
        with pytest.raises(neoq.InvalidJobError, match="job 1200"):
            nq.enqueue_many(batch)
        # ... and a duplicate within the batch, across chunks: the batch's own.
        batch = [Job(queue="s", payload={"i": i}) for i in range(1200)] + [Job(queue="s", payload={"i": 900})]
        with pytest.raises(neoq.DuplicateJobError, match="jobs 900 and 1200"):
            nq.enqueue_many(batch)
        # Only the duplicate of the stored job: it is named.
        with pytest.raises(neoq.DuplicateJobError) as info:
            nq.enqueue_many([Job(queue="s", payload={"i": i}) for i in range(1200)])
        assert info.value.job_id == stored
        assert nq.stats()["s"]["new"] == 1
        # The pooled connection goes on: quotes, backslashes and % stored as given, ids in order.
        texts = [f"it's \\ {i} %s \"q\" \n" for i in range(1500)]
        ids = nq.enqueue_many([Job(queue="s", payload={"t": text}) for text in texts])
        assert ids == sorted(ids, key=int) and len(set(ids)) == 1500
        for index in (0, 499, 500, 1000, 1499):
            job = nq.get_job(ids[index])
            assert job is not None and job.payload == {"t": texts[index]}
        assert nq.stats()["s"]["new"] == 1501


def test_the_pool_lends_each_connection_to_one_thread_at_a_time(mysql_clean: str) -> None:
    """get() and put() take no lock in the common case: a connection is never lent twice, a get()
    waiting for one is woken by a put(), and close() leaves none open."""
    from neoq.backends.mysql.pools import Pool, connect
    from neoq.backends.mysql.settings import parse_settings

    settings = parse_settings(mysql_clean)
    made: list[Any] = []
    pool = Pool(lambda: made.append(connect(settings)) or made[-1], 3, 10.0, "test")
    lent: set[int] = set()
    guard = threading.Lock()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(400):
                conn = pool.get()
                with guard:
                    assert id(conn) not in lent, "a connection was lent twice"
                    lent.add(id(conn))
                time.sleep(0)
                with guard:
                    lent.discard(id(conn))
                pool.put(conn)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(made) <= 3
    pool.close()
    assert all(conn.open is False for conn in made)
