"""The names of what a store may offer beyond the core contract: ``Backend.capabilities``.

A backend declares the capabilities it has *as configured* (a PostgreSQL backend with
``listen=False`` does not notify). The runtime, the CLI, the integrations and the test suites ask
for a capability, never for a backend's class or URL scheme. A handler mode may use less of the
store than it offers: PostgreSQL's lease mode gives handlers no transaction.

The names are plain strings, so a third-party backend may declare more of its own; neoq reads
only the ones below. The flow-control features (priorities, global limits, rate limits, pauses)
will get names of their own here when they come.
"""

from __future__ import annotations

__all__ = ["DASHBOARD", "ENQUEUE_IN_TRANSACTION", "KNOWN", "NOTIFY", "SHARED", "TRANSACTION", "WORKERS"]

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

#: The backend is a ``neoq.backends.search.JobSearch``: filtered job search paged by key,
#: per-minute activity, the oldest waiting job, bulk retry and cancel (what ``neoq.dashboard`` reads).
DASHBOARD = "dashboard"
#: The backend is a ``neoq.backends.search.WorkerRegistry``: each worker process announces itself,
#: beats, and is forgotten when it stops or dies; the runtime announces its workers there.
WORKERS = "workers"

#: Every capability name neoq itself reads.
KNOWN: frozenset[str] = frozenset({TRANSACTION, ENQUEUE_IN_TRANSACTION, SHARED, NOTIFY, DASHBOARD, WORKERS})
