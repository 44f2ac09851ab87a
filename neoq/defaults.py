"""Every default neoq uses, named once.

The environment is never read here: ``neoq.new()`` and the command line read ``NEOQ_URL``.
"""

from __future__ import annotations

#: How many jobs of one queue a client runs at once when a ``Handler`` does not say.
DEFAULT_CONCURRENCY = 4

#: The longest one attempt may run, in seconds, when a ``Handler`` does not say.
DEFAULT_TIMEOUT = 30.0

#: How many times a failed job is retried when neither the job nor its handler says.
DEFAULT_MAX_RETRIES = 25

#: How long ``shutdown()`` waits for running attempts, in seconds.
DEFAULT_SHUTDOWN_TIMEOUT = 30.0

#: PostgreSQL ``idle_in_transaction_session_timeout`` of worker transactions, in seconds.
DEFAULT_IDLE_TRANSACTION_TIMEOUT = 60.0

#: How long connecting to a store may take before ``BackendConnectionError``, in seconds.
DEFAULT_CONNECT_TIMEOUT = 10.0

#: The safety-net poll of backends that are woken by notifications, in seconds.
DEFAULT_POLL_INTERVAL = 2.0

#: The URL used when neither ``url`` nor ``backend`` is given and ``NEOQ_URL`` is unset.
DEFAULT_URL = "memory://"

#: The longest a queue name may be, in characters.
MAX_QUEUE_NAME_LENGTH = 128

#: The default page size of ``list_jobs``.
DEFAULT_LIST_LIMIT = 100
