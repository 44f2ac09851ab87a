"""The dashboard in a real browser (headless Chromium), on memory and PostgreSQL.

Jobs that succeed, fail, run long with progress and wait are enqueued; through the browser the
test finds each one, reads its state, watches a running job move without a reload, retries a
failed job, cancels the long one, bulk-cancels the waiting ones, and checks the store changed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from dashboard_helpers import Served, chromium, click, screenshot, text_of, wait_text  # noqa: F401

import neoq
from neoq import Job, JobStatus
from neoq.context import JobContext
from neoq.dashboard import create_app
from neoq.testing import wait_for

SCRIPT = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.postgres)])
def client(request: pytest.FixtureRequest) -> Iterator[neoq.Neoq]:
    url = "memory://" if request.param == "memory" else request.getfixturevalue("pg_clean")
    nq = neoq.new(url)
    try:
        yield nq
    finally:
        nq.shutdown(timeout=5)


class Handlers:
    """The test's handlers: a failure the first time only, a long job that reports progress."""

    def __init__(self) -> None:
        self.failed_once: set[str] = set()
        self.release = threading.Event()

    def ok(self, job: Job) -> dict[str, Any]:
        return {"doubled": job.payload["n"] * 2}

    def flaky(self, job: Job) -> None:
        if job.id not in self.failed_once:
            self.failed_once.add(job.id or "")
            raise ValueError(f"payment {job.payload['n']} declined")

    def long(self, job: Job) -> None:
        context = neoq.job_context()
        assert context is not None
        report = getattr(context, "progress", None)
        for step in range(600):
            if context.cancelled.wait(0.1) or self.release.is_set():
                return
            if report is not None:
                report(step / 600, f"step {step}")


def _status(nq: neoq.Neoq, job_id: str) -> JobStatus:
    job = nq.get_job(job_id)
    assert job is not None
    return job.status


def test_the_dashboard_in_a_browser(client: neoq.Neoq, browser: Any) -> None:
    nq = client
    handlers = Handlers()
    ok_id = nq.enqueue(Job(queue="dash-ok", payload={"n": 21}))
    flaky_id = nq.enqueue(Job(queue="dash-flaky", payload={"n": 7}, max_retries=0))
    long_id = nq.enqueue(Job(queue="dash-long", payload={"report": "quarterly"}, max_retries=0))
    waiting = [nq.enqueue(Job(queue="dash-wait", payload={"n": n})) for n in range(3)]
    script_id = nq.enqueue(Job(queue="dash-wait", payload={"html": SCRIPT}))
    nq.start("dash-ok", handlers.ok)
    nq.start("dash-flaky", handlers.flaky, max_retries=0)
    nq.start("dash-long", handlers.long, timeout=120)
    nq.start_cron("0 * * * *", lambda job: None, queue="dash-cron")
    wait_for(lambda: _status(nq, ok_id) is JobStatus.PROCESSED, timeout=10)
    wait_for(lambda: _status(nq, flaky_id) is JobStatus.FAILED, timeout=10)
    wait_for(lambda: _status(nq, long_id) is JobStatus.RUNNING, timeout=10)

    served = Served(create_app(nq))
    try:
        base = served.url
        # The overview: every queue with its counts, the running job listed.
        browser.get(base + "/")
        wait_text(browser, '#queues tr[data-queue="dash-ok"] [data-count="processed"]', lambda text: text == "1")
        assert text_of(browser, '#queues tr[data-queue="dash-flaky"] [data-count="failed"]') == "1"
        assert text_of(browser, '#queues tr[data-queue="dash-wait"] [data-count="new"]') == "4"
        assert text_of(browser, '#queues tr[data-queue="dash-long"] [data-count="running"]') == "1"
        wait_text(browser, "#running tbody", lambda text: long_id in text)
        assert "0 * * * *" in text_of(browser, "#schedules")  # the cron schedule, its next tick
        screenshot(browser, "overview")

        # Each job found through the list's filters, its state read on its page.
        browser.get(f"{base}/jobs?queue=dash-ok&status=processed")
        assert text_of(browser, f'#jobs tr[data-job="{ok_id}"] .status') == "processed"
        browser.get(f"{base}/jobs/{ok_id}")
        assert text_of(browser, "#job-status") == "processed"
        result = getattr(nq.get_job(ok_id), "result", None)
        if result is not None:  # job outcomes, where this neoq stores them
            assert "42" in text_of(browser, "#job-result")
        browser.get(f"{base}/jobs?q=declined")
        assert flaky_id in text_of(browser, "#jobs")
        browser.get(f"{base}/jobs/{flaky_id}")
        assert text_of(browser, "#job-status") == "failed"
        assert "payment 7 declined" in text_of(browser, "#job-error")
        screenshot(browser, "job-failed")

        # Retry the failed job: confirmed, and the store runs it again (it succeeds the second time).
        click(browser, "#retry")
        wait_text(browser, "#confirm-text", lambda text: "Retry job" in text)
        click(browser, "#confirm")
        wait_text(browser, "#message", lambda text: "run again" in text)
        wait_for(lambda: _status(nq, flaky_id) is JobStatus.PROCESSED, timeout=10)

        # The running job's page moves on its own: no reload (the marker survives).
        browser.get(f"{base}/jobs/{long_id}")
        assert text_of(browser, "#job-status") == "running"
        browser.execute_script("window.__marker = 'still here'")
        if hasattr(JobContext, "progress"):  # job outcomes, where this neoq has them
            first = wait_text(browser, "#job-progress-text", lambda text: text not in ("", "-"))
            wait_text(browser, "#job-progress-text", lambda text: text != first, timeout=15)
        screenshot(browser, "job-running")
        # Cancel it through the browser: the store says CANCELLED, and so does the page, live.
        click(browser, "#cancel")
        wait_text(browser, "#confirm-text", lambda text: "Cancel job" in text)
        click(browser, "#confirm")
        wait_for(lambda: _status(nq, long_id) is JobStatus.CANCELLED, timeout=10)
        browser.get(f"{base}/jobs/{long_id}")
        browser.execute_script("window.__marker = 'still here'")
        assert text_of(browser, "#job-status") == "cancelled"
        assert browser.execute_script("return window.__marker") == "still here"

        # The <script> payload is shown as text and never runs.
        browser.get(f"{base}/jobs/{script_id}")
        assert "<script>window.__pwned = 1</script>" in text_of(browser, "#job-payload")
        browser.get(f"{base}/jobs?queue=dash-wait")
        assert browser.execute_script("return window.__pwned === undefined")

        # Bulk-cancel the waiting jobs of one queue: confirmed, then the store has them cancelled.
        browser.get(f"{base}/jobs?queue=dash-wait&status=new")
        screenshot(browser, "jobs")
        click(browser, "#bulk-cancel")
        wait_text(browser, "#confirm-text", lambda text: "dash-wait" in text)
        click(browser, "#confirm")
        wait_text(browser, "#message", lambda text: "4 jobs were cancelled" in text)
        assert all(_status(nq, job_id) is JobStatus.CANCELLED for job_id in [*waiting, script_id])

        # The workers page lists this process.
        browser.get(f"{base}/workers")
        import os

        assert str(os.getpid()) in text_of(browser, "#workers")
        screenshot(browser, "workers")
    finally:
        handlers.release.set()
        served.close()


