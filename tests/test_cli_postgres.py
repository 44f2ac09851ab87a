"""The ``neoq`` command and job management against a real PostgreSQL server, across processes."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone

import psycopg
import pytest
from cli_helpers import NeoqProcess, neoq_env, run_neoq
from pgroles import revoke_public, role, worker_grants

import neoq
from neoq import Job, JobStatus, cli
from neoq.backends.postgres.migrations import available_migrations
from neoq.redact import redact_url
from neoq.testing import wait_for

pytestmark = pytest.mark.postgres


@pytest.fixture
def nq(pg_clean: str) -> Iterator[neoq.Neoq]:
    client = neoq.new(pg_clean, shutdown_timeout=5)
    yield client
    client.shutdown()


@pytest.fixture
def worker(pg_clean: str) -> Iterator[object]:
    started: list[NeoqProcess] = []

    def start(*extra: str, shutdown: float = 5.0) -> NeoqProcess:
        env = neoq_env(CLI_APP_SHUTDOWN=str(shutdown))
        process = NeoqProcess(["--url", pg_clean, *extra, "worker", "cli_app:make"], env=env)
        started.append(process)
        # Ready once the worker has logged that it serves its queues.
        process.expect_log("serving other, work", timeout=15)
        return process

    yield start
    for process in started:
        process.close()


def main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_commands_in_process(pg_clean, nq, capsys):
    url = pg_clean
    status, out, _ = main(capsys, "--url", url, "migrate")
    assert status == 0 and out.strip().endswith("the schema was already up to date; nothing applied")
    status, out, _ = main(capsys, "--url", url, "--json", "enqueue", "mail", '{"to": 1}', "--max-retries", "3")
    first = json.loads(out)["id"]
    status, out, _ = main(capsys, "--url", url, "enqueue", "mail", '{"to": 2}', "--run-after", "2099-01-01T00:00Z")
    second = out.strip()
    assert status == 0 and nq.get_job(second).run_after.year == 2099
    assert nq.get_job(first).max_retries == 3

    status, out, _ = main(capsys, "--url", url, "jobs", "list", "--queue", "mail")
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "QUEUE", "STATUS", "PRIORITY", "ATTEMPTS", "CREATED", "RUN", "AFTER", "ERROR"]
    assert [line.split()[0] for line in lines[1:]] == [second, first]  # newest first
    assert lines[0].index("STATUS") == lines[1].index("new")  # aligned
    status, out, _ = main(capsys, "--url", url, "--json", "jobs", "list", "--status", "new", "--limit", "1")
    assert [job["id"] for job in json.loads(out)] == [second]

    status, out, _ = main(capsys, "--url", url, "jobs", "show", first)
    assert status == 0 and "queue" in out and '"to": 1' in out
    status, out, _ = main(capsys, "--url", url, "--json", "jobs", "show", first)
    assert json.loads(out)["payload"] == {"to": 1} and json.loads(out)["status"] == "new"

    status, out, _ = main(capsys, "--url", url, "jobs", "cancel", first)
    assert out.strip() == f"job {first} cancelled" and nq.get_job(first).status is JobStatus.CANCELLED
    status, out, _ = main(capsys, "--url", url, "jobs", "cancel", first)
    assert "already finished (cancelled); nothing changed" in out
    status, out, _ = main(capsys, "--url", url, "--json", "jobs", "retry", first)
    assert json.loads(out) == {"id": first, "status": "new"}
    status, out, _ = main(capsys, "--url", url, "jobs", "retry", first)
    assert out.strip() == f"job {first} is already waiting; nothing changed"

    status, out, _ = main(capsys, "--url", url, "stats")
    assert out.splitlines()[0].split() == ["QUEUE", "NEW", "RUNNING", "PROCESSED", "FAILED", "CANCELLED"]
    assert out.splitlines()[1].split() == ["mail", "2", "0", "0", "0", "0"]
    status, out, _ = main(capsys, "--url", url, "--json", "stats")
    assert json.loads(out) == {"mail": {"new": 2, "running": 0, "processed": 0, "failed": 0, "cancelled": 0}}

    for action in ("show", "retry", "cancel"):
        for job_id in ("987654321", "not-a-number"):
            status, out, err = main(capsys, "--url", url, "jobs", action, job_id)
            assert status == 1 and out == "" and err == f"neoq: error: no job has id {job_id!r}\n", (action, err)


def test_show_prints_result_traceback_and_progress(pg_clean, nq, capsys):
    def report(job: Job) -> dict[str, object]:
        context = neoq.job_context()
        assert context is not None
        context.progress(1.0, "all rows")
        return {"rows": 3, "name": "é"}

    def fail(job: Job) -> None:
        raise ValueError("no such row")

    nq.start("report", report)
    nq.start("fail", neoq.Handler(fail, max_retries=0))
    done, failed = nq.enqueue(Job(queue="report")), nq.enqueue(Job(queue="fail"))
    wait_for(lambda: nq.get_job(done).status is JobStatus.PROCESSED and nq.get_job(failed).status is JobStatus.FAILED)
    status, out, _ = main(capsys, "--url", pg_clean, "jobs", "show", done)
    assert status == 0 and out.endswith('result\n{\n  "rows": 3,\n  "name": "é"\n}\n') and "traceback" not in out
    assert ["progress", "1.0"] in [line.split() for line in out.splitlines()]
    assert ["progress_note", "all", "rows"] in [line.split() for line in out.splitlines()]
    status, out, _ = main(capsys, "--url", pg_clean, "--json", "jobs", "show", done)
    data = json.loads(out)
    assert (data["result"], data["progress"], data["progress_note"], data["traceback"]) == (
        {"rows": 3, "name": "é"}, 1.0, "all rows", None
    )
    status, out, _ = main(capsys, "--url", pg_clean, "jobs", "show", failed)
    tail = out.split("\ntraceback\n", 1)[1]
    assert tail.startswith("Traceback (most recent call last):") and tail.endswith("ValueError: no such row\n")
    status, out, _ = main(capsys, "--url", pg_clean, "--json", "jobs", "show", failed)
    assert json.loads(out)["traceback"].endswith("ValueError: no such row\n")


def test_empty_store_and_duplicates(pg_clean, capsys):
    status, out, _ = main(capsys, "--url", pg_clean, "jobs", "list")
    assert (status, out) == (0, "no jobs\n")
    status, out, _ = main(capsys, "--url", pg_clean, "stats")
    assert (status, out) == (0, "no jobs\n")
    assert main(capsys, "--url", pg_clean, "enqueue", "dup", "{}")[0] == 0
    status, out, err = main(capsys, "--url", pg_clean, "enqueue", "dup", "{}")
    assert status == 1 and err.startswith("neoq: error: ") and err.count("\n") == 1


def test_subprocess_commands_share_the_database(pg_clean, nq):
    env = neoq_env(NEOQ_URL=pg_clean)  # the URL from the environment this time
    result = run_neoq(["enqueue", "shared", '{"n": 1}'], env=env)
    assert result.returncode == 0 and result.stderr == ""
    job_id = result.stdout.strip()
    assert nq.get_job(job_id).payload == {"n": 1}
    result = run_neoq(["--json", "jobs", "show", job_id], env=env)
    assert json.loads(result.stdout)["queue"] == "shared"
    for argv in (["jobs", "show", "424242"], ["jobs", "retry", "424242"], ["jobs", "cancel", "x"]):
        result = run_neoq(argv, env=env)
        assert result.returncode == 1 and result.stdout == ""
        assert result.stderr == f"neoq: error: no job has id {argv[-1]!r}\n"


def test_worker_drains_on_sigterm_and_exits_0(worker, nq):
    process = worker()
    job_id = nq.enqueue(Job(queue="work", payload={"sleep": 0.8}))
    assert process.expect("started", timeout=10) == f"started {job_id}"
    process.send(signal.SIGTERM)
    assert process.expect("finished") == f"finished {job_id}"
    assert process.wait(10) == 0
    assert nq.get_job(job_id).status is JobStatus.PROCESSED


def test_second_signal_exits_at_once_and_the_job_runs_again(worker, nq):
    process = worker(shutdown=60)
    job_id = nq.enqueue(Job(queue="work", payload={"sleep": 60, "stubborn": True}))
    process.expect("started", timeout=10)
    process.send(signal.SIGTERM)
    process.expect_log("finishing running jobs")
    process.send(signal.SIGTERM)
    assert process.wait(5) == 143
    # The attempt's transaction died with the process: the job is waiting again, its attempt counted.
    job = wait_for(lambda: (j := nq.get_job(job_id)) is not None and j.status is JobStatus.NEW and j)
    assert job.attempts == 1
    again = worker(shutdown=60)
    assert again.expect("started", timeout=10) == f"started {job_id}"
    again.send(signal.SIGINT)
    again.expect_log("finishing running jobs")
    again.send(signal.SIGINT)
    assert again.wait(5) == 130


def test_cancel_reaches_a_job_running_in_another_process_within_1s(worker, nq):
    process = worker()
    job_id = nq.enqueue(Job(queue="work", payload={"sleep": 30}))
    process.expect("started", timeout=10)
    asked = time.monotonic()
    nq.cancel_job(job_id)
    assert process.expect("cancelled", timeout=5) == f"cancelled {job_id}"
    assert time.monotonic() - asked < 1.0
    wait_for(lambda: nq.get_job(job_id).status is JobStatus.CANCELLED)
    process.expect_log(f"job {job_id} queue='work' attempt=1 cancelled after")  # logged just after the settle
    process.send(signal.SIGTERM)
    assert process.wait(10) == 0


def test_cli_cancel_of_a_running_job(worker, pg_clean, nq):
    process = worker()
    job_id = nq.enqueue(Job(queue="work", payload={"sleep": 30}))
    process.expect("started", timeout=10)
    result = run_neoq(["--url", pg_clean, "jobs", "cancel", job_id])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in (
        f"job {job_id} is running: its worker was asked to stop it, and it will end cancelled",
        f"job {job_id} cancelled",  # the worker was faster than the command's second read
    )
    assert process.expect("cancelled", timeout=1.0) == f"cancelled {job_id}"
    wait_for(lambda: nq.get_job(job_id).status is JobStatus.CANCELLED)
    process.send(signal.SIGTERM)
    assert process.wait(10) == 0


def test_retry_and_stats_after_a_worker_ran_jobs(worker, nq, pg_clean):
    process = worker()
    ok = nq.enqueue(Job(queue="work", payload={"sleep": 0}))
    bad = nq.enqueue(Job(queue="work", payload={"fail": True}, max_retries=0))
    wait_for(lambda: nq.get_job(bad).status is JobStatus.FAILED and nq.get_job(ok).status is JobStatus.PROCESSED)
    assert nq.stats()["work"] == {"new": 0, "running": 0, "processed": 1, "failed": 1, "cancelled": 0}
    assert nq.get_job(bad).error == "RuntimeError: asked to fail"
    result = run_neoq(["--url", pg_clean, "jobs", "list", "--status", "failed"])
    assert result.stdout.splitlines()[1].split()[:5] == [bad, "work", "failed", "0", "1"]
    assert "RuntimeError: asked to fail" in result.stdout
    process.expect(f"started {bad}")  # the first run
    nq.retry_job(bad)
    process.expect(f"started {bad}", timeout=10)  # run again (and it fails again: the payload says so)
    wait_for(lambda: nq.get_job(bad).status is JobStatus.FAILED and nq.get_job(bad).attempts == 1)
    process.send(signal.SIGTERM)
    assert process.wait(10) == 0


# -- the schema: made by neoq migrate, never by the commands that look at jobs ----------------------


def neoq_tables(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT relname FROM pg_class WHERE relname LIKE 'neoq%' AND relkind = 'r'").fetchall()
    return sorted(name for (name,) in rows)


#: The newest schema version neoq ships.
LATEST = available_migrations()[-1][0]

#: The commands that read or manage jobs in a store that workers use.
JOB_COMMANDS = (["stats"], ["jobs", "list"], ["jobs", "show", "1"], ["jobs", "retry", "1"], ["jobs", "cancel", "1"])


def test_migrate_says_which_migrations_it_applied(pg_new_database: Callable[[], str]) -> None:
    url = pg_new_database()
    shown = redact_url(url)
    result = run_neoq(["--url", url, "migrate"])
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout == f"{shown}: applied migrations 1-{LATEST}; the schema is up to date\n"
    result = run_neoq(["--url", url, "migrate"])
    assert result.stdout == f"{shown}: the schema was already up to date; nothing applied\n"
    result = run_neoq(["--url", url, "--json", "migrate"])
    assert json.loads(result.stdout) == {"url": shown, "migrated": True, "applied": []}


def test_commands_on_jobs_never_create_the_schema_and_say_how_to(pg_new_database: Callable[[], str]) -> None:
    url = pg_new_database()
    for argv in JOB_COMMANDS:
        result = run_neoq(["--url", url, *argv])
        assert (result.returncode, result.stdout) == (1, ""), argv
        assert result.stderr == (
            "neoq: error: the database has no neoq schema: create it with `neoq migrate` (same --url), then try again\n"
        ), argv
    assert neoq_tables(url) == []
    assert run_neoq(["--url", url, "migrate"]).returncode == 0
    assert run_neoq(["--url", url, "stats"]).stdout == "no jobs\n"


def test_commands_on_jobs_never_migrate_an_old_schema(pg_new_database: Callable[[], str]) -> None:
    url = pg_new_database()
    with psycopg.connect(url, autocommit=True) as conn:  # as a neoq with migrations 1-2 left it
        conn.execute("CREATE TABLE neoq_migrations (version integer PRIMARY KEY, name text NOT NULL)")
        for version, name, text in available_migrations()[:2]:
            conn.execute(text.encode())
            conn.execute("INSERT INTO neoq_migrations VALUES (%s, %s)", [version, name])
    for argv in (["stats"], ["jobs", "list"]):
        result = run_neoq(["--url", url, *argv])
        assert (result.returncode, result.stdout) == (1, ""), argv
        assert result.stderr == (
            f"neoq: error: the neoq schema of the database is out of date (it lacks migrations 3-{LATEST}): "
            "upgrade it with `neoq migrate` (same --url), then try again\n"
        ), argv
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT max(version) FROM neoq_migrations").fetchone() == (2,)
    result = run_neoq(["--url", url, "migrate"])
    assert result.stdout == f"{redact_url(url)}: applied migrations 3-{LATEST}; the schema is up to date\n"


def test_every_command_works_for_a_role_without_ddl_rights(pg_new_database: Callable[[], str]) -> None:
    url = pg_new_database()
    assert run_neoq(["--url", url, "migrate"]).returncode == 0  # at deploy time, by the schema's owner
    revoke_public(url)
    with role(url, worker_grants()) as worker_url:
        env = neoq_env(NEOQ_URL=worker_url)
        result = run_neoq(["migrate"], env=env)
        assert result.returncode == 0 and result.stdout.endswith("already up to date; nothing applied\n"), result.stderr
        result = run_neoq(["enqueue", "mail", '{"to": 1}'], env=env)
        assert result.returncode == 0, result.stderr
        job_id = result.stdout.strip()
        for argv in (["stats"], ["jobs", "list"], ["jobs", "show", job_id], ["jobs", "cancel", job_id]):
            result = run_neoq(argv, env=env)
            assert result.returncode == 0 and result.stderr == "", (argv, result.stderr)
        assert json.loads(run_neoq(["--json", "stats"], env=env).stdout)["mail"]["cancelled"] == 1
        assert run_neoq(["jobs", "retry", job_id], env=env).stdout == f"job {job_id} will run again\n"


def test_commands_read_times_in_utc_whatever_the_session_timezone(pg_clean: str, nq: neoq.Neoq) -> None:
    job_id = nq.enqueue(Job(queue="tz", payload={}))
    with psycopg.connect(pg_clean, autocommit=True) as conn:  # as an older neoq stored deadline=datetime.max
        conn.execute("UPDATE neoq_jobs SET deadline = '9999-12-31 23:59:59.999999+00' WHERE id = %s", [int(job_id)])
    env = neoq_env(NEOQ_URL=pg_clean, PGTZ="Europe/Berlin")  # a year 10000 in Berlin
    result = run_neoq(["--json", "jobs", "show", job_id], env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["deadline"] == "9999-12-31T23:59:59.999999+00:00"
    result = run_neoq(["--json", "jobs", "list"], env=env)
    assert [job["deadline"] for job in json.loads(result.stdout)] == ["9999-12-31T23:59:59.999999+00:00"]


def test_running_jobs_in_list_show_and_stats(worker, pg_clean, nq):
    process = worker()
    job_id = nq.enqueue(Job(queue="work", payload={"sleep": 30}))
    waiting = nq.enqueue(Job(queue="work", payload={"later": 1}, run_after=datetime(2099, 1, 1, tzinfo=timezone.utc)))
    assert process.expect("started", timeout=10) == f"started {job_id}"
    # Other processes (the commands) see the job running in the worker process.
    result = run_neoq(["--url", pg_clean, "jobs", "list", "--status", "running"])
    assert result.returncode == 0, result.stderr
    assert [line.split()[:5] for line in result.stdout.splitlines()[1:]] == [[job_id, "work", "running", "0", "1"]]
    result = run_neoq(["--url", pg_clean, "--json", "jobs", "list", "--status", "new"])
    assert [job["id"] for job in json.loads(result.stdout)] == [waiting]
    result = run_neoq(["--url", pg_clean, "--json", "jobs", "show", job_id])
    shown = json.loads(result.stdout)
    assert shown["status"] == "running" and shown["ran_at"] is not None and shown["finished_at"] is None
    result = run_neoq(["--url", pg_clean, "stats"])
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["QUEUE", "NEW", "RUNNING", "PROCESSED", "FAILED", "CANCELLED"]
    assert lines[1].split() == ["work", "1", "1", "0", "0", "0"]
    result = run_neoq(["--url", pg_clean, "jobs", "retry", job_id])
    assert result.stdout.strip() == f"job {job_id} is already running; nothing changed"
    result = run_neoq(["--url", pg_clean, "jobs", "cancel", job_id])
    assert "had already finished" not in result.stdout
    assert process.expect("cancelled", timeout=5) == f"cancelled {job_id}"
    job = wait_for(lambda: (j := nq.get_job(job_id)) is not None and j.status is JobStatus.CANCELLED and j)
    assert job.finished_at is not None and job.ran_at is not None and job.finished_at > job.ran_at
    result = run_neoq(["--url", pg_clean, "--json", "stats"])
    assert json.loads(result.stdout) == {"work": {"new": 1, "running": 0, "processed": 0, "failed": 0, "cancelled": 1}}
    process.send(signal.SIGTERM)
    assert process.wait(10) == 0


def test_queues_list_pause_and_resume(nq: neoq.Neoq, pg_clean: str) -> None:
    nq.enqueue(Job(queue="work", payload={"n": 1}))
    assert run_neoq(["--url", pg_clean, "queues", "list"]).stdout.split() == [
        *("QUEUE", "STATE", "NEW", "RUNNING"),
        *("work", "active", "1", "0"),
    ]
    result = run_neoq(["--url", pg_clean, "queues", "pause", "work"])
    assert result.returncode == 0 and "paused" in result.stdout
    assert nq.paused_queues() == {"work"}
    listed = json.loads(run_neoq(["--url", pg_clean, "--json", "queues", "list"]).stdout)
    assert listed == [{"queue": "work", "paused": True, "new": 1, "running": 0}]
    assert "work (paused)" in run_neoq(["--url", pg_clean, "stats"]).stdout
    assert run_neoq(["--url", pg_clean, "queues", "resume", "work"]).returncode == 0
    assert nq.paused_queues() == set()
    assert run_neoq(["--url", pg_clean, "queues", "pause", ""]).returncode == 1  # a bad name: one error line
