"""The django.tasks contract of NeoqTaskBackend, cron declared in neoq_jobs, and the Django commands (PostgreSQL)."""
# ruff: noqa: F811  (the fixtures of test_django are imported by name, and tests take them as arguments)

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from test_django import PROJECT, ROOT, dj, project, tasks_exceptions  # noqa: F401 - the fixtures

from neoq.testing import wait_for

pytestmark = pytest.mark.postgres

NEOQ_BACKEND = "neoq.contrib.django.tasks.NeoqTaskBackend"


def _env(url: str) -> dict[str, str]:
    return {
        **os.environ,
        "NEOQ_TEST_DJANGO_DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": "djproject.settings",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(PROJECT)]),
    }


def _manage(url: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(PROJECT / "manage.py"), *args],
        env=_env(url),
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Worker:
    """A ``manage.py neoq_worker`` process whose output is read as it comes (``output``)."""

    def __init__(self, url: str, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(PROJECT / "manage.py"), "neoq_worker", *args],
            env=_env(url),
            cwd=PROJECT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_serving(self) -> None:
        wait_for(lambda: "serving" in self.output or self.process.poll() is not None, timeout=60)
        assert self.process.poll() is None, self.output

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        status = self.process.wait(timeout=30)
        self._reader.join(10)
        return status


@pytest.fixture
def start_workers(pg_url: str) -> Iterator[Callable[..., Worker]]:
    """``start(*args)`` runs ``manage.py neoq_worker *args``; each is stopped with SIGTERM after the test."""
    started: list[Worker] = []

    def start(*args: str) -> Worker:
        started.append(Worker(pg_url, *args))
        return started[-1]

    yield start
    for worker in started:
        worker.stop()


def test_the_enqueued_result_equals_the_stored_one(dj: Any) -> None:
    from shop import tasks

    later = datetime.now(timezone.utc) + timedelta(hours=1)
    for task in (
        tasks.send_receipt_email,
        tasks.send_with_context.using(run_after=later),
        tasks.send_receipt_email.using(priority=5),
    ):
        result = task.enqueue(7)
        stored = task.get_result(result.id)
        assert result == stored
        assert stored.task.queue_name == task.queue_name and stored.task.run_after == task.run_after
        assert stored.task.priority == task.priority
        assert result.enqueued_at == dj.get_client().get_job(result.id).created_at
        dj.get_client().cancel_job(result.id)


def test_arguments_that_are_not_json_raise_djangos_type_error(dj: Any) -> None:
    from shop import tasks

    before = dj.get_client().stats()
    with pytest.raises(TypeError, match="Unsupported type"):
        tasks.send_receipt_email.enqueue(datetime.now())
    assert dj.get_client().stats() == before


def test_results_keep_return_values_errors_and_workers(dj: Any) -> None:
    from shop import tasks

    ok, declined, left = tasks.charge.enqueue(5), tasks.charge.enqueue(-1), tasks.leave.enqueue()
    dj.get_client().drain(timeout=30)

    ok = tasks.charge.get_result(ok.id)
    assert ok.status == "SUCCESSFUL" and ok.return_value == {"charged": 5}
    assert ok.worker_ids == [f"{os.uname().nodename}:{os.getpid()}"] and ok.attempts == 1

    declined = tasks.charge.get_result(declined.id)
    assert declined.status == "FAILED" and len(declined.errors) == 1
    error = declined.errors[0]
    assert error.exception_class is tasks.PaymentDeclined
    assert "Traceback (most recent call last)" in error.traceback and "cannot charge -1" in error.traceback
    with pytest.raises(ValueError):
        declined.return_value  # noqa: B018 - Django raises for a failed task

    left = tasks.leave.get_result(left.id)
    assert left.status == "FAILED" and left.errors[0].exception_class is SystemExit


def test_get_result_inside_the_transaction_that_enqueued(dj: Any) -> None:
    from django.db import transaction
    from shop import tasks

    with transaction.atomic():
        result = tasks.send_receipt_email.enqueue(3)
        assert tasks.send_receipt_email.get_result(result.id) == result  # not committed, yet readable here
        transaction.set_rollback(True)
    with pytest.raises(tasks_exceptions().TaskResultDoesNotExist):
        tasks.send_receipt_email.get_result(result.id)


def test_empty_queues_mean_any_queue_and_other_aliases_are_not_built(dj: Any) -> None:
    from django.test import override_settings
    from shop import tasks

    with override_settings(
        TASKS={
            "default": {"BACKEND": NEOQ_BACKEND, "QUEUES": []},
            "broken": {"BACKEND": "does.not.exist"},
        }
    ):
        dj.shutdown_client()
        anywhere = tasks.anywhere.using(queue_name="anything")
        result = anywhere.enqueue()
        assert tasks.anywhere.get_result(result.id).task == anywhere
        from neoq.contrib.django.tasks import register_task_handlers

        client = dj.get_client()
        register_task_handlers(client, queue_names=["anything"])
        client.drain(timeout=30)
        assert tasks.anywhere.get_result(result.id).return_value == "ran"
        dj.shutdown_client()


