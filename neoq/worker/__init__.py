"""The worker runtime, written once for every backend; one module per responsibility:

- ``loops``: ``Worker``, the claim loops of every started queue (claim a due job, run it, again),
  and draining and stopping them.
- ``runner``: ``AttemptRunner``, one attempt from its claim to its settle (the handler, the
  outcome, a retry's backoff), and the ends that come from outside: a timeout or deadline, a
  cancellation, a forced shutdown.
- ``attempt``: ``Attempt``, a running attempt and the ``JobContext`` its handler sees.
- ``watchdog``: ``Watchdog``, the one thread that ends attempts at their end time.
- ``progress``: ``ProgressWriter``, the one thread that writes handlers' progress reports, rate-limited.
- ``report``: how an attempt ended, told to the client's log and hooks.
- ``executor``: ``LoopExecutor``, a queue's thread pool whose threads do not hold the process at exit.
"""

from __future__ import annotations

from .executor import claim_loop_threads
from .loops import Worker
from .runner import RecoveryCallback

__all__ = ["RecoveryCallback", "Worker", "claim_loop_threads"]
