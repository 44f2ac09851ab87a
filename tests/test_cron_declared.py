"""``@nq.cron``: a schedule declared on the client, ticked only by ``run()`` for the queues it serves."""

from __future__ import annotations

import threading
import time

import pytest

import neoq
from neoq.testing import wait_for


def report(job: neoq.Job) -> None:
    """A module-level handler: its default cron queue is named after it."""


def test_a_declared_schedule_is_checked_at_once_and_registers_its_handler() -> None:
    with neoq.new("memory://") as nq:
        with pytest.raises(neoq.CronSpecError):
            nq.cron("every tuesday")
        with pytest.raises(neoq.ConfigurationError):
            nq.cron("* * * * *", timezone="Mars/Olympus")

        nq.cron("*/5 * * * *")(report)
        assert "cron:test_cron_declared.report" in nq.handlers
        with pytest.raises(neoq.ConfigurationError, match="already has a handler"):
            nq.cron("* * * * *", queue="cron:test_cron_declared.report")(report)
        with pytest.raises(neoq.ConfigurationError):
            nq.cron("* * * * *", queue="q", concurrency=0)(report)


def test_only_run_ticks_and_only_the_queues_it_serves() -> None:
    nq = neoq.new("memory://")
    ticks: dict[str, list[str]] = {"a": [], "b": []}

    @nq.cron("* * * * * *", queue="a")
    def tick_a(job: neoq.Job) -> None:
        ticks["a"].append(job.payload["scheduled_at"])

    @nq.cron("* * * * * *", queue="b")
    def tick_b(job: neoq.Job) -> None:
        ticks["b"].append(job.payload["scheduled_at"])

    nq.drain(timeout=1)
    time.sleep(1.2)  # a tick's time: declaring, and draining, start nothing
    assert nq.stats() == {} and ticks == {"a": [], "b": []}
    worker = threading.Thread(target=nq.run, args=(["a"],), kwargs={"install_signal_handlers": False})
    worker.start()
    try:
        wait_for(lambda: len(ticks["a"]) >= 2, timeout=10)
    finally:
        nq.stop()
        worker.join(10)
    assert ticks["b"] == [] and "b" not in nq.stats()
    assert len(ticks["a"]) == len(set(ticks["a"]))


def test_start_cron_still_starts_at_once() -> None:
    ran = threading.Event()
    with neoq.new("memory://") as nq:
        nq.start_cron("* * * * * *", lambda job: ran.set(), queue="now")
        assert ran.wait(5)
