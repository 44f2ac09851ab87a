"""Helpers for testing code that uses neoq, which the behaviour suite uses too."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

__all__ = ["PATIENCE", "neoq_threads", "no_backoff", "utc_now", "wait_for"]

#: How long the suite waits for something that should happen within milliseconds. Generous:
#: the suite runs on small shared machines; the timing promises themselves are checked separately.
PATIENCE = 10.0


def wait_for(predicate: Callable[[], Any], timeout: float = PATIENCE, interval: float = 0.002) -> Any:
    """Poll ``predicate`` until it returns something truthy and return that; fail after ``timeout``."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= end:
            raise AssertionError(f"condition not met within {timeout}s: {getattr(predicate, '__name__', predicate)}")
        time.sleep(interval)


def neoq_threads() -> list[str]:
    """Return the names of live threads that neoq started (their names start with ``neoq``)."""
    return [t.name for t in threading.enumerate() if t.name.startswith("neoq") and t.is_alive()]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def no_backoff(retries: int) -> float:
    return 0.0