def test_counts_refresh_without_a_reload(client: neoq.Neoq, browser: Any) -> None:
    nq = client
    served = Served(create_app(nq))
    try:
        browser.get(served.url + "/")
        browser.execute_script("window.__marker = 'still here'")
        cell = '#queues tr[data-queue="dash-live"] [data-count="new"]'
        nq.enqueue(Job(queue="dash-live", payload={"n": 0}))  # a queue the page has not seen: a new row
        wait_text(browser, cell, lambda text: text == "1", timeout=10)
        nq.enqueue(Job(queue="dash-live", payload={"n": 1}))
        wait_text(browser, cell, lambda text: text == "2", timeout=10)
        nq.start("dash-live", lambda job: None)
        wait_text(
            browser, '#queues tr[data-queue="dash-live"] [data-count="processed"]', lambda t: t == "2", timeout=10
        )
        assert browser.execute_script("return window.__marker") == "still here"
    finally:
        served.close()


def test_read_only_offers_no_action(client: neoq.Neoq, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    nq = client
    failed = nq.enqueue(Job(queue="dash-ro", payload={}, max_retries=0))
    waiting = nq.enqueue(Job(queue="dash-ro-wait", payload={}))
    nq.start("dash-ro", lambda job: 1 / 0, max_retries=0)
    wait_for(lambda: _status(nq, failed) is JobStatus.FAILED, timeout=10)
    served = Served(create_app(nq, read_only=True))
    try:
        for path in (f"/jobs/{failed}", f"/jobs/{waiting}", "/jobs", "/"):
            browser.get(served.url + path)
            assert text_of(browser, "#read-only") == "read-only"
            assert not browser.find_elements(By.CSS_SELECTOR, "form[method=post], #retry, #cancel, .bulk")
        # The action URLs do not exist at all.
        from werkzeug.test import Client

        response = Client(create_app(nq, read_only=True)).post(f"/jobs/{failed}/retry", data={"confirm": "yes"})
        assert response.status_code in (404, 405)
        assert _status(nq, failed) is JobStatus.FAILED
    finally:
        served.close()


@pytest.mark.postgres
def test_the_chart_shows_the_last_hour(pg_clean: str, browser: Any) -> None:
    """Jobs finished over the last hour (their times moved back in the store) make the chart's bars;
    the overview of this busier store is the screenshot of docs/dashboard.md."""
    import psycopg

    with neoq.new(pg_clean) as nq:
        for queue in ("emails", "reports", "billing"):
            nq.enqueue_many([Job(queue=queue, payload={"n": n}, max_retries=0) for n in range(60)])
        nq.start("emails", lambda job: None, concurrency=4)
        nq.start("reports", lambda job: None)
        nq.start("billing", lambda job: 1 / 0 if job.payload["n"] % 6 == 0 else None, max_retries=0)
        wait_for(lambda: sum(c["processed"] + c["failed"] for c in nq.stats().values()) == 180, timeout=30)
        with psycopg.connect(pg_clean, autocommit=True) as conn:
            conn.execute("UPDATE neoq_jobs SET finished_at = now() - (id * 7 % 59) * interval '1 minute'")
        handlers = Handlers()
        nq.enqueue_many([Job(queue="webhooks", payload={"later": n}, run_after=_minutes_ago(n)) for n in range(5)])
        nq.enqueue(Job(queue="exports", payload={"report": "yearly"}, max_retries=0))
        nq.start("exports", handlers.long, timeout=120)
        nq.start_cron("*/15 * * * *", lambda job: None, queue="cleanup")
        served = Served(create_app(nq))
        try:
            browser.get(served.url + "/")
            caption = text_of(browser, "figcaption")
            assert "170 processed" in caption and "10 failed" in caption, caption
            bars = browser.find_elements("css selector", "#activity rect.ok")
            assert len(bars) > 30
            wait_text(browser, "#running tbody", lambda text: "exports" in text)
            screenshot(browser, "overview")
        finally:
            handlers.release.set()
            served.close()


def _minutes_ago(minutes: int) -> Any:
    from datetime import datetime, timedelta, timezone

    return datetime.now(timezone.utc) - timedelta(minutes=minutes)