def test_a_subclass_of_the_backend_is_served(dj: Any) -> None:
    from django.test import override_settings
    from shop import tasks

    with override_settings(TASKS={"default": {"BACKEND": "shop.backends.CustomTaskBackend", "QUEUES": ["default"]}}):
        dj.shutdown_client()
        result = tasks.charge.enqueue(2)
        assert "tasks.default" in dj.get_client().handlers
        dj.get_client().drain(timeout=30)
        assert tasks.charge.get_result(result.id).return_value == {"charged": 2}
        dj.shutdown_client()


def test_manage_py_check_reports_configuration_errors(dj: Any) -> None:
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError
    from django.test import override_settings

    call_command("check")
    with (
        override_settings(TASKS={"default": {"BACKEND": NEOQ_BACKEND, "OPTIONS": {"CONCURENCY": 2}}}),
        pytest.raises(SystemCheckError, match="CONCURENCY"),
    ):
        call_command("check")
    with override_settings(NEOQ={"DATABASE": "nope"}), pytest.raises(SystemCheckError, match="nope"):
        call_command("check")


def test_the_worker_takes_django_queue_names_and_a_backend(dj: Any, start_workers: Any) -> None:
    from shop import tasks
    from shop.models import Order

    mail = tasks.send_with_context.enqueue(Order.objects.create(item="ink").pk)  # queue "mail"
    plain = tasks.charge.enqueue(1)  # queue "default"
    worker = start_workers("--queue", "mail", "--backend", "default")
    wait_for(lambda: tasks.send_with_context.get_result(mail.id).is_finished, timeout=30)
    assert tasks.send_with_context.get_result(mail.id).status == "SUCCESSFUL", worker.output
    assert tasks.charge.get_result(plain.id).status == "READY"
    assert worker.stop() == 0, worker.output
    assert "serving tasks.mail" in worker.output and "shop.heartbeat" not in worker.output, worker.output
    dj.get_client().cancel_job(plain.id)


def test_cron_ticks_only_in_workers_once_per_tick(dj: Any, start_workers: Any) -> None:
    client = dj.get_client()
    assert "shop.heartbeat" in client.handlers  # declared in shop/neoq_jobs.py, in this (web) process too

    def ticks() -> list[str]:
        return [job.payload["scheduled_at"] for job in client.list_jobs(queue="shop.heartbeat", limit=10_000)]

    before = set(ticks())
    other = start_workers("--queue", "receipts")
    other.wait_serving()
    # Two ticks' time: neither this web process nor a worker of another queue ticks the schedule.
    time.sleep(2.5)
    assert set(ticks()) == before
    workers = [start_workers("--queue", "shop.heartbeat") for _ in range(2)]
    for worker in workers:
        worker.wait_serving()
    wait_for(lambda: len(set(ticks()) - before) >= 4, timeout=60)
    for worker in workers:
        assert worker.stop() == 0, worker.output
    new = [tick for tick in ticks() if tick not in before]
    assert len(new) == len(set(new)) >= 4  # each tick stored once, with two workers ticking it


def test_manage_py_neoq_jobs_stats_migrate(dj: Any, pg_url: str) -> None:
    from shop import tasks

    result = tasks.charge.enqueue(9)
    stats = _manage(pg_url, "neoq", "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    assert '"tasks.default"' in stats.stdout
    shown = _manage(pg_url, "neoq", "jobs", "show", result.id)
    assert shown.returncode == 0 and "shop.tasks.charge" in shown.stdout, shown.stderr
    migrated = _manage(pg_url, "neoq", "migrate")
    assert migrated.returncode == 0 and "up to date" in migrated.stdout, migrated.stderr
    missing = _manage(pg_url, "neoq", "jobs", "show", "00000000-0000-0000-0000-000000000000")
    assert missing.returncode == 1 and "neoq: error: no job" in missing.stderr
    assert _manage(pg_url, "neoq").returncode != 0
    dj.get_client().cancel_job(result.id)


def test_manage_py_migrate_creates_neoqs_schema(pg_new_database: Callable[[], str]) -> None:
    url = pg_new_database()
    migrated = _manage(url, "migrate", "-v", "0")
    assert migrated.returncode == 0, migrated.stderr
    from neoq.backends.registry import backend_from_url

    assert backend_from_url(url).missing_migrations() == []
    listed = _manage(url, "showmigrations", "neoq")
    assert "[X] 0001_neoq_schema" in listed.stdout, listed.stdout
