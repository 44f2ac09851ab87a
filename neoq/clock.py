"""The one place that reads real time.

Everything else takes ``now`` as an argument or asks a ``Clock``, so tests can drive time.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

__all__ = ["SYSTEM_CLOCK", "Clock"]


class Clock:
    """Reads wall-clock time (aware UTC) and monotonic time (seconds)."""

    def now(self) -> datetime:
        """Return the current time as an aware UTC datetime."""
        return datetime.now(timezone.utc)

    def monotonic(self) -> float:
        """Return a monotonic time in seconds, for measuring intervals."""
        return time.monotonic()


#: The clock every client uses unless it is given another.
SYSTEM_CLOCK = Clock()
