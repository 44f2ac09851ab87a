"""The store's side of the waiting seam: the answer to a look, and the signals a store sends.

A backend never waits for work. Asked to look at a queue, it answers at once with a ``Look``; when
something may have become due (a notification from another process, an enqueue of its own, a
reconnect), it tells its client's ``Signals``. The runtime's ``neoq.waiting.QueueWaiting`` decides
who looks when.
"""

from __future__ import annotations

from typing import Final, Generic, Protocol, TypeVar

__all__ = ["Look", "Signals"]

C = TypeVar("C")


class Look(Generic[C]):
    """A store's answer to one non-blocking look at a queue; never changed once built.

    An answer is *complete* when it has no claim, or a claim with ``more=False``: then ``due_in``
    and ``held`` describe the rest of the queue, and the answer is kept until something changes.
    A claim with ``more=True`` (the default: the store does not know better) passes the turn to
    the next waiting loop at once, whose look completes the picture.

    A plain class with ``__slots__`` and ``Final`` fields rather than a frozen dataclass: every
    store builds one per look, and a frozen dataclass's ``__init__`` costs twice as much.
    """

    __slots__ = ("claim", "due_in", "held", "more")

    def __init__(self, claim: C | None = None, due_in: float | None = None, held: bool = False, more: bool = True):
        #: The job claimed, or ``None``: nothing was due (or nothing could be taken).
        self.claim: Final[C | None] = claim
        #: Seconds from the look's start until the queue's next job not yet due is due; ``None``
        #: when nothing is scheduled. Seconds, not a time: the store measures it on its own clock.
        #: Read only from a complete answer.
        self.due_in: Final[float | None] = due_in
        #: Due jobs exist that others hold (look again within ``held_poll``): a dead worker's job is
        #: freed without a signal. Read only from a complete answer.
        self.held: Final[bool] = held
        #: With a claim: other jobs may be due (held or not), or the store cannot tell. ``False``
        #: says nothing else is due, and ``due_in`` is then the next due time.
        self.more: Final[bool] = more

    def _fields(self) -> tuple[C | None, float | None, bool, bool]:
        return (self.claim, self.due_in, self.held, self.more)

    def __repr__(self) -> str:
        return f"Look(claim={self.claim!r}, due_in={self.due_in!r}, held={self.held!r}, more={self.more!r})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())


class Signals(Protocol):
    """What a store is given to tell its client's waiting claim loops that work may be due
    (``Waiting`` is one): the narrow callback a backend holds instead of the runtime."""

    def signal(self, queue: str | None = None) -> None:
        """Something of ``queue`` (every queue: ``None``) may be due now: have a loop look."""

    def due(self, queue: str, delay: float) -> None:
        """A job of ``queue``, visible to looks now, comes due in ``delay`` seconds."""
