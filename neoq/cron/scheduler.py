"""The scheduler that stores each cron tick as a job, exactly once across processes.

This module and ``neoq.cron.triggers`` are the only ones that import APScheduler (3.x).
APScheduler decides *when* a tick is due; it never runs a handler. Each tick becomes one job,
stored through ``Backend.enqueue_tick(job, key=<queue>, tick=<tick time>)``, which records
``(queue, tick)`` atomically with the job, so any number of processes running the same schedule
store each tick exactly once. The job then runs like any other (retries, timeout, concurrency).

Why the APScheduler settings are what they are:

- Every process must compute the same tick instants, so ticks come from the spec alone (see
  ``neoq.cron.triggers``), never from when a process started.
- A tick must never be dropped because the scheduler is busy. APScheduler's own executors drop
  a run past ``max_instances`` and past ``misfire_grace_time``, and with ``coalesce`` merge late
  runs into one. Here ``coalesce`` is off, and ``_TickExecutor`` replaces the executors: it
  accepts every run time (there is no instance limit), and hands the run times to one thread
  that stores them in order. The only lateness limit is ``CRON_GRACE``, checked by neoq, which
  is there so a process that was suspended for a day does not flood the queue when it wakes.
- A tick whose job is still running or waiting for a retry does not block the next one: each
  tick's job has its own fingerprint (the payload holds the tick time), and the store dedupes by
  ``(queue, tick)``, not by a waiting job.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

from apscheduler.executors.base import BaseExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger

from ..backends.base import Backend
from ..clock import SYSTEM_CLOCK, Clock
from ..errors import ConfigurationError, CronSpecError, DuplicateJobError, NeoqError
from .triggers import next_tick, tick_job, ticks

__all__ = ["CRON_GRACE", "CronScheduler"]

logger = logging.getLogger(__name__)

#: How late (seconds) a running process may store a tick. Ticks are normally stored within
#: milliseconds; under load, or while the store is unreachable (storing is retried), later.
#: Past this, the tick is logged and dropped rather than stored, so a process that was
#: suspended for hours does not enqueue every tick it slept through.
CRON_GRACE = 600.0

#: The first and the longest pause between attempts to store a tick while the store fails.
_RETRY_FIRST = 0.05
_RETRY_MAX = 5.0

_UTC = timezone.utc
_MICROSECOND = timedelta(microseconds=1)


class _TickExecutor(BaseExecutor):  # type: ignore[misc]
    """An APScheduler executor that tells the job which ticks are due, and never refuses one.

    APScheduler's executors call ``func(*args)`` without the run time and drop runs past
    ``max_instances`` or ``misfire_grace_time``. This one calls ``func(*args, run_times)`` on one
    thread, in submission order, so ticks are stored in order and a slow store delays ticks
    instead of dropping them.
    """

    def __init__(self) -> None:
        super().__init__()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="neoq-cron-tick")
        self._guard = threading.Lock()
        self._closed = False

    def submit(self, func: Callable[..., None], *args: Any) -> None:
        """Run ``func(*args)`` on the tick thread after what was submitted before; ignored once shut down."""
        with self._guard:
            # The scheduler thread may still submit once while shutdown() runs; the pool is gone then.
            if not self._closed:
                self._pool.submit(_logged, func, *args)

    def submit_job(self, job: Any, run_times: list[datetime]) -> None:
        self.submit(job.func, *job.args, list(run_times))

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:  # pragma: no cover - see submit_job
        self.submit_job(job, run_times)

    def shutdown(self, wait: bool = True) -> None:
        with self._guard:
            self._closed = True
        self._pool.shutdown(wait=wait)


def _logged(func: Callable[..., None], *args: Any) -> None:
    # What the tick thread runs would otherwise end in a Future nobody reads: never silently.
    try:
        func(*args)
    except BaseException:
        logger.exception("neoq cron: storing ticks failed")


class _Scheduler(BackgroundScheduler):  # type: ignore[misc]
    """APScheduler's background scheduler, its thread named like every neoq thread."""

    def _process_jobs(self) -> float | None:
        # APScheduler's loop calls this with nothing around it: an exception here (a trigger that
        # fails) would end the thread, and every schedule with it, with nothing logged. A run
        # that failed to be marked done is handed over again; the store keeps each tick once.
        try:
            result: float | None = super()._process_jobs()
        except Exception:
            logger.exception("neoq cron: the scheduler failed; it looks again in %.0fs", _RETRY_MAX)
            return _RETRY_MAX
        return result

    def start(self, *args: Any, **kwargs: Any) -> None:
        super().start(*args, **kwargs)
        # BackgroundScheduler always names its thread "APScheduler"; rename it so neoq's thread checks
        # see it. The attribute is private: if it ever moves, the name stays and stop() still joins it.
        thread = getattr(self, "_thread", None)
        if isinstance(thread, threading.Thread):
            thread.name = "neoq-cron"


