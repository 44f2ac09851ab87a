"""The store's side of the waiting seam: the answer to a look, and the signals a store sends.

A backend never waits for work. Asked to look at a queue, it answers at once with a ``Look``; when
something may have become due (a notification from another process, an enqueue of its own, a
reconnect), it tells its client's ``Signals``. The runtime's ``neoq.waiting.QueueWaiting`` decides
who looks when.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

__all__ = ["Look", "Signals"]

C = TypeVar("C")


@dataclass(frozen=True, slots=True)
class Look(Generic[C]):
    """A store's answer to one non-blocking look at a queue.

    An answer is *complete* when it has no claim, or a claim with ``more=False``: then ``due_in``
    and ``held`` describe the rest of the queue, and the answer is kept until something changes.
    A claim with ``more=True`` (the default: the store does not know better) passes the turn to
    the next waiting loop at once, whose look completes the picture.
    """

    #: The job claimed, or ``None``: nothing was due (or nothing could be taken).
    claim: C | None = None
    #: Seconds from the look's start until the queue's next job not yet due is due; ``None``
    #: when nothing is scheduled. Seconds, not a time: the store measures it on its own clock.
    #: Read only from a complete answer.
    due_in: float | None = None
    #: Due jobs exist that others hold (look again within ``held_poll``): a dead worker's job is
    #: freed without a signal. Read only from a complete answer.
    held: bool = False
    #: With a claim: other jobs may be due (held or not), or the store cannot tell. ``False``
    #: says nothing else is due, and ``due_in`` is then the next due time.
    more: bool = True


class Signals(Protocol):
    """What a store is given to tell its client's waiting claim loops that work may be due
    (``Waiting`` is one): the narrow callback a backend holds instead of the runtime."""

    def signal(self, queue: str | None = None) -> None:
        """Something of ``queue`` (every queue: ``None``) may be due now: have a loop look."""

    def due(self, queue: str, delay: float) -> None:
        """A job of ``queue``, visible to looks now, comes due in ``delay`` seconds."""
