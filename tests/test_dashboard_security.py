"""The dashboard is safe by default: loopback unless a password is set, CSRF on every action,
everything escaped, no store URL or password shown."""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dashboard_helpers import chromium  # noqa: F401
from werkzeug.test import Client

import neoq
from neoq import Job, JobStatus
from neoq.backends.memory import MemoryBackend
from neoq.dashboard import PasswordAuth, create_app, is_loopback
from neoq.testing import wait_for

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def nq() -> Iterator[neoq.Neoq]:
    client = neoq.new("memory://")
    try:
        yield client
    finally:
        client.shutdown(timeout=5)


def _token(http: Client) -> str:
    page = http.get("/jobs").get_data(as_text=True)
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found, "the jobs page has a CSRF field"
    return found.group(1)


def test_a_post_without_a_valid_csrf_token_is_refused(nq: neoq.Neoq) -> None:
    nq.enqueue(Job(queue="csrf", payload={"n": 1}))
    job_id = nq.enqueue(Job(queue="csrf", payload={"n": 2}))
    http = Client(create_app(nq))
    token = _token(http)  # sets the cookie too
    for data in ({"confirm": "yes"}, {"confirm": "yes", "csrf": "0" * 64}, {"confirm": "yes", "csrf": ""}):
        response = http.post(f"/jobs/{job_id}/cancel", data=data)
        assert response.status_code == 403, data
        response = http.post("/bulk", data={**data, "action": "cancel"})
        assert response.status_code == 403, data
    assert nq.get_job(job_id).status is JobStatus.NEW  # type: ignore[union-attr]
    # A token without its cookie (another browser's page) is refused too.
    stranger = Client(create_app(nq))
    assert stranger.post(f"/jobs/{job_id}/cancel", data={"confirm": "yes", "csrf": token}).status_code == 403
    # The right pair goes through.
    response = http.post(f"/jobs/{job_id}/cancel", data={"confirm": "yes", "csrf": token})
    assert response.status_code == 303
    assert nq.get_job(job_id).status is JobStatus.CANCELLED  # type: ignore[union-attr]


def test_pages_are_escaped_and_carry_a_strict_policy(nq: neoq.Neoq) -> None:
    job_id = nq.enqueue(Job(queue="<b>q</b>", payload={"x": "<script>alert(1)</script>"}))
    http = Client(create_app(nq))
    for path in ("/", "/jobs", f"/jobs/{job_id}", "/jobs?q=<script>", "/jobs?queue=<b>q</b>"):
        response = http.get(path)
        assert response.status_code == 200, path
        body = response.get_data(as_text=True)
        assert "<script>alert" not in body and "<b>q</b>" not in body, path
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in http.get(f"/jobs/{job_id}").get_data(as_text=True)


def test_password_auth_guards_every_page(nq: neoq.Neoq) -> None:
    http = Client(create_app(nq, auth=PasswordAuth("s3cret pass")))
    good = {"Authorization": "Basic " + base64.b64encode(b"admin:s3cret pass").decode()}
    bad = {"Authorization": "Basic " + base64.b64encode(b"admin:wrong").decode()}
    for path in ("/", "/jobs", "/jobs/1", "/workers", "/api/overview", "/static/dashboard.css", "/nowhere"):
        assert http.get(path).status_code == 401, path
        assert http.get(path, headers=bad).status_code == 401, path
        assert http.get(path, headers=good).status_code in (200, 404), path
    assert "s3cret" not in repr(PasswordAuth("s3cret pass"))


def test_a_backend_without_the_capability_is_refused() -> None:
    class Plain(MemoryBackend):
        capabilities = frozenset({"notify"})

    with neoq.new(backend=Plain()) as client, pytest.raises(neoq.ConfigurationError, match="dashboard"):
        create_app(client)


def test_loopback_addresses() -> None:
    assert all(is_loopback(host) for host in ("127.0.0.1", "localhost", "::1", "127.1.2.3", "[::1]"))
    assert not any(is_loopback(host) for host in ("0.0.0.0", "::", "192.168.1.4", "example.com"))


def _neoq(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "neoq", *args],
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_the_command_refuses_another_address_without_a_password() -> None:
    env = {"NEOQ_DASHBOARD_PASSWORD": ""}
    for host in ("0.0.0.0", "::", "192.0.2.1"):
        process = _neoq("dashboard", "--host", host, "--port", "0", env=env)
        out, err = process.communicate(timeout=60)
        assert process.returncode == 1, (out, err)
        assert "NEOQ_DASHBOARD_PASSWORD" in err and "refusing" in err


@pytest.mark.postgres
def test_bound_elsewhere_no_page_without_the_password(pg_clean: str, browser: Any) -> None:
    from pgfixtures import free_port

    port = free_port()
    secret = "dash-pass-w1"
    with neoq.new(pg_clean) as client:
        job_id = client.enqueue(Job(queue="auth", payload={"n": 1}))
    process = _neoq(
        "dashboard",
        "--url",
        pg_clean,
        "--host",
        "0.0.0.0",
        "--port",
        str(port),
        env={"NEOQ_DASHBOARD_PASSWORD": secret},
    )
    try:
        base = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            try:
                urllib.request.urlopen(base + "/", timeout=2)
            except urllib.error.HTTPError:
                return True
            except OSError:
                return False
            return True

        wait_for(answers, timeout=30)
        for path in ("/", "/jobs", f"/jobs/{job_id}", "/workers", "/api/overview", f"/api/jobs/{job_id}"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(base + path, timeout=5)
            assert refused.value.code == 401, path
        request = urllib.request.Request(
            base + "/jobs", headers={"Authorization": "Basic " + base64.b64encode(f"ops:{secret}".encode()).decode()}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            page = response.read().decode()
        assert job_id in page
        assert secret not in page and "postgresql://" not in page and "127.0.0.1:5432" not in page
        # A browser without the password sees nothing of the dashboard.
        browser.get(base + "/")
        assert "Queues" not in browser.page_source and "auth" not in browser.title
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert secret not in out + err


def test_the_command_refuses_a_private_store() -> None:
    process = _neoq("dashboard", "--url", "memory://", "--port", "0")
    out, err = process.communicate(timeout=60)
    assert process.returncode == 1 and "private" in err, (out, err)


@pytest.mark.postgres
def test_the_command_serves_on_loopback_and_stops_on_sigterm(pg_clean: str) -> None:
    process = _neoq("dashboard", "--url", pg_clean, "--port", "0", "--read-only", env={"NEOQ_DASHBOARD_PASSWORD": ""})
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        found = re.search(r"on (http://127\.0\.0\.1:\d+/) \(read-only\)", line)
        assert found, line
        with urllib.request.urlopen(found.group(1) + "workers", timeout=10) as response:
            assert response.status == 200
            page = response.read().decode()
        assert "Workers" in page and "postgresql://" not in page
    finally:
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
