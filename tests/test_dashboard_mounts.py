"""The dashboard mounted under a prefix in the Flask example app and the Django test project, behind
their own authentication (a Flask decorator; Django staff users), driven by a browser, on PostgreSQL."""

from __future__ import annotations

import base64
import importlib.util
import os
import secrets
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dashboard_helpers import Served, chromium, click, text_of, wait_text  # noqa: F401

import neoq
from neoq import Job, JobStatus
from neoq.testing import wait_for

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ROOT / "tests" / "django_project"

pytestmark = pytest.mark.postgres


def _status(client: neoq.Neoq, job_id: str) -> JobStatus | None:
    job = client.get_job(job_id)
    return None if job is None else job.status


def _finished_after(client: neoq.Neoq, job_id: str, before: Any) -> bool:
    """The job failed again after ``before``: the retry made it run once more."""
    job = client.get_job(job_id)
    return (
        job is not None and job.status is JobStatus.FAILED and job.finished_at is not None and job.finished_at > before
    )


def _status_code(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _retry_through_the_browser(browser: Any, base: str, prefix: str, job_id: str) -> None:
    browser.get(f"{base}{prefix}/")
    wait_text(browser, "#queues", lambda text: "mounted-" in text)
    # Every link stays under the prefix.
    links = [a.get_attribute("href") for a in browser.find_elements("css selector", "a[href]")]
    assert links and all(link.startswith(f"{base}{prefix}/") for link in links), links
    browser.get(f"{base}{prefix}/jobs?status=failed")
    click(browser, f'#jobs tr[data-job="{job_id}"] a')
    wait_text(browser, "#job-status", lambda text: text == "failed")
    click(browser, "#retry")
    wait_text(browser, "#confirm-text", lambda text: "Retry job" in text)
    click(browser, "#confirm")
    wait_text(browser, "#message", lambda text: "run again" in text)
    assert browser.current_url.startswith(f"{base}{prefix}/jobs/{job_id}")


# -- Flask ---------------------------------------------------------------------------------


@pytest.fixture
def flask_example() -> Any:
    spec = importlib.util.spec_from_file_location("neoq_flask_dashboard_example", ROOT / "examples/flask_app/app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flask_mount_behind_a_decorator(pg_clean: str, flask_example: Any, browser: Any) -> None:
    password = "flask-admin-" + secrets.token_hex(4)
    app = flask_example.create_app(
        {"NEOQ_URL": pg_clean, "ADMIN_PASSWORD": password, "SECRET_KEY": "tests", "TESTING": True}
    )
    client: neoq.Neoq = app.extensions["neoq"].client
    job_id = client.enqueue(Job(queue="mounted-flask", payload={"n": 1}, max_retries=0))
    client.start("mounted-flask", lambda job: 1 / 0, max_retries=0)
    wait_for(lambda: _status(client, job_id) is JobStatus.FAILED, timeout=10)
    before = client.get_job(job_id).finished_at  # type: ignore[union-attr]
    served = Served(app)
    auth = "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()
    try:
        base = served.url
        for path in ("/admin/neoq/", "/admin/neoq/jobs", f"/admin/neoq/jobs/{job_id}", "/admin/neoq/api/overview"):
            assert _status_code(base + path) == 401, path
            assert (
                _status_code(base + path, {"Authorization": "Basic " + base64.b64encode(b"admin:no").decode()}) == 401
            )
        assert _status_code(base + "/admin/neoq/", {"Authorization": auth}) == 200
        browser.execute_cdp_cmd("Network.enable", {})
        browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": auth}})
        try:
            _retry_through_the_browser(browser, base, "/admin/neoq", job_id)
        finally:
            browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {}})
        # The handler fails again: the retry ran, and the job is failed once more with a new attempt.
        wait_for(lambda: _finished_after(client, job_id, before), timeout=10)
    finally:
        served.close()
        client.shutdown(timeout=5)


# -- Django --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def django_project(pg_url: str) -> Iterator[None]:
    import django

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
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def test_django_mount_for_staff_users(django_project: None, browser: Any) -> None:
    from django.contrib.auth.models import User
    from django.core.wsgi import get_wsgi_application
    from django.test import Client

    import neoq.contrib.django as integration

    suffix = secrets.token_hex(4)
    staff = User.objects.create_user(f"staff-{suffix}", password="pw", is_staff=True)
    plain = User.objects.create_user(f"plain-{suffix}", password="pw")
    client = integration.get_client()
    queue = f"mounted-django-{suffix}"
    job_id = client.enqueue(Job(queue=queue, payload={"n": 1}, max_retries=0))
    client.start(queue, lambda job: 1 / 0, max_retries=0)
    wait_for(lambda: _status(client, job_id) is JobStatus.FAILED, timeout=10)
    before = client.get_job(job_id).finished_at  # type: ignore[union-attr]
    served = Served(get_wsgi_application())
    try:
        base = served.url
        # Anonymous and non-staff users get nothing.
        assert _status_code(base + "/admin/neoq/") == 403
        plain_http = Client()
        plain_http.force_login(plain)
        assert plain_http.get("/admin/neoq/").status_code == 403
        assert plain_http.get(f"/admin/neoq/jobs/{job_id}").status_code == 403
        staff_http = Client()
        staff_http.force_login(staff)
        session = staff_http.cookies["sessionid"].value
        browser.get(base + "/admin/neoq/")
        assert "Queues" not in browser.page_source
        browser.add_cookie({"name": "sessionid", "value": session, "path": "/"})
        try:
            _retry_through_the_browser(browser, base, "/admin/neoq", job_id)
        finally:
            browser.delete_all_cookies()
        wait_for(lambda: _finished_after(client, job_id, before), timeout=10)
    finally:
        served.close()
        integration.shutdown_client()
        from django.db import connections

        connections.close_all()


def test_django_read_only_setting(django_project: None) -> None:
    from django.contrib.auth.models import User
    from django.test import Client, override_settings

    import neoq.contrib.django as integration

    staff = User.objects.create_user(f"staff-ro-{secrets.token_hex(4)}", password="pw", is_staff=True)
    http = Client()
    http.force_login(staff)
    try:
        with override_settings(NEOQ={"OPTIONS": {"shutdown_timeout": 10}, "DASHBOARD_READ_ONLY": True}):
            integration.shutdown_client()  # a client (and a dashboard) made with these settings
            job_id = integration.get_client().enqueue(Job(queue=f"ro-{secrets.token_hex(4)}", payload={}))
            page = http.get(f"/admin/neoq/jobs/{job_id}")
            assert page.status_code == 200 and b'id="read-only"' in page.content and b"<form" not in page.content
            assert http.post(f"/admin/neoq/jobs/{job_id}/cancel", {"confirm": "yes"}).status_code in (404, 405)
            assert _status(integration.get_client(), job_id) is JobStatus.NEW
        with override_settings(NEOQ={"DASHBOARD_READ_ONLY": "yes"}):
            integration.shutdown_client()
            with pytest.raises(neoq.ConfigurationError, match="DASHBOARD_READ_ONLY"):
                http.get("/admin/neoq/")
    finally:
        integration.shutdown_client()
