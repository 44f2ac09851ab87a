"""Leases for stores that cannot hold a transaction across a handler: the engine
(``engine.LeaseEngine``; its module docstring says what a store implements to get leases) over a
small store protocol (``store.LeaseStore``)."""

from __future__ import annotations

from .engine import LeaseEngine
from .heartbeat import heartbeat_interval
from .store import Leased, LeaseHolder, LeaseStore, LeaseToken, Loops, Lost, Settlement

__all__ = [
    "LeaseEngine",
    "LeaseHolder",
    "LeaseStore",
    "LeaseToken",
    "Leased",
    "Loops",
    "Lost",
    "Settlement",
    "heartbeat_interval",
]
