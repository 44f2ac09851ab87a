"""An application module for ``neoq worker``: a client with its handlers registered.

Run it (from the repository root) with::

    NEOQ_URL=postgresql://app@localhost/app neoq worker examples.worker_app:nq

and feed it from another terminal::

    NEOQ_URL=postgresql://app@localhost/app neoq enqueue emails '{"to": "ada@example.com"}'

Without ``NEOQ_URL`` the client uses a private in-memory store, which only this process sees, and
``neoq worker`` refuses to run on it (``--url memory://`` runs it anyway, for a look).
"""

from __future__ import annotations

import logging

import neoq

logger = logging.getLogger(__name__)

# No URL here: neoq.new() reads NEOQ_URL, which `neoq --url ... worker` sets too.
nq = neoq.new(shutdown_timeout=30, retention_processed=7 * 24 * 3600, retention_failed=30 * 24 * 3600)


@nq.handler("emails", concurrency=4, timeout=20, max_retries=5)
def send_email(job: neoq.Job) -> None:
    """Pretend to send an email; stop early when neoq asks (timeout, cancellation, shutdown)."""
    context = neoq.job_context()
    if context is not None and context.cancelled.wait(0.1):
        return
    logger.info("sent an email to %s", job.payload.get("to"))


@nq.on("finally_failed")
def alert(event: neoq.JobEvent) -> None:
    """Report jobs that will not be retried again (plug in your error reporter here)."""
    logger.error("job %s of queue %r gave up: %s", event.job.id, event.job.queue, event.job.error)
