"""``Attempt``: one running attempt, and the ``JobContext`` its handler sees (one object for both)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from ..backends.base import Claim
from ..context import JobContext, _LazyDeadline
from ..handler import Handler

__all__ = ["Attempt"]


class Attempt(JobContext):
    """One running attempt, and the ``JobContext`` its handler sees (one object for both).

    Whichever of the handler's return, the watchdog, a cancellation or a forced shutdown comes
    first decides the outcome: ``take()`` returns True to exactly one caller, the one that
    settles the attempt; the others change nothing.
    """

    __slots__ = ("_by_deadline", "_claim", "_handler", "_progress", "_started", "_token", "_writer")

    def __init__(
        self,
        claim: Claim,
        handler: Handler,
        deadline: datetime | _LazyDeadline | None,
        ends_at: float,
        started: float,
        by_deadline: bool,
        monotonic: Callable[[], float],
        now: Callable[[], datetime] | None,
        writer: Callable[[Attempt, float, str | None], None],
    ) -> None:
        # JobContext's fields, set here rather than through its __init__: this runs once per job.
        self.job = claim.job
        self._deadline = deadline
        self._now = now
        self._cancelled = None
        self.transaction = claim.transaction
        self._ends_at = ends_at
        self._monotonic = monotonic
        self._claim = claim
        self._handler = handler
        self._started = started
        self._by_deadline = by_deadline
        # One item that exactly one ``take`` pops: ``list.pop`` is atomic, and a list is cheaper
        # to make per attempt than a lock.
        self._token: list[bool] = [True]
        self._writer = writer  # ``ProgressWriter.report``
        #: ``[written at, report not written yet, being written]`` once the handler reports (``ProgressWriter``).
        self._progress: list[Any] | None = None

    def _report(self, fraction: float, note: str | None) -> None:
        self._writer(self, fraction, note)

    def take(self) -> bool:
        try:
            return self._token.pop()
        except IndexError:
            return False

    @property
    def taken(self) -> bool:
        return not self._token
