"""Every exception neoq raises to users.

The tree::

    NeoqError
    ├── ConfigurationError          bad settings: new(), Handler(), start(), start_cron()
    │   └── CronSpecError           a cron spec that cannot be parsed
    ├── InvalidJobError             a job that cannot be stored (raised before anything is stored)
    ├── InvalidProgressError        job_context().progress() given a fraction or note it cannot keep
    ├── DuplicateJobError           a job with the same queue and fingerprint is still NEW
    ├── JobNotFoundError            no job has that id
    ├── JobTimeoutError             an attempt ran past its handler's timeout
    ├── DeadlineExceededError       a job ran, or would have started, past its deadline
    └── BackendError                the store failed; driver errors are wrapped in it
        └── BackendConnectionError  the store cannot be reached
"""

from __future__ import annotations

__all__ = [
    "BackendConnectionError",
    "BackendError",
    "ConfigurationError",
    "CronSpecError",
    "DeadlineExceededError",
    "DuplicateJobError",
    "InvalidJobError",
    "InvalidProgressError",
    "JobNotFoundError",
    "JobTimeoutError",
    "NeoqError",
]


class NeoqError(Exception):
    """Root of every error neoq raises."""


class ConfigurationError(NeoqError):
    """A setting is invalid; the message says which one and what is accepted."""


class CronSpecError(ConfigurationError):
    """A cron spec cannot be parsed; the message names what is wrong."""


class InvalidJobError(NeoqError):
    """A job cannot be stored as given. Nothing was stored."""


class InvalidProgressError(NeoqError, ValueError):
    """``job_context().progress()`` was given a fraction outside 0.0-1.0 or a note that is too long."""


class DuplicateJobError(NeoqError):
    """A job with the same queue and fingerprint is still waiting or running.

    ``job_id`` is the id of the existing job where the backend can tell, else ``None``.
    """

    def __init__(self, message: str, job_id: str | None = None) -> None:
        super().__init__(message)
        #: The id of the job that holds the fingerprint, where known.
        self.job_id = job_id


class JobNotFoundError(NeoqError):
    """No job has the given id."""


class JobTimeoutError(NeoqError):
    """An attempt ran longer than its handler's ``timeout``."""


class DeadlineExceededError(NeoqError):
    """A job's ``deadline`` passed before it could start or finish."""


class BackendError(NeoqError):
    """The backend's store failed. The driver's exception is the ``__cause__``."""


class BackendConnectionError(BackendError):
    """The backend's store cannot be reached."""
