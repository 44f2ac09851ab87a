"""The ``neoq`` command: parsing, output, and one clear line for every bad input (memory backend)."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone

import cli_app
import pytest
from cli_helpers import TESTS_DIR, run_neoq

import neoq
from neoq import cli
from neoq.testing import wait_for

# -- helpers ------------------------------------------------------------------------------------


def test_mask_secrets_hides_url_and_keyword_passwords():
    assert cli.mask_secrets("postgresql://app:s3cr%40t@db:5432/x") == "postgresql://***@db:5432/x"
    assert cli.mask_secrets("see postgres://u:p/w@h/db now") == "see postgres://***@h/db now"
    assert cli.mask_secrets("host=db password=hunter2 user=x") == "host=db password=*** user=x"
    assert cli.mask_secrets("password = 'a b\\'c' user=x") == "password = *** user=x"
    assert cli.mask_secrets("postgresql://app@db/x") == "postgresql://***@db/x"
    assert cli.mask_secrets("memory://") == "memory://"
    assert cli.mask_secrets("at postgresql://u:p@ss@db/x: refused") == "at postgresql://***@db/x: refused"
    assert cli.mask_secrets('neoq.new("app:Hunter2Secret@127.0.0.1/db")') == 'neoq.new("app:***@127.0.0.1/db")'


def test_format_table_aligns_columns():
    text = cli.format_table(["ID", "N"], [["1", "5"], ["1234", "10"]], right=[1])
    assert text.splitlines() == ["ID     N", "1      5", "1234  10"]


def test_job_to_dict_is_json_ready():
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    job = neoq.Job(queue="q", payload={"a": [1]}, run_after=when, id="7")
    data = cli.job_to_dict(job)
    assert data["run_after"] == "2030-01-02T03:04:05+00:00"
    assert data["status"] == "new" and data["payload"] == {"a": [1]} and data["id"] == "7"
    json.dumps(data)


# -- commands in-process --------------------------------------------------------------------------


def test_enqueue_on_memory_prints_the_id_and_warns(capsys, monkeypatch):
    monkeypatch.delenv("NEOQ_URL", raising=False)
    assert cli.main(["enqueue", "emails", '{"to": 7}', "--max-retries", "2", "--run-after", "2030-01-01T00:00Z"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "1"
    assert "no --url or NEOQ_URL: the job went to a private memory:// store" in err


@pytest.mark.parametrize("explicit", ["--url", "NEOQ_URL"])
def test_enqueue_on_memory_given_explicitly_does_not_say_no_url_was_given(capsys, monkeypatch, explicit):
    monkeypatch.delenv("NEOQ_URL", raising=False)
    if explicit == "NEOQ_URL":
        monkeypatch.setenv("NEOQ_URL", "memory://")
    argv = ["--url", "memory://"] if explicit == "--url" else []
    assert cli.main([*argv, "enqueue", "emails", "{}"]) == 0
    err = capsys.readouterr().err
    assert "private memory:// store" in err and "no --url or NEOQ_URL" not in err


def test_enqueue_json_output(capsys):
    argv = ["--url", "memory://", "--json", "enqueue", "emails", "{}", "--deadline", "2030-01-01T00:00+02:00"]
    assert cli.main(argv) == 0
    out, _ = capsys.readouterr()
    assert json.loads(out) == {"id": "1", "queue": "emails"}


def test_migrate_on_memory_says_there_is_nothing_to_do(capsys):
    assert cli.main(["migrate"]) == 0
    assert "nothing to migrate" in capsys.readouterr().out
    assert cli.main(["--json", "migrate"]) == 0
    assert json.loads(capsys.readouterr().out) == {"url": "memory://", "migrated": False}


@pytest.mark.parametrize("argv", [["stats"], ["jobs", "list"], ["jobs", "show", "1"], ["--url", "memory://", "stats"]])
def test_inspecting_commands_refuse_the_private_memory_store(capsys, monkeypatch, argv):
    monkeypatch.delenv("NEOQ_URL", raising=False)
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "memory:// is private to each process" in err and "PostgreSQL" in err


def test_usage_errors_exit_2(capsys):
    for argv in ([], ["nope"], ["jobs"], ["jobs", "list", "--status", "done"], ["enqueue", "q"],
                 ["enqueue", "q", "{}", "--max-retries", "-1"], ["enqueue", "q", "{}", "--run-after", "tomorrow"],
                 ["worker", "no_colon"]):
        with pytest.raises(SystemExit) as raised:
            cli.main(argv)
        assert raised.value.code == 2, argv
        assert "usage: neoq" in capsys.readouterr().err


def test_traceback_flag_shows_the_traceback(capsys):
    assert cli.main(["--traceback", "--url", "nosuch://x", "stats"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("neoq: error: unknown backend URL")


def test_worker_in_process_runs_until_stopped(monkeypatch):
    monkeypatch.setenv("CLI_APP_JOBS", json.dumps([{"sleep": 0}]))
    monkeypatch.setenv("NEOQ_URL", "memory://")  # the private store, given explicitly
    before = len(cli_app.clients)
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(cli.main(["worker", "cli_app:make"])))
    runner.start()
    client = wait_for(lambda: len(cli_app.clients) > before and cli_app.clients[-1])
    wait_for(lambda: client.stats().get("work", {}).get("processed") == 1)
    client.stop()
    runner.join(10)
    assert result == [0] and client.closed


def run_worker_briefly(nq: neoq.Neoq) -> object:
    """``cli.run_worker(nq)`` in a thread: what it raised, or its exit status once it ran a job
    and was stopped."""
    result: list[object] = []

    def target() -> None:
        try:
            result.append(cli.run_worker(nq, name="app:nq"))
        except cli.CommandError as exc:
            result.append(exc)

    nq.enqueue(neoq.Job(queue="emails"))
    runner = threading.Thread(target=target)
    runner.start()
    wait_for(lambda: result or nq.stats()["emails"]["processed"] == 1)
    nq.stop()
    runner.join(10)
    return result[0]


def test_a_worker_refuses_the_implicit_memory_store(monkeypatch):
    """A worker on neoq.new() with no URL and no NEOQ_URL would run on a store no other process
    can reach: it refuses, saying what to set; memory:// given explicitly is accepted."""
    monkeypatch.delenv("NEOQ_URL", raising=False)
    nq = neoq.new()
    nq.handler("emails")(lambda job: None)
    try:
        refused = run_worker_briefly(nq)
    finally:
        nq.shutdown()
    assert isinstance(refused, cli.CommandError)
    message = str(refused)
    assert "app:nq has no backend URL" in message and "NEOQ_URL" in message and "memory://" in message
    for explicit in (lambda: neoq.new("memory://"), lambda: neoq.new(backend=neoq.backends.MemoryBackend())):
        nq = explicit()
        nq.handler("emails")(lambda job: None)
        assert run_worker_briefly(nq) == 0 and nq.closed


