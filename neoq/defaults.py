"""Every default neoq uses, named once.

The environment is never read here: ``neoq.new()`` and the command line read ``NEOQ_URL``.
"""

from __future__ import annotations

from datetime import datetime, timezone

#: How many jobs of one queue a client runs at once when a ``Handler`` does not say.
DEFAULT_CONCURRENCY = 4

#: The longest one attempt may run, in seconds, when a ``Handler`` does not say.
DEFAULT_TIMEOUT = 30.0

#: The longest handler timeout and retry delay, in seconds (100 years): a longer ``Handler``
#: timeout is refused, a longer backoff result is clamped to it. Beyond it lies no useful time,
#: only overflows (``datetime``, ``threading`` waits) and dates the stores cannot hold.
MAX_DURATION = 100 * 365.25 * 86400.0

#: How many times a failed job is retried when neither the job nor its handler says.
DEFAULT_MAX_RETRIES = 25

#: How long ``shutdown()`` waits for running attempts, in seconds.
DEFAULT_SHUTDOWN_TIMEOUT = 30.0

#: PostgreSQL ``idle_in_transaction_session_timeout`` of worker transactions, in seconds.
DEFAULT_IDLE_TRANSACTION_TIMEOUT = 60.0

#: How long connecting to a store may take before ``BackendConnectionError``, in seconds.
DEFAULT_CONNECT_TIMEOUT = 10.0

#: How long a lease of the PostgreSQL lease mode lasts, in seconds; running jobs renew it.
DEFAULT_LEASE_DURATION = 30.0

#: The safety-net poll of backends that are woken by notifications, in seconds.
DEFAULT_POLL_INTERVAL = 2.0

#: The URL used when neither ``url`` nor ``backend`` is given and ``NEOQ_URL`` is unset.
DEFAULT_URL = "memory://"

#: The longest a queue name may be, in characters.
MAX_QUEUE_NAME_LENGTH = 128

#: The default page size of ``list_jobs``.
DEFAULT_LIST_LIMIT = 100

#: How deeply payload objects and arrays may nest.
MAX_PAYLOAD_DEPTH = 200

#: The longest a job's own ``fingerprint`` may be, in characters.
MAX_FINGERPRINT_LENGTH = 256

#: The largest ``max_retries`` a job may set.
MAX_JOB_RETRIES = 1_000_000

#: The lowest and highest ``Job.priority`` (django.tasks' range); higher runs first.
MIN_PRIORITY = -100
MAX_PRIORITY = 100

#: The most times one job may ``raise neoq.Snooze`` (in all); the next snooze fails it (the runtime's cap).
MAX_SNOOZES = 100

#: The earliest and latest ``run_after`` and ``deadline`` a job may set (both allowed): every store
#: can hold the times between them, and compute with them, in any session TimeZone.
EARLIEST_JOB_TIME = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST_JOB_TIME = datetime(9000, 1, 1, tzinfo=timezone.utc)

#: How long ``PROCESSED`` and ``CANCELLED`` jobs are kept before workers delete them, in seconds (7 days).
DEFAULT_RETENTION_PROCESSED = 7 * 24 * 3600.0

#: How long ``FAILED`` jobs are kept before workers delete them, in seconds (30 days).
DEFAULT_RETENTION_FAILED = 30 * 24 * 3600.0

#: The longest pause between two pruning rounds of a worker, in seconds (shorter for short retentions).
DEFAULT_PRUNE_INTERVAL = 60.0

#: The most jobs one pruning statement deletes, so it never holds many rows at once.
DEFAULT_PRUNE_BATCH = 500

#: Cron tick records are kept at least this long (seconds), however short the job retention:
#: a tick stored late (up to the scheduler's grace time) must still find its record.
MIN_TICK_RETENTION = 86400.0

#: The longest JSON text a handler's return value may take, in characters (1 MiB): a larger
#: result ends the job ``FAILED`` with an ``InvalidJobError`` naming the size.
MAX_RESULT_SIZE = 1024 * 1024

#: The longest ``Job.traceback`` kept, in characters; a longer one keeps its start and its end.
MAX_TRACEBACK_LENGTH = 64 * 1024

#: The longest note of ``job_context().progress()``, in characters.
MAX_PROGRESS_NOTE_LENGTH = 1000

#: The shortest time between two progress writes of one attempt, in seconds: a handler reporting
#: in a tight loop costs the store at most four writes a second, and its last report is written
#: within this time.
PROGRESS_INTERVAL = 0.25

#: Seconds between a worker process's beats in the store's worker registry (capability ``"workers"``);
#: one that has not beaten for ``WORKER_TTL`` seconds is forgotten.
DEFAULT_WORKER_HEARTBEAT = 5.0
#: Seconds after its last beat at which a worker process is taken for dead and forgotten.
WORKER_TTL = 30.0
