"""Periodic jobs: cron specs, the cron queue names, and the scheduler that enqueues ticks.

One module per step, none of them knowing the client:

- ``spec``: reads a spec (crontab fields, ``@`` shortcuts, ``@every``, the timezone) and says
  what is wrong with it; no APScheduler.
- ``triggers``: builds APScheduler's trigger from a spec, and the tick times and tick jobs as
  pure functions of time.
- ``naming``: the queue a schedule uses when ``start_cron`` is given no ``queue=``.
- ``scheduler``: ``CronScheduler``, the threads that store each tick through
  ``Backend.enqueue_tick``, exactly once across processes.

Only this package imports APScheduler (``triggers`` and ``scheduler``).
"""

from __future__ import annotations

from .naming import CRON_QUEUE_PREFIX, cron_queue_name
from .scheduler import CRON_GRACE, CronScheduler
from .spec import SHORTCUTS as SHORTCUTS
from .triggers import next_tick, parse_spec, tick_job, ticks

__all__ = [
    "CRON_GRACE",
    "CRON_QUEUE_PREFIX",
    "CronScheduler",
    "cron_queue_name",
    "next_tick",
    "parse_spec",
    "tick_job",
    "ticks",
]
