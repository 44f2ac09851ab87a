"""neoq: background jobs for Python, in the datastore your app already has.

Thread-based and synchronous::

    import neoq

    with neoq.new() as nq:                        # in-memory; or neoq.new("postgresql://...")
        nq.start("hello", lambda job: print(job.payload["message"]))
        nq.enqueue(neoq.Job(queue="hello", payload={"message": "hello world"}))
"""

from __future__ import annotations

from . import backends
from .app import Neoq, new
from .backoff import default_backoff, exponential_backoff
from .context import JobContext, current_job, job_context
from .defaults import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_RETRIES,
    DEFAULT_SHUTDOWN_TIMEOUT,
    DEFAULT_TIMEOUT,
)
from .errors import (
    BackendConnectionError,
    BackendError,
    ConfigurationError,
    CronSpecError,
    DeadlineExceededError,
    DuplicateJobError,
    InvalidJobError,
    InvalidProgressError,
    JobNotFoundError,
    JobTimeoutError,
    NeoqError,
)
from .flow import RateLimit, Snooze
from .handler import Handler
from .hooks import JobEvent
from .job import Job, JobStatus

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_SHUTDOWN_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "BackendConnectionError",
    "BackendError",
    "ConfigurationError",
    "CronSpecError",
    "DeadlineExceededError",
    "DuplicateJobError",
    "Handler",
    "InvalidJobError",
    "InvalidProgressError",
    "Job",
    "JobContext",
    "JobEvent",
    "JobNotFoundError",
    "JobStatus",
    "JobTimeoutError",
    "Neoq",
    "NeoqError",
    "RateLimit",
    "Snooze",
    "__version__",
    "backends",
    "current_job",
    "default_backoff",
    "exponential_backoff",
    "job_context",
    "new",
]
