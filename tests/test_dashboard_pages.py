"""The dashboard's pages through the WSGI application (no browser): what each shows."""

from __future__ import annotations

import html
from collections.abc import Iterator

import pytest
from werkzeug.test import Client

import neoq
from neoq import Job
from neoq.dashboard import create_app
from neoq.testing import wait_for


@pytest.fixture
def nq() -> Iterator[neoq.Neoq]:
    client = neoq.new("memory://")
    try:
        yield client
    finally:
        client.shutdown(timeout=5)


def test_paused_queues_and_priorities_are_shown(nq: neoq.Neoq) -> None:
    job_id = nq.enqueue(Job(queue="p-urgent", payload={}, priority=7))
    nq.pause_queue("p-urgent")
    http = Client(create_app(nq))
    overview = http.get("/").get_data(as_text=True)
    assert 'data-queue="p-urgent"' in overview and "paused" in overview
    page = http.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert "<dt>priority</dt><dd>7</dd>" in page
    assert http.get("/api/overview").get_json()["queues"][0]["paused"] is True


def test_outcomes_and_the_chart(nq: neoq.Neoq) -> None:
    ok = nq.enqueue(Job(queue="p-work", payload={"n": 2}))
    bad = nq.enqueue(Job(queue="p-work", payload={"n": 0}, max_retries=0))
    nq.start("p-work", lambda job: {"inverse": 1 / job.payload["n"]}, max_retries=0)
    wait_for(lambda: nq.stats()["p-work"]["processed"] + nq.stats()["p-work"]["failed"] == 2, timeout=10)
    http = Client(create_app(nq))
    assert "1 processed" in http.get("/").get_data(as_text=True)
    assert '"inverse": 0.5' in html.unescape(http.get(f"/jobs/{ok}").get_data(as_text=True))
    failed = http.get(f"/api/jobs/{bad}").get_json()
    assert failed["status"] == "failed" and "ZeroDivisionError" in failed["error"]
    assert "Traceback" in (failed["traceback"] or "")
    assert failed["times"]["finished"] is not None


def test_unknown_things_are_not_found(nq: neoq.Neoq) -> None:
    http = Client(create_app(nq))
    for path in ("/jobs/12345", "/api/jobs/nope", "/static/secret.py", "/static/../app.py", "/nowhere"):
        assert http.get(path).status_code == 404, path
    assert http.get("/jobs?status=bogus&range=99y&before=zz").status_code == 200


def test_the_jobs_list_pages_by_key(nq: neoq.Neoq) -> None:
    ids = nq.enqueue_many([Job(queue="p-many", payload={"n": n}) for n in range(120)])
    http = Client(create_app(nq))
    seen: list[str] = []
    path = "/jobs?queue=p-many"
    while path:
        page = http.get(path).get_data(as_text=True)
        seen += [line.split('"')[1] for line in page.splitlines() if line.strip().startswith("<tr data-job=")]
        marker = 'id="older" href="'
        path = page.split(marker)[1].split('"')[0].replace("&amp;", "&") if marker in page else ""
    assert seen == list(reversed(ids))
