"""The Django integration, with the project in tests/django_project, against PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import django
import pytest

import neoq
from neoq.contrib.django.conf import database_url
from neoq.testing import wait_for

PROJECT = Path(__file__).resolve().parent / "django_project"
ROOT = PROJECT.parent.parent

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def project(pg_url: str) -> Iterator[None]:
    """Django set up on the test database (one per test run), the shop's tables migrated."""
    saved = {name: os.environ.get(name) for name in ("NEOQ_TEST_DJANGO_DATABASE_URL", "DJANGO_SETTINGS_MODULE")}
    os.environ["NEOQ_TEST_DJANGO_DATABASE_URL"] = pg_url
    os.environ["DJANGO_SETTINGS_MODULE"] = "djproject.settings"
    if str(PROJECT) not in sys.path:
        sys.path.insert(0, str(PROJECT))
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    yield
    from django.db import connections

    connections.close_all()
    # Django keeps its settings; only the environment of later tests' subprocesses is restored.
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def dj(project: None) -> Iterator[Any]:
    """The integration module; the process's client is shut down after each test."""
    import neoq.contrib.django as integration

    yield integration
    integration.shutdown_client()
    from django.db import connections

    connections.close_all()


def tasks_exceptions() -> Any:
    """django.tasks.exceptions (Django 6) or the backport's."""
    if django.VERSION >= (6, 0):
        from django.tasks import exceptions
    else:
        from django_tasks import exceptions
    return exceptions


def _post(path: str, **body: Any) -> Any:
    from django.test import Client

    return Client().post(path, data=body, content_type="application/json")


def _receipts(order_id: int) -> list[str]:
    from shop.models import Receipt

    return sorted(Receipt.objects.filter(order_id=order_id).values_list("via", flat=True))


def test_a_job_enqueued_in_a_request_commits_with_it_and_runs(dj: Any) -> None:
    response = _post("/orders/", item="lamp")
    assert response.status_code == 201
    order_id, job_id = response.json()["order"], response.json()["job_id"]
    client = dj.get_client()
    job = client.get_job(job_id)
    assert job is not None and job.status is neoq.JobStatus.NEW and job.payload == {"order": order_id}
    assert client.drain(timeout=30) >= 1
    assert client.get_job(job_id).status is neoq.JobStatus.PROCESSED
    assert _receipts(order_id) == ["handler"]


def test_a_request_that_rolls_back_leaves_no_job(dj: Any) -> None:
    from shop.models import Order
    from shop.views import OrderFailed

    with pytest.raises(OrderFailed) as failed:
        _post("/orders/", item="vase", fail=True)
    job_id, order_id = failed.value.args
    assert job_id  # the insert happened, inside the request's transaction ...
    assert dj.get_client().get_job(job_id) is None  # ... which rolled back: no job
    assert not Order.objects.filter(pk=order_id).exists()


def test_enqueue_inside_atomic_shares_the_transaction(dj: Any) -> None:
    from django.db import transaction

    client = dj.get_client()
    with transaction.atomic():
        job_id = dj.enqueue(neoq.Job(queue="elsewhere", payload={"n": 1}))
        with transaction.atomic():  # a nested block: a savepoint
            inner = dj.enqueue(neoq.Job(queue="elsewhere", payload={"n": 2}))
            transaction.set_rollback(True)
        # Not committed yet: invisible to neoq's own connections.
        assert client.get_job(job_id) is None
        # Duplicates are refused without breaking the caller's transaction.
        with pytest.raises(neoq.DuplicateJobError):
            dj.enqueue(neoq.Job(queue="elsewhere", payload={"n": 1}))
        assert dj.enqueue_many([neoq.Job(queue="elsewhere", payload={"n": 3})])
    assert client.get_job(job_id) is not None
    assert client.get_job(inner) is None
    client.cancel_job(job_id)


