"""Waiting for work, written once for every store: see ``neoq.waiting.policy`` and docs/waiting.md.

A backend answers a non-blocking look (``Look``: a claim, or when the next job is due) and pushes
signals (``Waiting.signal``, ``Waiting.due``); the runtime's claim loops call
``Waiting.queue(name).claim(look, timeout)``, which decides who looks when. ``FakeClock`` drives it
(and anything else that waits through a clock) in tests, without real sleeps.
"""

from __future__ import annotations

from .clocks import FakeClock
from .look import Look, Signals
from .policy import DUE_SLACK, HELD_POLL, QueueWaiting
from .registry import Waiting

__all__ = ["DUE_SLACK", "HELD_POLL", "FakeClock", "Look", "QueueWaiting", "Signals", "Waiting"]
