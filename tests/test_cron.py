"""Periodic jobs: specs and tick computation (pure functions of time), queue names, and the scheduler.

The spec tests never wait: they compute ticks from a given ``now``. The scheduler tests use real
per-second schedules on the memory backend and wait on conditions with deadlines.
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import neoq
from neoq import ConfigurationError, CronSpecError, Handler, Job, JobStatus
from neoq.backends.memory import MemoryBackend
from neoq.cron import CRON_QUEUE_PREFIX, cron_queue_name, next_tick, parse_spec, tick_job, ticks
from neoq.errors import BackendError
from neoq.testing import neoq_threads, wait_for

UTC = timezone.utc

#: A Wednesday, mid-morning, with a fractional second.
WED = datetime(2024, 5, 1, 10, 3, 10, 500_000, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def may(day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2024, 5, day, hour, minute, second, tzinfo=UTC)


def first_ticks(spec: str, now: datetime, count: int, tz: str = "UTC") -> list[datetime]:
    trigger = parse_spec(spec, tz)
    return list(itertools.islice(ticks(trigger, now, now + timedelta(days=800)), count))


def crontab_weekdays(spec: str) -> set[int]:
    """The crontab weekday numbers (0 = Sunday) on which ``spec`` ticks, over four weeks."""
    found = ticks(parse_spec(spec), utc(2024, 5, 1), utc(2024, 5, 29))
    return {tick.isoweekday() % 7 for tick in found}


# -- specs: 5 fields, minute first -------------------------------------------------------------


def test_five_fields_are_minute_first() -> None:
    # Go neoq read 5 fields as seconds first; here "30 * * * *" is half past every hour.
    assert first_ticks("30 * * * *", WED, 2) == [utc(2024, 5, 1, 10, 30), utc(2024, 5, 1, 11, 30)]


def test_five_field_steps_ranges_and_lists() -> None:
    assert first_ticks("*/5 * * * *", WED, 3) == [may(1, 10, 5), may(1, 10, 10), may(1, 10, 15)]
    assert first_ticks("0 9-11/2 * * *", WED, 3) == [utc(2024, 5, 1, 11), utc(2024, 5, 2, 9), utc(2024, 5, 2, 11)]
    assert first_ticks("15,45 8 * * *", WED, 3) == [may(2, 8, 15), may(2, 8, 45), may(3, 8, 15)]
    assert first_ticks("0 0 1 jan,Jul *", WED, 2) == [utc(2024, 7, 1), utc(2025, 1, 1)]
    # "a/step" runs from a to the end of the field, as in Vixie cron.
    assert first_ticks("50/4 10 * * *", WED, 3) == [may(1, 10, 50), may(1, 10, 54), may(1, 10, 58)]


def test_next_tick_is_strictly_after_now() -> None:
    trigger = parse_spec("*/5 * * * *")
    assert next_tick(trigger, utc(2024, 5, 1, 10, 5)) == utc(2024, 5, 1, 10, 10)
    assert next_tick(trigger, utc(2024, 5, 1, 10, 4, 59)) == utc(2024, 5, 1, 10, 5)
    # ticks() includes its start.
    assert next(ticks(trigger, utc(2024, 5, 1, 10, 5), utc(2024, 5, 2))) == utc(2024, 5, 1, 10, 5)


def test_ticks_are_aware_utc() -> None:
    tick = next_tick(parse_spec("0 9 * * *", "Europe/Paris"), WED)
    assert tick is not None and tick.tzinfo is UTC


# -- specs: 6 fields, seconds first ------------------------------------------------------------


def test_six_fields_are_seconds_first() -> None:
    now = utc(2024, 5, 1, 12, 0, 1, 500_000)
    assert first_ticks("*/2 * * * * *", now, 3) == [may(1, 12, 0, 2), may(1, 12, 0, 4), may(1, 12, 0, 6)]
    assert first_ticks("30 * * * * *", now, 2) == [utc(2024, 5, 1, 12, 0, 30), utc(2024, 5, 1, 12, 1, 30)]
    assert first_ticks("0 30 * * * *", now, 1) == [utc(2024, 5, 1, 12, 30)]
    assert first_ticks("* * * * * *", now, 2) == [utc(2024, 5, 1, 12, 0, 2), utc(2024, 5, 1, 12, 0, 3)]


# -- specs: shortcuts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("@yearly", [utc(2025, 1, 1), utc(2026, 1, 1)]),
        ("@annually", [utc(2025, 1, 1), utc(2026, 1, 1)]),
        ("@monthly", [utc(2024, 6, 1), utc(2024, 7, 1)]),
        ("@weekly", [utc(2024, 5, 5), utc(2024, 5, 12)]),  # Sundays at midnight
        ("@daily", [utc(2024, 5, 2), utc(2024, 5, 3)]),
        ("@midnight", [utc(2024, 5, 2), utc(2024, 5, 3)]),
        ("@hourly", [utc(2024, 5, 1, 11), utc(2024, 5, 1, 12)]),
        ("@HOURLY", [utc(2024, 5, 1, 11), utc(2024, 5, 1, 12)]),
    ],
)
def test_shortcuts(spec: str, expected: list[datetime]) -> None:
    assert first_ticks(spec, WED, 2) == expected


def test_every_is_anchored_to_the_epoch_so_every_process_agrees() -> None:
    trigger = parse_spec("@every 90s")
    # Two processes starting at different moments compute the same ticks.
    a = list(ticks(trigger, utc(2024, 5, 1, 10, 0, 7), utc(2024, 5, 1, 10, 10)))
    b = list(ticks(trigger, utc(2024, 5, 1, 10, 2, 59), utc(2024, 5, 1, 10, 10)))
    assert a[-len(b) :] == b
    assert all(int(tick.timestamp()) % 90 == 0 for tick in a)
    assert first_ticks("@every 1h30m", WED, 2) == [utc(2024, 5, 1, 10, 30), utc(2024, 5, 1, 12)]
    assert first_ticks("@every 2m", utc(2024, 5, 1, 10, 3), 1) == [utc(2024, 5, 1, 10, 4)]


# -- specs: day of week, crontab numbering (0 and 7 are Sunday) --------------------------------------


@pytest.mark.parametrize(
    ("field", "days"),
    [
        ("0", {0}),
        ("7", {0}),
        ("sun", {0}),
        ("1", {1}),
        ("Mon", {1}),
        ("6", {6}),
        ("1-5", {1, 2, 3, 4, 5}),
        ("mon-fri", {1, 2, 3, 4, 5}),
        ("5-7", {5, 6, 0}),
        ("fri-sun", {5, 6, 0}),
        ("0-2", {0, 1, 2}),
        ("0,3", {0, 3}),
        ("sat,sun", {6, 0}),
        ("*/2", {0, 2, 4, 6}),
        ("1-5/2", {1, 3, 5}),
        ("mon-fri/2", {1, 3, 5}),
        ("6,7", {6, 0}),
        ("0,7", {0}),
        ("*", {0, 1, 2, 3, 4, 5, 6}),
    ],
)
def test_day_of_week_uses_crontab_numbers(field: str, days: set[int]) -> None:
    assert crontab_weekdays(f"0 12 * * {field}") == days


def test_weekday_schedule_skips_the_weekend() -> None:
    friday_evening = utc(2024, 5, 3, 18)
    assert first_ticks("0 9 * * 1-5", friday_evening, 2) == [utc(2024, 5, 6, 9), utc(2024, 5, 7, 9)]


def test_both_day_fields_restricted_means_either_matches() -> None:
    # Crontab: "on the 13th, and on every Friday" (not "on Friday the 13th").
    found = list(ticks(parse_spec("0 0 13 * 5"), utc(2024, 5, 1), utc(2024, 6, 1)))
    assert [tick.day for tick in found] == [3, 10, 13, 17, 24, 31]
    # A day field starting with "*" does not count as restricted: then both must match.
    found = list(ticks(parse_spec("0 0 */2 * 1"), utc(2024, 5, 1), utc(2024, 7, 1)))
    assert found and all(tick.day % 2 == 1 and tick.isoweekday() == 1 for tick in found)


def test_timezone_reads_fields_in_local_time() -> None:
    summer = first_ticks("0 9 * * *", utc(2024, 7, 1), 1, "Europe/Paris")
    winter = first_ticks("0 9 * * *", utc(2024, 1, 10), 1, "Europe/Paris")
    assert summer == [utc(2024, 7, 1, 7)]
    assert winter == [utc(2024, 1, 10, 8)]
    assert first_ticks("@hourly", utc(2024, 1, 10), 1, "Asia/Kolkata") == [utc(2024, 1, 10, 0, 30)]


def test_daylight_saving_changes() -> None:
    # Spring forward: 02:30 does not exist in Paris on 2024-03-31; that day's tick comes an hour
    # later by the wall clock (03:30 CEST = 01:30 UTC), once.
    spring = list(ticks(parse_spec("30 2 * * *", "Europe/Paris"), utc(2024, 3, 30), utc(2024, 4, 2)))
    assert spring == [utc(2024, 3, 30, 1, 30), utc(2024, 3, 31, 1, 30), utc(2024, 4, 1, 0, 30)]
    # Fall back: 01:30 happens twice in New York on 2024-11-03; each is its own instant and tick.
    fall = list(ticks(parse_spec("30 1 * * *", "America/New_York"), utc(2024, 11, 3), utc(2024, 11, 5)))
    assert fall == [utc(2024, 11, 3, 5, 30), utc(2024, 11, 3, 6, 30), utc(2024, 11, 4, 6, 30)]


# -- specs: errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "has 0 fields"),
        ("* * * *", "has 4 fields"),
        ("* * * * * * *", "has 7 fields"),
        ("61 * * * *", "minute field: 61 is out of range 0-59"),
        ("* 24 * * *", "hour field: 24 is out of range 0-23"),
        ("* * 0 * *", "day-of-month field: 0 is out of range 1-31"),
        ("* * 32 * *", "day-of-month field: 32 is out of range 1-31"),
        ("* * * 13 *", "month field: 13 is out of range 1-12"),
        ("* * * * 8", "day-of-week field: 8 is out of range 0-7"),
        ("60 * * * * *", "second field: 60 is out of range 0-59"),
        ("5-2 * * * *", "range '5-2' goes backwards"),
        ("*/0 * * * *", "step '0'"),
        ("*/x * * * *", "step 'x'"),
        ("x * * * *", "minute field: 'x' is not a number"),
        ("* * * foo *", "month field: 'foo' is not a number or a name (jan/"),
        ("* * * * funday", "day-of-week field: 'funday' is not a number or a name (sun/"),
        ("1,,2 * * * *", "empty list item"),
        ("-1 * * * *", "minute field: '' is not a number"),
        ("? * * * *", "minute field: '?' is not a number"),
        ("0 0 30 2 *", "day-of-month '30' never occurs in month(s) '2'"),
        ("0 0 31 4,6 *", "never occurs"),
        ("@reboot", "unknown shortcut"),
        ("@hourly 5", "unknown shortcut"),
        ("@every", "@every takes a duration"),
        ("@every 1d", "@every takes a duration"),
        ("@every 500ms", "@every takes a duration"),
        ("@every 0s", "at least 1s"),
    ],
)
def test_invalid_spec_raises_cron_spec_error_naming_the_problem(spec: str, message: str) -> None:
    with pytest.raises(CronSpecError) as info:
        parse_spec(spec)
    assert message in str(info.value)
    assert isinstance(info.value, ConfigurationError)


def test_spec_must_be_a_string() -> None:
    with pytest.raises(CronSpecError, match="must be a str"):
        parse_spec(5)  # type: ignore[arg-type]


def test_question_mark_means_any_in_the_day_fields() -> None:
    assert first_ticks("0 0 ? * 1", WED, 1) == [utc(2024, 5, 6)]


@pytest.mark.parametrize("tz", ["Mars/Olympus", "", "Europe", "../etc/passwd", 3])
def test_unknown_timezone_is_a_configuration_error(tz: Any) -> None:
    with pytest.raises(ConfigurationError, match="timezone") as info:
        parse_spec("* * * * *", tz)
    assert not isinstance(info.value, CronSpecError)


def test_naive_now_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="timezone-aware"):
        next_tick(parse_spec("* * * * *"), datetime(2024, 5, 1))


def test_tick_job_payload_and_fingerprint() -> None:
    first = tick_job("q", utc(2024, 5, 1, 10))
    second = tick_job("q", datetime(2024, 5, 1, 12, 0, 1, tzinfo=timezone(timedelta(hours=2))))
    assert first.queue == "q"
    assert dict(first.payload) == {"scheduled_at": "2024-05-01T10:00:00+00:00"}
    assert dict(second.payload) == {"scheduled_at": "2024-05-01T10:00:01+00:00"}
    assert datetime.fromisoformat(first.payload["scheduled_at"]) == utc(2024, 5, 1, 10)
    assert first.fingerprint and second.fingerprint and first.fingerprint != second.fingerprint
    assert tick_job("q", utc(2024, 5, 1, 10)).fingerprint == first.fingerprint


# -- queue names ---------------------------------------------------------------------------------


#: The queues the two module-level handlers below saw, by handler.
SEEN: dict[str, list[str]] = {}


def report(job: Job) -> None:
    """A module-level cron handler."""
    SEEN.setdefault("report", []).append(job.queue)


def cleanup(job: Job) -> None:
    """Another one, for the same spec."""
    SEEN.setdefault("cleanup", []).append(job.queue)


class Reports:
    def daily(self, job: Job) -> None:
        """A method handler."""

    @staticmethod
    def weekly(job: Job) -> None:
        """A static method handler."""


class CallableObject:
    def __call__(self, job: Job) -> None:
        """Instances have no qualified name."""


def test_queue_name_comes_from_module_and_qualified_name() -> None:
    assert cron_queue_name(report) == f"{CRON_QUEUE_PREFIX}{__name__}.report"
    assert cron_queue_name(cleanup) == f"cron:{__name__}.cleanup"
    assert cron_queue_name(Reports().daily) == f"cron:{__name__}.Reports.daily"
    assert cron_queue_name(Reports.weekly) == f"cron:{__name__}.Reports.weekly"


def test_callables_without_a_unique_name_need_queue() -> None:
    def local(job: Job) -> None:
        pass

    for func in (lambda job: None, functools.partial(report), local, CallableObject()):
        with pytest.raises(ConfigurationError, match="queue="):
            cron_queue_name(func)


def test_too_long_derived_name_needs_queue() -> None:
    def handler(job: Job) -> None:
        pass

    handler.__qualname__ = "x" * 200
    with pytest.raises(ConfigurationError, match="queue="):
        cron_queue_name(handler)


# -- start_cron: checks at the call --------------------------------------------------------------


@pytest.fixture
def nq() -> Iterator[neoq.Neoq]:
    client = neoq.new(shutdown_timeout=5)
    try:
        yield client
    finally:
        client.shutdown(timeout=5)


def test_start_cron_checks_at_the_call(nq: neoq.Neoq) -> None:
    with pytest.raises(CronSpecError, match="minute field: 99"):
        nq.start_cron("99 * * * *", report)
    with pytest.raises(ConfigurationError, match="unknown timezone"):
        nq.start_cron("* * * * *", report, timezone="Nowhere/Land")
    with pytest.raises(ConfigurationError, match="queue="):
        nq.start_cron("* * * * *", lambda job: None)
    with pytest.raises(ConfigurationError, match="catch_up"):
        nq.start_cron("* * * * *", report, catch_up=-1)
    # None of the failed calls registered anything.
    assert nq.handlers == {}
    nq.start_cron("0 0 1 1 *", report)
    assert list(nq.handlers) == [f"cron:{__name__}.report"]
    with pytest.raises(ConfigurationError, match="already has a handler"):
        nq.start_cron("0 0 1 1 *", report)
    with pytest.raises(ConfigurationError, match="already has a handler"):
        nq.start(f"cron:{__name__}.report", report)
    nq.start_cron("0 0 1 1 *", lambda job: None, queue="yearly-lambda")
    assert "yearly-lambda" in nq.handlers


def test_start_cron_after_shutdown_is_refused() -> None:
    client = neoq.new()
    client.shutdown()
    with pytest.raises(ConfigurationError, match="shut down"):
        client.start_cron("* * * * *", report)


# -- the scheduler on the memory backend ----------------------------------------------------------


def scheduled(client: neoq.Neoq, queue: str) -> list[str]:
    """The scheduled_at of every job of ``queue``, oldest first."""
    return sorted(job.payload["scheduled_at"] for job in client.list_jobs(queue=queue, limit=100_000))


def assert_consecutive_seconds(stamps: list[str]) -> None:
    times = [datetime.fromisoformat(stamp) for stamp in stamps]
    assert len(set(times)) == len(times), f"a tick was enqueued twice: {stamps}"
    assert all(t.microsecond == 0 and t.utcoffset() == timedelta(0) for t in times), stamps
    expected = [times[0] + timedelta(seconds=n) for n in range(len(times))]
    assert times == expected, f"ticks skipped: {stamps}"


def test_each_tick_enqueues_one_job_that_runs(nq: neoq.Neoq) -> None:
    ran: list[Job] = []
    nq.start_cron("* * * * * *", ran.append, queue="every-second")
    wait_for(lambda: len(ran) >= 3, timeout=10)
    job = ran[0]
    assert job.queue == "every-second"
    assert set(job.payload) == {"scheduled_at"}
    # The job was stored at (or just after) its tick, never before.
    scheduled_at = datetime.fromisoformat(job.payload["scheduled_at"])
    assert job.created_at is not None and job.created_at >= scheduled_at
    wait_for(lambda: all(j.status is JobStatus.PROCESSED for j in nq.list_jobs(queue="every-second")[1:]))
    assert_consecutive_seconds(scheduled(nq, "every-second"))


def test_two_handlers_with_the_same_spec_get_separate_queues(nq: neoq.Neoq) -> None:
    SEEN.clear()
    nq.start_cron("* * * * * *", report)
    nq.start_cron("* * * * * *", cleanup)
    wait_for(lambda: SEEN.get("report") and SEEN.get("cleanup"), timeout=10)
    assert set(SEEN["report"]) == {f"cron:{__name__}.report"}
    assert set(SEEN["cleanup"]) == {f"cron:{__name__}.cleanup"}
    assert len(scheduled(nq, f"cron:{__name__}.report")) >= 1
    assert len(scheduled(nq, f"cron:{__name__}.cleanup")) >= 1


def test_exactly_once_per_tick_with_several_schedulers_on_one_store() -> None:
    # Three clients in one process share one memory store, as three processes share PostgreSQL.
    store = MemoryBackend()
    clients = [neoq.new(backend=store, shutdown_timeout=5) for _ in range(3)]
    try:
        for client in clients:
            client.start_cron("* * * * * *", Handler(lambda job: None, concurrency=2), queue="shared")
        wait_for(lambda: len(clients[0].list_jobs(queue="shared")) >= 4, timeout=15)
    finally:
        for client in clients:
            client.shutdown(timeout=5)
    stamps = scheduled(clients[0], "shared")
    assert len(stamps) >= 4
    assert_consecutive_seconds(stamps)
    assert store.last_tick("shared") == datetime.fromisoformat(stamps[-1])


def test_a_running_or_retrying_job_does_not_hold_back_the_next_tick(nq: neoq.Neoq) -> None:
    release = threading.Event()
    order: list[str] = []
    attempts: dict[str, int] = {}
    lock = threading.Lock()

    def handler(job: Job) -> None:
        stamp = job.payload["scheduled_at"]
        with lock:
            if stamp not in attempts:
                order.append(stamp)
            attempts[stamp] = attempts.get(stamp, 0) + 1
            index = order.index(stamp)
        if index == 0:
            assert release.wait(20), "never released"  # the first tick's job keeps running
        elif index == 1 and job.retries == 0:
            raise RuntimeError("first attempt fails")  # the second tick's job waits for a retry

    nq.start_cron(
        "* * * * * *",
        # The retry waits 5 s: room for two more ticks while it waits, even on a loaded machine.
        Handler(handler, concurrency=4, timeout=30, max_retries=3, backoff=lambda retries: 5.0),
        queue="busy",
    )

    def jobs_by_tick() -> dict[str, Job]:
        return {job.payload["scheduled_at"]: job for job in nq.list_jobs(queue="busy")}

    def both_pending_and_more_ticks() -> bool:
        with lock:
            if len(order) < 2:
                return False
            first, second = order[0], order[1]
        jobs = jobs_by_tick()
        later = [stamp for stamp in jobs if stamp > second]
        return (
            jobs[first].status is JobStatus.RUNNING  # still running
            and jobs[second].status is JobStatus.NEW
            and jobs[second].retries == 1  # waiting for its retry
            and len(later) >= 2
        )

    wait_for(both_pending_and_more_ticks, timeout=15)
    release.set()
    with lock:
        second = order[1]
    wait_for(lambda: jobs_by_tick()[second].status is JobStatus.PROCESSED, timeout=15)
    assert jobs_by_tick()[second].retries == 1
    assert attempts[second] == 2
    assert_consecutive_seconds(scheduled(nq, "busy"))


def test_the_handler_timeout_applies(nq: neoq.Neoq) -> None:
    def slow(job: Job) -> None:
        context = neoq.job_context()
        assert context is not None
        context.cancelled.wait(10)

    nq.start_cron("* * * * * *", Handler(slow, timeout=0.2, max_retries=0), queue="slow-cron")
    failed = wait_for(lambda: nq.list_jobs(queue="slow-cron", status="failed"), timeout=10)
    assert failed[0].error is not None and failed[0].error.startswith("JobTimeoutError")


def test_ticks_are_stored_while_the_store_is_slow_or_failing() -> None:
    class FlakyStore(MemoryBackend):
        """Fails the first enqueue_tick calls, then blocks one, then works."""

        def __init__(self) -> None:
            super().__init__()
            self.failures = 3
            self.blocked = threading.Event()
            self.unblock = threading.Event()

        def enqueue_tick(self, job: Job, key: str, tick: datetime) -> str | None:
            if self.failures:
                self.failures -= 1
                raise BackendError("store unreachable (test)")
            if not self.blocked.is_set():
                self.blocked.set()
                assert self.unblock.wait(20)
            return super().enqueue_tick(job, key, tick)

    store = FlakyStore()
    client = neoq.new(backend=store, shutdown_timeout=5)
    try:
        client.start_cron("* * * * * *", lambda job: None, queue="flaky")
        assert store.blocked.wait(15)
        # While one tick's store call hangs, the scheduler keeps firing: about 2.5 ticks pile up.
        start = time.monotonic()
        wait_for(lambda: time.monotonic() - start > 2.5, timeout=5, interval=0.05)
        store.unblock.set()
        wait_for(lambda: len(client.list_jobs(queue="flaky")) >= 5, timeout=15)
    finally:
        store.unblock.set()
        client.shutdown(timeout=5)
    assert_consecutive_seconds(scheduled(client, "flaky"))


def test_late_scheduler_runs_enqueue_every_missed_tick(nq: neoq.Neoq) -> None:
    # Holding the scheduler back (as a starved or paused process would be) must not coalesce or drop ticks.
    # Pausing APScheduler (a private attribute) is the one way to make it late on purpose.
    nq.start_cron("* * * * * *", lambda job: None, queue="late")
    wait_for(lambda: nq.list_jobs(queue="late"), timeout=10)
    cron = nq._cron
    assert cron is not None
    cron._scheduler.pause()
    paused_at = datetime.now(UTC)
    wait_for(lambda: datetime.now(UTC) - paused_at > timedelta(seconds=2.5), timeout=5, interval=0.05)
    cron._scheduler.resume()
    wait_for(lambda: datetime.fromisoformat(scheduled(nq, "late")[-1]) > paused_at + timedelta(seconds=2), timeout=10)
    assert_consecutive_seconds(scheduled(nq, "late"))


def test_ticks_later_than_the_grace_are_dropped() -> None:
    from neoq.clock import Clock
    from neoq.cron import CronScheduler

    class Later(Clock):
        def now(self) -> datetime:
            return datetime.now(UTC) + timedelta(hours=2)

    client = neoq.new()
    try:
        cron = CronScheduler(client.backend, clock=Later(), grace=600)
        old = datetime.now(UTC).replace(microsecond=0)
        cron._store_ticks("graced", [old, old + timedelta(hours=1, minutes=55)])
        assert scheduled(client, "graced") == [(old + timedelta(hours=1, minutes=55)).isoformat()]
        cron.stop()
    finally:
        client.shutdown()


# -- missed ticks and catch-up ----------------------------------------------------------------------


def whole_seconds(start: datetime, end: datetime) -> list[str]:
    """ISO strings of the whole seconds in [start, end)."""
    first = start.replace(microsecond=0) + (timedelta(seconds=1) if start.microsecond else timedelta(0))
    out = []
    while first < end:
        out.append(first.isoformat())
        first += timedelta(seconds=1)
    return out


def record_tick(client: neoq.Neoq, queue: str, tick: datetime) -> None:
    """Record ``tick`` as enqueued, as an earlier process would have."""
    assert client.backend.enqueue_tick(tick_job(queue, tick), queue, tick) is not None


def test_missed_ticks_are_not_run_later_by_default(nq: neoq.Neoq) -> None:
    last = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=10)
    record_tick(nq, "no-catch-up", last)
    before = datetime.now(UTC)
    nq.start_cron("* * * * * *", lambda job: None, queue="no-catch-up")
    wait_for(lambda: len(scheduled(nq, "no-catch-up")) >= 2, timeout=10)
    stamps = scheduled(nq, "no-catch-up")
    assert stamps[0] == last.isoformat()
    assert all(datetime.fromisoformat(stamp) >= before for stamp in stamps[1:])


def test_catch_up_enqueues_missed_ticks_within_the_window(nq: neoq.Neoq) -> None:
    last = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=20)
    record_tick(nq, "catch-up", last)
    before = datetime.now(UTC)
    nq.start_cron("* * * * * *", lambda job: None, queue="catch-up", catch_up=timedelta(seconds=4))
    after = datetime.now(UTC)
    wait_for(lambda: len(scheduled(nq, "catch-up")) >= 6, timeout=10)
    stamps = scheduled(nq, "catch-up")
    earlier = [stamp for stamp in stamps if datetime.fromisoformat(stamp) < before]
    # The recorded tick, then the ticks of the last 4 seconds before the start; nothing older.
    assert earlier[0] == last.isoformat()
    caught_up = [datetime.fromisoformat(stamp) for stamp in earlier[1:]]
    assert all(tick >= before - timedelta(seconds=4) for tick in caught_up)
    assert set(whole_seconds(after - timedelta(seconds=4), before)) <= set(earlier[1:])
    assert_consecutive_seconds(stamps[1:])


def test_catch_up_starts_after_the_last_recorded_tick(nq: neoq.Neoq) -> None:
    last = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=2)
    record_tick(nq, "recent", last)
    nq.start_cron("* * * * * *", lambda job: None, queue="recent", catch_up=60)
    wait_for(lambda: len(scheduled(nq, "recent")) >= 4, timeout=10)
    stamps = scheduled(nq, "recent")
    assert stamps[0] == last.isoformat()
    assert_consecutive_seconds(stamps)  # the tick after `last` onwards, the recorded one not twice


def test_catch_up_without_any_recorded_tick_enqueues_nothing_old(nq: neoq.Neoq) -> None:
    before = datetime.now(UTC)
    nq.start_cron("* * * * * *", lambda job: None, queue="fresh", catch_up=3600)
    wait_for(lambda: scheduled(nq, "fresh"), timeout=10)
    assert all(datetime.fromisoformat(stamp) >= before for stamp in scheduled(nq, "fresh"))


# -- shutdown ---------------------------------------------------------------------------------------


def scheduler_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if "APScheduler" in t.name or t.name.startswith("neoq-cron")]


def test_shutdown_stops_the_scheduler_threads() -> None:
    client = neoq.new()
    client.start_cron("* * * * * *", lambda job: None, queue="stops")
    wait_for(lambda: client.list_jobs(queue="stops"), timeout=10)
    names = scheduler_threads()
    assert "neoq-cron" in names  # APScheduler's thread, named like the other neoq threads
    assert not [name for name in names if "APScheduler" in name]
    client.shutdown(timeout=5)
    assert scheduler_threads() == []
    assert neoq_threads() == []
    client.shutdown()  # twice is harmless


def test_shutdown_right_after_start_cron() -> None:
    for _ in range(5):
        client = neoq.new()
        client.start_cron("* * * * * *", lambda job: None, queue="quick")
        client.shutdown(timeout=5)
        assert scheduler_threads() == []


def test_shutdown_while_the_store_fails_is_prompt() -> None:
    class DownStore(MemoryBackend):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def enqueue_tick(self, job: Job, key: str, tick: datetime) -> str | None:
            self.calls += 1
            raise BackendError("store unreachable (test)")

    store = DownStore()
    client = neoq.new(backend=store)
    client.start_cron("* * * * * *", lambda job: None, queue="down")
    wait_for(lambda: store.calls >= 2, timeout=10)  # the first tick is being retried
    started = time.monotonic()
    client.shutdown(timeout=5)
    assert time.monotonic() - started < 3
    assert scheduler_threads() == []
    assert client.list_jobs(queue="down") == []


# -- failures inside the scheduler's threads -------------------------------------------------------


def test_a_store_raising_any_base_exception_loses_one_tick_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    # A SystemExit from the store went into a Future that nobody reads: the tick was lost silently.
    class ExitingStore(MemoryBackend):
        def __init__(self) -> None:
            super().__init__()
            self.exits = 1

        def enqueue_tick(self, job: Job, key: str, tick: datetime) -> str | None:
            if self.exits:
                self.exits -= 1
                raise SystemExit("a store that exits (test)")
            return super().enqueue_tick(job, key, tick)

    store = ExitingStore()
    client = neoq.new(backend=store, shutdown_timeout=5)
    try:
        client.start_cron("* * * * * *", lambda job: None, queue="exits")
        wait_for(lambda: len(client.list_jobs(queue="exits")) >= 2, timeout=10)
    finally:
        client.shutdown(timeout=5)
    failed = [r for r in caplog.records if "failed to enqueue tick" in r.getMessage()]
    assert failed and failed[0].levelno == logging.ERROR and failed[0].exc_info
    assert_consecutive_seconds(scheduled(client, "exits"))


def test_the_scheduler_thread_outlives_a_failing_trigger(caplog: pytest.LogCaptureFixture) -> None:
    # An exception from a trigger ended APScheduler's thread, and every schedule with it, silently.
    from apscheduler.triggers.base import BaseTrigger

    from neoq.cron import CronScheduler

    class FailsOnce(BaseTrigger):  # type: ignore[misc]
        def __init__(self) -> None:
            self.inner = parse_spec("* * * * * *")
            self.armed = True

        def get_next_fire_time(self, previous: datetime | None, now: datetime) -> datetime | None:
            if self.armed and threading.current_thread().name == "neoq-cron":
                self.armed = False
                raise RuntimeError("a trigger that fails (test)")
            result: datetime | None = self.inner.get_next_fire_time(previous, now)
            return result

    client = neoq.new()
    cron = CronScheduler(client.backend)
    trigger = FailsOnce()
    try:
        cron.add("fails", "* * * * * *", trigger)
        wait_for(lambda: not trigger.armed, timeout=10)
        failed_at = datetime.now(UTC)
        wait_for(lambda: (s := scheduled(client, "fails")) and datetime.fromisoformat(s[-1]) > failed_at, timeout=15)
        assert "neoq-cron" in scheduler_threads()
    finally:
        cron.stop()
        client.shutdown()
    failed = [r for r in caplog.records if "the scheduler failed" in r.getMessage()]
    assert failed and failed[0].levelno == logging.ERROR and failed[0].exc_info
    assert_consecutive_seconds(scheduled(client, "fails"))


def test_cron_scheduler_refuses_duplicates_and_use_after_stop() -> None:
    from neoq.cron import CronScheduler

    client = neoq.new()
    cron = CronScheduler(client.backend)
    try:
        trigger = parse_spec("@yearly")
        cron.add("yearly", "@yearly", trigger)
        assert cron.schedules == {"yearly": "@yearly"}
        assert "yearly" in repr(cron)
        with pytest.raises(ConfigurationError, match="already has a cron schedule"):
            cron.add("yearly", "@yearly", trigger)
    finally:
        cron.stop()
        cron.stop()
        client.shutdown()
    with pytest.raises(ConfigurationError, match="stopped"):
        cron.add("again", "@yearly", parse_spec("@yearly"))
    assert scheduler_threads() == []


def test_timezone_may_be_a_tzinfo() -> None:
    from zoneinfo import ZoneInfo

    assert first_ticks("0 9 * * *", utc(2024, 7, 1), 1, ZoneInfo("Europe/Paris")) == [utc(2024, 7, 1, 7)]  # type: ignore[arg-type]


def cron_imports() -> dict[str, set[str]]:
    """Return the absolute names each module of ``neoq.cron`` imports, TYPE_CHECKING imports included."""
    import ast
    from pathlib import Path

    import neoq.cron

    source = Path(neoq.cron.__file__)
    is_package = source.name == "__init__.py"
    imported: dict[str, set[str]] = {}
    for path in sorted(source.parent.glob("*.py")) if is_package else [source]:
        package = ["neoq", "cron"] if is_package else ["neoq"]
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                names.add(".".join([*base, *([node.module] if node.module else [])]))
        imported[path.stem] = names
    return imported


def test_cron_knows_nothing_of_the_client() -> None:
    # cron.py imported Neoq from app.py while app.py imported it: an import circle.
    imported = cron_imports()
    assert imported
    for module, names in imported.items():
        assert not names & {"neoq.app", "neoq"}, f"{module} imports the client"


def test_cron_specs_are_read_without_apscheduler() -> None:
    imported = cron_imports()
    assert {"spec", "triggers", "naming", "scheduler"} <= set(imported)
    for module in ("spec", "naming"):
        assert not any(name.startswith("apscheduler") for name in imported[module]), module
    assert any(name.startswith("apscheduler") for name in imported["triggers"])
