"""``report``: tell the client's log and hooks how an attempt ended."""

from __future__ import annotations

import logging
from typing import Any

from ..backends.base import Outcome
from ..job import Job, JobStatus

__all__ = ["report"]


def report(
    log: logging.Logger, events: Any, job: Job, outcome: Outcome, duration: float, exc: BaseException | None
) -> None:
    """Log the settled ``outcome`` of ``job``'s attempt on ``log`` and pass it to the ``events`` hooks.

    A processed job is logged at INFO (nothing is built when INFO is off), a retry or a
    shutdown's put-back at WARNING, a final failure at ERROR, a cancellation at INFO.
    """
    if outcome.status is not JobStatus.PROCESSED or log.isEnabledFor(logging.INFO):
        _log(log, job, outcome, duration * 1000.0, exc)
    if events is not None and events.active:
        events.settled(job, outcome, duration, exc)


def _log(log: logging.Logger, job: Job, outcome: Outcome, ms: float, exc: BaseException | None) -> None:
    status = outcome.status
    # The same facts as fields of the record, for structured (e.g. JSON) log formatters.
    fields = {"job_id": job.id, "queue": job.queue, "attempt": job.attempts, "duration_ms": round(ms, 1)}
    if status is JobStatus.PROCESSED:
        log.info(
            "neoq: job %s queue=%r attempt=%d processed in %.1fms",
            job.id,
            job.queue,
            job.attempts,
            ms,
            extra={**fields, "outcome": "processed"},
        )
    elif status is JobStatus.NEW and outcome.snoozed:
        log.info(
            "neoq: job %s queue=%r attempt=%d snoozed after %.1fms until %s",
            job.id,
            job.queue,
            job.attempts,
            ms,
            outcome.run_after.isoformat() if outcome.run_after else "now",
            extra={**fields, "outcome": "snoozed"},
        )
    elif status is JobStatus.NEW and exc is None:
        # Only a shutdown puts an attempt back without a failure: the job runs again later.
        log.warning(
            "neoq: job %s queue=%r attempt=%d interrupted by shutdown after %.1fms; it will run again",
            job.id,
            job.queue,
            job.attempts,
            ms,
            extra={**fields, "outcome": "interrupted"},
        )
    elif status is JobStatus.NEW:
        log.warning(
            "neoq: job %s queue=%r attempt=%d failed in %.1fms, retry %d at %s: %s",
            job.id,
            job.queue,
            job.attempts,
            ms,
            outcome.retries,
            outcome.run_after.isoformat() if outcome.run_after else "now",
            outcome.error,
            extra={**fields, "outcome": "retry", "error": outcome.error},
        )
    elif status is JobStatus.FAILED:
        log.error(
            "neoq: job %s queue=%r attempt=%d failed for good after %.1fms: %s",
            job.id,
            job.queue,
            job.attempts,
            ms,
            outcome.error,
            extra={**fields, "outcome": "failed", "error": outcome.error},
        )
    else:
        log.info(
            "neoq: job %s queue=%r attempt=%d cancelled after %.1fms",
            job.id,
            job.queue,
            job.attempts,
            ms,
            extra={**fields, "outcome": "cancelled"},
        )
