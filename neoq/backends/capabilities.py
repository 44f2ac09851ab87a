"""The names of what a store may offer beyond the core contract: ``Backend.capabilities``.

A backend declares the capabilities it has *as configured* (a PostgreSQL backend with
``listen=False`` does not notify). The runtime, the CLI, the integrations and the test suites ask
for a capability, never for a backend's class or URL scheme. A handler mode may use less of the
store than it offers: PostgreSQL's lease mode gives handlers no transaction.

The names are plain strings, so a third-party backend may declare more of its own; neoq reads
only the ones below, the flow-control features (docs/flow-control.md) among them.
"""

from __future__ import annotations

__all__ = [
    "DASHBOARD",
    "ENQUEUE_IN_TRANSACTION",
    "FLOW_CONTROL",
    "GLOBAL_LIMIT",
    "KNOWN",
    "NOTIFY",
    "PAUSE",
    "PRIORITY",
    "RATE_LIMIT",
    "SHARED",
    "SNOOZE",
    "TRANSACTION",
    "UNIQUE_FOR",
    "WORKERS",
]

#: Handlers in the backend's default mode get ``neoq.job_context().transaction``: a DB-API
#: connection whose transaction holds the job, and commits with its outcome.
TRANSACTION = "transaction"
#: ``enqueue(job, connection=conn)`` inserts through the caller's own DB-API connection and
#: transaction: the job exists, and workers are woken, only if that transaction commits.
ENQUEUE_IN_TRANSACTION = "enqueue_in_transaction"
#: Several processes share the store (on one host for a file, on any number of machines for a
#: server): a job enqueued in one is seen and run by the others, cancel reaches them, cron ticks
#: are stored once across them. Without it the store is private to one client.
SHARED = "shared"
#: Waiting claims are woken by the store when a job comes (a notification, or in memory the
#: enqueue itself), not only by polling at an interval.
NOTIFY = "notify"


# -- flow control (docs/flow-control.md) ---------------------------------------------------------

#: ``Job(priority=...)`` is honoured: among a queue's due jobs the claim order is (priority
#: descending, ``run_after``, enqueue order). Without it a job with a priority other than 0 is refused.
PRIORITY = "priority"
#: ``pause_queue``/``resume_queue``/``paused_queues``: a paused queue's jobs are started by no
#: process sharing the store until it is resumed.
PAUSE = "pause"
#: ``raise neoq.Snooze(delay)``: the job is put back to run after ``delay``, its retries untouched.
SNOOZE = "snooze"
#: ``Job(unique_for=...)``: an enqueue within that time of the last one with the same queue and
#: fingerprint, whatever became of it, raises ``DuplicateJobError`` (race-free across processes).
UNIQUE_FOR = "unique_for"
#: ``Handler(global_limit=N)``: at most N jobs of the queue run at once across every process.
GLOBAL_LIMIT = "global_limit"
#: ``Handler(rate_limit=RateLimit(...))``: a sliding window of starts across every process.
RATE_LIMIT = "rate_limit"

#: The flow-control capabilities, all of them.
FLOW_CONTROL: frozenset[str] = frozenset({PRIORITY, PAUSE, SNOOZE, UNIQUE_FOR, GLOBAL_LIMIT, RATE_LIMIT})

#: The backend is a ``neoq.backends.search.JobSearch``: filtered job search paged by key,
#: per-minute activity, the oldest waiting job, bulk retry and cancel (what ``neoq.dashboard`` reads).
DASHBOARD = "dashboard"
#: The backend is a ``neoq.backends.search.WorkerRegistry``: each worker process announces itself,
#: beats, and is forgotten when it stops or dies; the runtime announces its workers there.
WORKERS = "workers"

#: Every capability name neoq itself reads.
KNOWN: frozenset[str] = (
    frozenset({TRANSACTION, ENQUEUE_IN_TRANSACTION, SHARED, NOTIFY, DASHBOARD, WORKERS}) | FLOW_CONTROL
)