def test_enqueue_on_commit(dj: Any) -> None:
    from shop.views import OrderFailed

    client = dj.get_client()
    response = _post("/orders/on-commit/", item="rug")
    assert response.status_code == 201
    order_id = response.json()["order"]
    with pytest.raises(OrderFailed) as failed:
        _post("/orders/on-commit/", item="rug", fail=True)
    rolled_back = failed.value.args[1]
    waiting = [job.payload["order"] for job in client.list_jobs(queue="receipts", status="new")]
    assert order_id in waiting and rolled_back not in waiting
    client.drain(timeout=30)
    assert _receipts(order_id) == ["on_commit"]
    with pytest.raises(neoq.InvalidJobError):  # checked at once, not after the commit
        dj.enqueue_on_commit(neoq.Job(queue="receipts", payload={"bad": float("nan")}))


def test_django_tasks_run_on_neoq_workers(dj: Any) -> None:
    from shop import tasks

    response = _post("/orders/task/", item="pen")
    assert response.status_code == 201
    order_id, result_id = response.json()["order"], response.json()["result_id"]
    result = tasks.send_receipt_email.get_result(result_id)
    assert result.status == "READY" and result.args == [order_id]
    job = dj.get_client().get_job(result_id)
    assert job.queue == "tasks.default" and job.payload["task"] == "shop.tasks.send_receipt_email"

    context_result = tasks.send_with_context.enqueue(order_id)
    failing = tasks.explode.enqueue("boom")
    later = tasks.send_receipt_email.using(run_after=datetime.now(timezone.utc) + timedelta(hours=1)).enqueue(order_id)
    dj.get_client().drain(timeout=30)

    result.refresh()
    assert result.status == "SUCCESSFUL" and result.is_finished and result.finished_at is not None
    assert tasks.send_with_context.get_result(context_result.id).status == "SUCCESSFUL"
    assert _receipts(order_id) == ["attempt-1", "task"]
    failed = tasks.explode.get_result(failing.id)
    assert failed.status == "FAILED"
    assert failed.errors[0].exception_class is ValueError and "boom" in failed.errors[0].traceback
    assert tasks.send_receipt_email.get_result(later.id).status == "READY"  # deferred: not run yet
    dj.get_client().cancel_job(later.id)


def test_a_running_task_reads_running_and_finishes_after_its_work(dj: Any) -> None:
    import threading

    from shop import tasks

    tasks.held.clear()
    tasks.release.clear()
    enqueued = tasks.hold.enqueue(0.3)
    drain = threading.Thread(target=dj.get_client().drain, kwargs={"timeout": 30})
    drain.start()
    try:
        assert tasks.held.wait(30)
        running = tasks.hold.get_result(enqueued.id)
        assert running.status == "RUNNING" and not running.is_finished
        assert running.started_at is not None and running.finished_at is None
    finally:
        tasks.release.set()
        drain.join(30)
    done = tasks.hold.get_result(enqueued.id)
    assert done.status == "SUCCESSFUL" and done.finished_at is not None and done.started_at is not None
    # The end of the run, not its start: the task worked 0.3 s after it started.
    assert done.finished_at - done.started_at >= timedelta(seconds=0.25), (done.started_at, done.finished_at)


def test_a_task_enqueued_in_a_rolled_back_request_does_not_exist(dj: Any) -> None:
    from shop import tasks
    from shop.views import OrderFailed

    with pytest.raises(OrderFailed) as failed:
        _post("/orders/task/", item="cup", fail=True)
    result_id = failed.value.args[0]
    with pytest.raises(tasks_exceptions().TaskResultDoesNotExist):
        tasks.send_receipt_email.get_result(result_id)


def test_the_task_backend_honours_priority(dj: Any) -> None:
    from shop import tasks

    later = tasks.send_receipt_email.using(priority=-5).enqueue(1)
    first = tasks.send_receipt_email.using(priority=10).enqueue(2)
    client = dj.get_client()
    assert client.get_job(first.id).priority == 10 and client.get_job(later.id).priority == -5
    for result in (first, later):
        client.cancel_job(result.id)