def test_load_client_accepts_a_client_or_a_factory(monkeypatch):
    made = cli.load_client("cli_app:make")
    try:
        assert isinstance(made, neoq.Neoq) and "work" in made.handlers
        monkeypatch.setattr(cli_app, "nq", made, raising=False)
        assert cli.load_client("cli_app:nq") is made
    finally:
        made.shutdown()


# -- bad input: one clear line on stderr, exit 1, no traceback (real subprocesses) -------------------

APP = """
import neoq
nq = neoq.new()
not_a_client = 42
def returns_nothing():
    return None
def explodes():
    raise RuntimeError("factory failed")
empty = neoq.new()
"""


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cliapp")
    (path / "goodapp.py").write_text(APP)
    (path / "brokenapp.py").write_text("import neoq\nvalue = 1 / 0\n")
    (path / "badsyntax.py").write_text("def f(:\n")
    (path / "needsdep.py").write_text("import dependency_that_is_missing\n")
    return path


BAD_INPUT = [
    (["enqueue", "q", "{not json"], "the payload is not valid JSON"),
    (["enqueue", "q", "[1, 2]"], "must be a JSON object"),
    (["--url", "nosuch://u:topsecret@h/db", "stats"], "unknown backend URL scheme nosuch://"),
    (["--url", "mysql://u:topsecret@127.0.0.1:1/db", "stats"], "unreachable"),
    (["--url", "redis://:topsecret@127.0.0.1:1/0", "stats"], "cannot be reached"),
    (["--url", "nonsense", "jobs", "list"], "does not start with scheme://"),
    (["worker", "no_such_module:nq"], "cannot import module 'no_such_module'"),
    (["worker", "brokenapp:nq"], "ZeroDivisionError"),
    (["worker", "badsyntax:nq"], "SyntaxError"),
    (["worker", "needsdep:nq"], "No module named 'dependency_that_is_missing'"),
    (["worker", "goodapp:missing"], "has no attribute 'missing'"),
    (["worker", "goodapp:not_a_client"], "is a int, not a neoq client"),
    (["worker", "goodapp:returns_nothing"], "returned a NoneType, not a neoq client"),
    (["worker", "goodapp:explodes"], "RuntimeError: factory failed"),
    (["--url", "memory://", "worker", "goodapp:empty"], "has no handlers"),
    (["worker", "goodapp:empty"], "has no backend URL (none given, NEOQ_URL unset)"),
    (["stats"], "memory:// is private to each process"),
    (["--url", "postgresql://app:topsecret@127.0.0.1:1/app", "stats"], "cannot connect to PostgreSQL"),
    (["--url", "postgresql://app:topsecret@127.0.0.1:1/app", "migrate"], "Connection refused"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_INPUT, ids=[" ".join(argv) for argv, _ in BAD_INPUT])
def test_bad_input_prints_one_line_and_exits_1(app_dir, argv, message):
    result = run_neoq(argv, cwd=app_dir)
    assert result.returncode == 1, result
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("neoq: error: ") and message in lines[0]
    assert "Traceback" not in result.stderr and "topsecret" not in result.stderr


def test_unknown_command_exits_2_with_usage():
    result = run_neoq(["frobnicate"])
    assert result.returncode == 2
    assert result.stderr.startswith("usage: neoq")
    assert "invalid choice: 'frobnicate'" in result.stderr.splitlines()[-1]
    assert "Traceback" not in result.stderr


def test_unknown_queue_for_worker(app_dir):
    result = run_neoq(["--url", "memory://", "worker", "cli_app:make", "--queue", "nope"], cwd=TESTS_DIR)
    assert result.returncode == 1
    assert result.stderr.strip() == "neoq: error: cli_app:make has no handler for queue(s) nope; it has: other, work"