class CronScheduler:
    """Fires the cron schedules of one client and stores each tick as a job, once across processes.

    Created by ``Neoq.start_cron`` with the client's backend and clock. One APScheduler
    ``BackgroundScheduler`` thread (``neoq-cron``) decides when ticks are due; one thread
    (``neoq-cron-tick``) stores them through ``backend.enqueue_tick``, retrying while the store
    fails, for up to ``grace`` seconds after the tick. ``stop()`` ends both threads; the backend
    stays open (it belongs to the client).
    """

    def __init__(self, backend: Backend, *, clock: Clock | None = None, grace: float = CRON_GRACE) -> None:
        self._backend = backend
        self._clock = clock or SYSTEM_CLOCK
        self._grace = float(grace)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._executor = _TickExecutor()
        self._scheduler = _Scheduler(
            timezone=_UTC,
            executors={"default": self._executor},
            # _TickExecutor already hands over every run time; these say the same to APScheduler, so no
            # run is merged (coalesce) or counted as missed (misfire) on its side either.
            job_defaults={"coalesce": False, "misfire_grace_time": None, "max_instances": 1_000_000},
        )
        self._started = False
        self._store_away = False
        self._schedules: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"<CronScheduler schedules={self._schedules!r}>"

    @property
    def schedules(self) -> dict[str, str]:
        """The specs by queue (a copy)."""
        return dict(self._schedules)

    def add(self, queue: str, spec: str, trigger: BaseTrigger, *, catch_up: float | None = None) -> None:
        """Start enqueueing the ticks of ``trigger`` on ``queue`` from now on.

        ``catch_up`` (seconds): first enqueue the ticks of the last ``catch_up`` seconds that
        come after the latest tick any process stored for ``queue`` (none if no tick was ever
        stored). Raises ``ConfigurationError`` for a queue that already has a schedule or after
        ``stop()``.
        """
        with self._lock:
            if self._stopping.is_set():
                raise ConfigurationError("the cron scheduler was stopped")
            if queue in self._schedules:
                raise ConfigurationError(f"queue {queue!r} already has a cron schedule")
            now = self._clock.now()
            first = next_tick(trigger, now - _MICROSECOND)  # the first tick at or after now
            if first is None:
                raise CronSpecError(f"cron spec {spec!r} has no tick after {now.isoformat()}")
            self._schedules[queue] = spec
            if catch_up is not None and catch_up > 0:
                # Queued on the tick thread ahead of the live ticks; reads the store there, not here.
                self._executor.submit(self._catch_up, queue, trigger, now, catch_up)
            if not self._started:
                self._scheduler.start()
                self._started = True
            self._scheduler.add_job(
                self._store_ticks, trigger=trigger, args=(queue,), id=queue, name=queue, next_run_time=first
            )
        logger.info("neoq cron: queue %r on %r, first tick at %s", queue, spec, first.isoformat())

    def stop(self) -> None:
        """Stop firing ticks and end the scheduler's threads. Calling it again does nothing.

        Ticks already due are still stored (once, without retries); then both threads are joined.
        """
        with self._lock:
            if self._stopping.is_set():
                return
            self._stopping.set()
            started = self._started
        if started:
            # Shuts the executor down first (joining the tick thread), then joins the scheduler thread.
            self._scheduler.shutdown(wait=True)
        else:
            self._executor.shutdown(wait=True)

    # -- on the tick thread --------------------------------------------------------------

    def _store_ticks(self, queue: str, run_times: Sequence[datetime] = ()) -> None:
        # The default only satisfies APScheduler's check of the job's arguments at add_job();
        # _TickExecutor always passes the run times.
        for tick in run_times:
            self._store_tick(queue, tick.astimezone(_UTC), self._grace)

    def _store_tick(self, queue: str, tick: datetime, give_up_after: float) -> None:
        pause = _RETRY_FIRST
        while True:
            if self._store_away and self._stopping.is_set():
                logger.error("neoq cron: tick %s of queue %r not enqueued: stopping", tick.isoformat(), queue)
                return
            late = (self._clock.now() - tick).total_seconds()
            if late > give_up_after:
                logger.error(
                    "neoq cron: tick %s of queue %r not enqueued: %.0fs late, past the limit of %.0fs",
                    tick.isoformat(),
                    queue,
                    late,
                    give_up_after,
                )
                return
            try:
                job_id = self._backend.enqueue_tick(tick_job(queue, tick), queue, tick)
            except DuplicateJobError as exc:
                logger.error("neoq cron: tick %s of queue %r not enqueued: %s", tick.isoformat(), queue, exc)
                return
            except NeoqError as exc:
                if self._stopping.is_set():
                    # One failure while stopping means the store is away: skip the remaining ticks
                    # rather than make shutdown wait for each of them to fail in turn.
                    self._store_away = True
                    logger.error(
                        "neoq cron: tick %s of queue %r not enqueued while stopping: %s", tick.isoformat(), queue, exc
                    )
                    return
                logger.warning(
                    "neoq cron: enqueueing tick %s of queue %r failed (%s); retrying in %.2fs",
                    tick.isoformat(),
                    queue,
                    exc,
                    pause,
                )
                self._stopping.wait(pause)
                pause = min(_RETRY_MAX, pause * 2)
                continue
            except BaseException:  # a backend raising what it must not: this tick is lost, not the thread
                logger.exception("neoq cron: backend failed to enqueue tick %s of queue %r", tick.isoformat(), queue)
                return
            if job_id is None:
                logger.debug("neoq cron: tick %s of queue %r was already enqueued", tick.isoformat(), queue)
            else:
                logger.debug("neoq cron: tick %s of queue %r enqueued as job %s", tick.isoformat(), queue, job_id)
            return

    def _catch_up(self, queue: str, trigger: BaseTrigger, now: datetime, window: float) -> None:
        try:
            last = self._backend.last_tick(queue)
        except NeoqError as exc:
            logger.error("neoq cron: cannot catch up queue %r: reading its last tick failed: %s", queue, exc)
            return
        if last is None:
            logger.info("neoq cron: queue %r has no earlier tick; nothing to catch up", queue)
            return
        start = max(last + _MICROSECOND, now - timedelta(seconds=window))
        missed = list(ticks(trigger, start, now))
        if missed:
            logger.warning(
                "neoq cron: queue %r catching up %d missed tick(s) from %s", queue, len(missed), missed[0].isoformat()
            )
        for tick in missed:
            if self._stopping.is_set():
                return
            self._store_tick(queue, tick, window + self._grace)
