"""The Flask extension and the example app (examples/flask_app), against PostgreSQL."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from flask import Flask

import neoq
from neoq.contrib.flask import Neoq, current_neoq
from neoq.testing import wait_for

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "flask_app" / "app.py"


@pytest.fixture
def example() -> ModuleType:
    """The example app's module, loaded afresh (so its extension has no app from another test)."""
    spec = importlib.util.spec_from_file_location("neoq_flask_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def run_worker() -> Iterator[Any]:
    """``run_worker(client)`` runs ``client.run()`` in a thread; stopped and joined after the test."""
    started: list[tuple[neoq.Neoq, threading.Thread]] = []

    def run(client: neoq.Neoq) -> None:
        thread = threading.Thread(target=client.run, name="test-flask-worker")
        thread.start()
        started.append((client, thread))

    yield run
    for client, thread in started:
        client.stop()
        thread.join(30)
        assert not thread.is_alive()


@pytest.mark.postgres
def test_a_job_enqueued_from_a_request_runs(pg_url: str, example: ModuleType, run_worker: Any) -> None:
    sent: list[str] = []
    app = example.create_app({"NEOQ_URL": pg_url, "SENT_EMAILS": sent, "TESTING": True})
    client = app.extensions["neoq"].client
    assert isinstance(client.backend, neoq.backends.PostgresBackend)
    run_worker(client)

    with app.test_client() as http:
        response = http.post("/signup", json={"email": "ada@example.com"})
        assert response.status_code == 202, response.get_data(as_text=True)
        job_id = response.get_json()["job_id"]
        wait_for(lambda: http.get(f"/jobs/{job_id}").get_json()["status"] == "processed", timeout=15)
        assert http.post("/signup", json={"email": "nope"}).status_code == 400
        assert http.get("/jobs/00000000-0000-0000-0000-000000000000").status_code in (404, 200)
    assert sent == ["ada@example.com"]


@pytest.mark.postgres
def test_the_example_worker_runs_with_the_flask_cli(pg_url: str, example: ModuleType) -> None:
    """`flask --app examples/flask_app/app.py neoq worker` runs the job; SIGTERM stops it cleanly."""
    env = {**os.environ, "NEOQ_URL": pg_url, "PYTHONPATH": str(ROOT)}
    worker = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", str(EXAMPLE), "neoq", "worker"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    app = example.create_app({"NEOQ_URL": pg_url, "TESTING": True})
    try:
        with app.test_client() as http:
            response = http.post("/signup", json={"email": "grace@example.com"})
            assert response.status_code == 202
            job_id = response.get_json()["job_id"]
            # Only the subprocess has a handler for this queue: the job ran there.
            wait_for(lambda: http.get(f"/jobs/{job_id}").get_json()["status"] == "processed", timeout=30)
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=30)
        example.nq.shutdown(app)
    assert worker.returncode == 0, output
    assert "welcome email" in output and "grace@example.com" in output, output


def test_config_keys_become_options_of_new() -> None:
    app = Flask("cfg")
    app.config.update(NEOQ_URL="memory://", NEOQ_SHUTDOWN_TIMEOUT=3)
    ext = Neoq(app)
    try:
        state = app.extensions["neoq"]
        assert state.url == "memory://" and state.options == {"shutdown_timeout": 3}
        assert not state.created
        assert ext.client is state.client  # bound extension: no app context needed
        assert ext.client.shutdown_timeout == 3
        with app.app_context():
            assert current_neoq.shutdown_timeout == 3
    finally:
        ext.shutdown()
    assert not app.extensions["neoq"].created


def test_init_app_pattern_and_handlers_in_app_context() -> None:
    ext = Neoq(shutdown_timeout=5)
    seen: list[str] = []

    @ext.handler("greet")
    def greet(job: neoq.Job) -> None:
        from flask import current_app

        seen.append(f"{current_app.name}:{job.payload['who']}")

    with pytest.raises(neoq.ConfigurationError):
        ext.handler("greet")(greet)
    with pytest.raises(neoq.ConfigurationError):
        ext.handler("other", concurrency=0)(greet)

    one, two = Flask("one"), Flask("two")
    one.config["NEOQ_URL"] = two.config["NEOQ_URL"] = "memory://"
    ext.init_app(one)
    ext.init_app(two)
    with pytest.raises(RuntimeError):  # no application context, no bound app
        ext.client  # noqa: B018
    try:
        for app in (one, two):
            with app.app_context():
                assert ext.client.shutdown_timeout == 5
                ext.enqueue(neoq.Job(queue="greet", payload={"who": "ada"}))
                assert ext.enqueue_many([neoq.Job(queue="greet", payload={"who": "bob"})])
                assert ext.client.drain(timeout=10) == 2
        assert sorted(seen) == ["one:ada", "one:bob", "two:ada", "two:bob"]
        assert one.extensions["neoq"].client is not two.extensions["neoq"].client
    finally:
        ext.shutdown(one)
        ext.shutdown(two)


def test_an_app_without_init_app_says_so() -> None:
    ext = Neoq()
    app = Flask("bare")
    with app.app_context():
        with pytest.raises(neoq.ConfigurationError, match="init_app"):
            ext.client  # noqa: B018
        with pytest.raises(neoq.ConfigurationError, match="init_app"):
            current_neoq.stats()
    other = Neoq()
    other.init_app(app)
    with pytest.raises(neoq.ConfigurationError, match="another neoq extension"):
        ext.state(app)


def test_the_worker_command_without_handlers_fails_clearly() -> None:
    app = Flask("empty")
    app.config["NEOQ_URL"] = "memory://"
    ext = Neoq(app)
    try:
        result = app.test_cli_runner().invoke(args=["neoq", "worker"])
        assert result.exit_code == 1
        assert "no neoq handler" in result.output
    finally:
        ext.shutdown()


def test_the_worker_command_refuses_an_app_with_no_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """No NEOQ_URL in the config or the environment: the worker would run on a private memory
    store that the web processes cannot reach, so it refuses (memory:// given explicitly runs)."""
    monkeypatch.delenv("NEOQ_URL", raising=False)
    app = Flask("nourl")
    ext = Neoq(app)
    ext.handler("emails")(lambda job: None)
    results: list[Any] = []
    runner = threading.Thread(target=lambda: results.append(app.test_cli_runner().invoke(args=["neoq", "worker"])))
    runner.start()
    runner.join(10)
    if runner.is_alive():  # it runs: stop it, then fail below
        ext.client.stop()
        runner.join(10)
    ext.shutdown()
    assert results[0].exit_code == 1, "the worker ran on a private memory store"
    assert "has no backend URL" in results[0].output and "NEOQ_URL" in results[0].output


def test_a_web_app_with_no_url_warns_once_when_it_enqueues(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("NEOQ_URL", raising=False)
    app = Flask("nourl-web")
    ext = Neoq(app)
    ext.handler("emails")(lambda job: None)
    try:
        with app.test_request_context():
            ext.enqueue(neoq.Job(queue="emails", payload={"n": 1}))
            ext.enqueue(neoq.Job(queue="emails", payload={"n": 2}))
    finally:
        ext.shutdown()
    warnings = [r for r in caplog.records if "private in-memory store" in r.getMessage()]
    assert [r.levelname for r in warnings] == ["WARNING"]
