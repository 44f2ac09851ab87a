"""Leases for flow control (docs/flow-control.md): giving leased jobs back unstarted (a paused
queue's jobs leased ahead, a claim a rate limit holds back), and the outcomes not written yet that
a global limit need not count. Functions over a ``LeaseEngine``'s state, kept beside it (the
engine module is full)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..base import Claim
    from .engine import LeaseEngine
    from .store import LeaseToken

__all__ = ["give_back_queue", "take_back", "unwritten"]


def take_back(engine: LeaseEngine, claim: Claim) -> LeaseToken | None:
    """End ``claim`` unstarted, with no outcome: its lease, for the store to put back (None: settled)."""
    lease: LeaseToken = claim.token
    with engine._lock:
        was, lease.settled = lease.settled, True
        engine._leases.pop(lease.job_id, None)
    return None if was else lease


def give_back_queue(engine: LeaseEngine, queue: str) -> None:
    """Give back the jobs leased ahead for ``queue`` that no loop started (its queue was paused)."""
    taken = []
    with contextlib.suppress(IndexError):  # a claim loop may empty the buffer meanwhile
        while (mine := engine._queues.get(queue)) is not None and mine.buffer:
            taken.append(take_back(engine, mine.buffer.popleft()))
    returned = [lease for lease in taken if lease is not None]
    if returned:
        engine._give_back(returned)


def unwritten(engine: LeaseEngine, queue: str) -> list[Any]:
    """The keys of ``queue``'s jobs whose outcomes wait for the flusher (their handlers returned).

    A batch the flusher is writing is left out: those still count as leases until written.
    """
    with engine._lock:  # the flusher's lock too
        return [pending.lease.job_id for pending in engine._flusher._pending if pending.lease.queue == queue]
