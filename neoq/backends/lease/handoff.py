"""Jobs leased for waiting claim loops by the store call that made them due (Redis: the enqueue
of a job leases it for this client's idle loops in the same step, so a pickup takes one round
trip instead of two). Functions over a ``LeaseEngine``'s state, kept beside it (the engine module
is full)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .engine import LeaseEngine
    from .store import Leased

__all__ = ["offer", "wants"]


def wants(engine: LeaseEngine, queue: str) -> bool:
    """Whether ``queue``'s claim loops wait in ``engine`` with no job leased for them: the store
    call that makes a job due may then lease for them too, and ``offer`` what it leased."""
    mine = engine._queues.get(queue)
    return not engine._closed.is_set() and not (mine and mine.buffer) and engine._loops(queue).claiming > 0


def offer(engine: LeaseEngine, queue: str, leased: list[Leased]) -> None:
    """Jobs leased for ``queue``'s loops outside ``look`` (see ``wants``): buffered as a fetch's
    would be (renewed, given back if nobody starts them), and a waiting loop woken to take one.
    Marked short: the loop that takes one runs it at once, with no read-ahead first (idle loops
    mean no backlog; the next fetch that fills its limit turns read-aheads on again)."""
    from .engine import _LeaseQueue

    mine = engine._queues.get(queue) or engine._queues.setdefault(queue, _LeaseQueue())
    claims = engine._claims(queue, leased)
    if claims and engine._keep(mine, claims, True):
        engine._loops(queue).signal()
