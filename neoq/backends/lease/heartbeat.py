"""The lease engine's heartbeat: one thread per engine renews every lease it holds, each interval.

A lease lives as long as its process renews it, however long the handler runs. The same renewal
reports the leases this client lost (a cancelled job's among them), and gives back buffered jobs
nobody started (``LeaseEngine._heartbeat``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ...errors import NeoqError

__all__ = ["heartbeat_interval", "start_heartbeat"]

logger = logging.getLogger("neoq.backends.lease")

#: The longest pause between two heartbeats (seconds): it also bounds how long a cancellation of a
#: running job takes to reach its handler, since in this mode nothing of the job is held.
HEARTBEAT_MAX = 0.5


def heartbeat_interval(lease: float) -> float:
    """Seconds between heartbeats for a lease of ``lease`` seconds: a third of it, at most 0.5 s."""
    return max(0.01, min(HEARTBEAT_MAX, lease / 3.0))


def start_heartbeat(interval: float, beat: Callable[[], None], closed: threading.Event) -> threading.Thread:
    """Start the thread that calls ``beat()`` every ``interval`` seconds until ``closed`` is set."""

    def run() -> None:
        while not closed.wait(interval):
            try:
                beat()
            except NeoqError as exc:
                # The leases run out if this goes on; their jobs then run again elsewhere.
                logger.warning("neoq: renewing leases failed (%s); trying again in %.2fs", exc, interval)
            except Exception:  # pragma: no cover - keep renewing whatever happens
                logger.exception("neoq: the lease heartbeat failed")

    thread = threading.Thread(target=run, name="neoq-lease-heartbeat", daemon=True)
    thread.start()
    return thread