def test_neoq_worker_management_command(dj: Any, pg_url: str) -> None:
    """`manage.py neoq_worker` runs the handlers and the task queues; SIGTERM stops it cleanly."""
    env = {
        **os.environ,
        "NEOQ_TEST_DJANGO_DATABASE_URL": pg_url,
        "DJANGO_SETTINGS_MODULE": "djproject.settings",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(PROJECT)]),
    }
    worker = subprocess.Popen(
        [sys.executable, str(PROJECT / "manage.py"), "neoq_worker"],
        env=env,
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        response = _post("/orders/", item="chair")
        order_id, job_id = response.json()["order"], response.json()["job_id"]
        task_result = _post("/orders/task/", item="table").json()["result_id"]
        client = dj.get_client()
        wait_for(lambda: client.get_job(job_id).status is neoq.JobStatus.PROCESSED, timeout=30)
        wait_for(lambda: client.get_job(task_result).status is neoq.JobStatus.PROCESSED, timeout=30)
        assert _receipts(order_id) == ["handler"]
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=30)
    assert worker.returncode == 0, output
    assert "receipt written" in output, output


def test_neoq_worker_with_an_unknown_queue_fails_clearly(dj: Any) -> None:
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="no handler"):
        call_command("neoq_worker", queues=["nope"])


def test_settings(dj: Any) -> None:
    from django.test import override_settings

    from neoq.contrib.django.conf import load_settings

    conf = load_settings()
    assert conf.database == "default" and conf.url.startswith("postgresql://")
    assert conf.options == {"shutdown_timeout": 10}
    with override_settings(NEOQ=None, NEOQ_URL="memory://"):
        assert (load_settings().url, load_settings().database) == ("memory://", None)
        client = dj.get_client()
        # neoq has its own store: enqueue() cannot share Django's transaction and says nothing of it.
        job_id = dj.enqueue(neoq.Job(queue="solo", payload={}))
        assert client.get_job(job_id) is not None
        dj.shutdown_client()
    with override_settings(NEOQ={"URL": "memory://", "DATABASE": "default"}):
        assert load_settings().database == "default"
    with override_settings(NEOQ={"QUEUE": "x"}), pytest.raises(neoq.ConfigurationError, match="unknown key"):
        load_settings()
    with override_settings(NEOQ={"DATABASE": "other"}), pytest.raises(neoq.ConfigurationError, match="other"):
        load_settings()


def test_enqueue_through_django_needs_a_backend_that_enqueues_in_a_transaction(dj: Any) -> None:
    """neoq's own store cannot take Django's connection: said by capability, before Django's is touched."""
    from django.test import override_settings

    with override_settings(NEOQ={"URL": "memory://", "DATABASE": "default"}):
        client = dj.get_client()
        assert "enqueue_in_transaction" not in client.backend.capabilities
        for enqueue in (dj.enqueue, lambda job: dj.enqueue_many([job])):
            with pytest.raises(neoq.ConfigurationError, match="lacks the 'enqueue_in_transaction' capability"):
                enqueue(neoq.Job(queue="solo", payload={}))
        assert client.stats() == {}
        dj.shutdown_client()


def test_database_url() -> None:
    assert (
        database_url(
            "default",
            {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": "app",
                "USER": "me",
                "PASSWORD": "p@ss word",
                "HOST": "db.internal",
                "PORT": 6432,
                "OPTIONS": {"sslmode": "require", "pool": True},
            },
        )
        == "postgresql://me:p%40ss%20word@db.internal:6432/app?sslmode=require"
    )
    assert (
        database_url("default", {"ENGINE": "django.db.backends.postgresql", "NAME": "app", "HOST": "/run/pg"})
        == "postgresql:///app?host=%2Frun%2Fpg"
    )
    with pytest.raises(neoq.ConfigurationError, match="not PostgreSQL"):
        database_url("default", {"ENGINE": "django.db.backends.sqlite3", "NAME": "db.sqlite3"})
