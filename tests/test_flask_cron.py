"""Cron declared on the Flask extension (ticked only by workers) and `flask neoq jobs|stats|migrate`."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

import neoq
from neoq.contrib.flask import Neoq
from neoq.testing import wait_for

EVERY_SECOND = "* * * * * *"


def _app(ext: Neoq, url: str, name: str = "cron") -> Flask:
    app = Flask(name)
    app.config["NEOQ_URL"] = url
    ext.init_app(app)
    return app


@pytest.fixture
def workers() -> Iterator[Any]:
    """``start(client, queues)`` runs ``client.run(queues)`` in a thread (a worker); stopped after the test."""
    started: list[tuple[neoq.Neoq, threading.Thread]] = []

    def start(client: neoq.Neoq, queues: list[str] | None = None) -> None:
        thread = threading.Thread(target=client.run, args=(queues,), kwargs={"install_signal_handlers": False})
        thread.start()
        started.append((client, thread))

    yield start
    for client, thread in started:
        client.stop()
        thread.join(30)
        assert not thread.is_alive()


def test_a_declared_cron_never_ticks_in_a_web_process() -> None:
    ext = Neoq()
    ran: list[str] = []

    @ext.cron(EVERY_SECOND, queue="beat")
    def beat(job: neoq.Job) -> None:
        ran.append(job.payload["scheduled_at"])

    with pytest.raises(neoq.CronSpecError):
        ext.cron("not a spec")
    with pytest.raises(neoq.ConfigurationError, match="already has a handler"):
        ext.handler("beat")(beat)
    app = _app(ext, "memory://")
    try:
        client = app.extensions["neoq"].client
        assert "beat" in client.handlers
        client.enqueue(neoq.Job(queue="other", payload={}))  # a web process's work
        time.sleep(2.5)  # two ticks' time
        assert client.stats().get("beat") is None and ran == []
    finally:
        ext.shutdown(app)


def test_a_worker_ticks_only_the_schedules_of_its_queues(workers: Any) -> None:
    ext = Neoq()
    ran: dict[str, list[str]] = {"beat": [], "other": []}

    @ext.cron(EVERY_SECOND, queue="beat")
    def beat(job: neoq.Job) -> None:
        from flask import current_app

        ran["beat"].append(current_app.name)

    @ext.cron(EVERY_SECOND, queue="other")
    def other(job: neoq.Job) -> None:
        ran["other"].append(job.payload["scheduled_at"])

    app = _app(ext, "memory://", "worker")
    client = app.extensions["neoq"].client
    workers(client, ["beat"])
    wait_for(lambda: len(ran["beat"]) >= 2, timeout=30)
    assert ran["beat"][0] == "worker"  # in an application context
    assert ran["other"] == [] and "other" not in client.stats()


@pytest.mark.postgres
def test_two_workers_tick_each_tick_once(pg_url: str, workers: Any) -> None:
    ext = Neoq()
    ran: list[str] = []
    lock = threading.Lock()

    @ext.cron(EVERY_SECOND, queue="flask-cron-once")
    def beat(job: neoq.Job) -> None:
        with lock:
            ran.append(job.payload["scheduled_at"])

    apps = [_app(ext, pg_url, f"w{n}") for n in range(2)]
    clients = [app.extensions["neoq"].client for app in apps]
    for client in clients:
        workers(client)
    wait_for(lambda: len(ran) >= 4, timeout=60)
    for client in clients:
        client.stop()
    wait_for(lambda: all(client.closed for client in clients), timeout=30)
    assert len(ran) == len(set(ran)) >= 4
    with neoq.new(pg_url) as reader:
        stored = [job.payload["scheduled_at"] for job in reader.list_jobs(queue="flask-cron-once")]
    assert sorted(stored) == sorted(set(stored))


@pytest.mark.postgres
def test_flask_neoq_jobs_stats_migrate(pg_url: str) -> None:
    ext = Neoq()
    app = _app(ext, pg_url, "ops")
    runner = app.test_cli_runner()
    try:
        migrated = runner.invoke(args=["neoq", "migrate"])
        assert migrated.exit_code == 0 and "up to date" in migrated.output, migrated.output
        with app.app_context():
            job_id = ext.enqueue(neoq.Job(queue="flask-ops", payload={"n": 1}))
        stats = runner.invoke(args=["neoq", "stats", "--json"])
        assert stats.exit_code == 0, stats.output
        assert json.loads(stats.output)["flask-ops"]["new"] >= 1
        listed = runner.invoke(args=["neoq", "jobs", "list", "--queue", "flask-ops"])
        assert listed.exit_code == 0 and job_id in listed.output, listed.output
        cancelled = runner.invoke(args=["neoq", "jobs", "cancel", job_id])
        assert cancelled.exit_code == 0 and "cancelled" in cancelled.output
        assert runner.invoke(args=["neoq", "stats", "--url", pg_url]).exit_code != 0
    finally:
        ext.shutdown(app)
