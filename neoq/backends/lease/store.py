"""The records the lease engine and its store trade, and ``LeaseStore``: what a store implements.

``Loops`` is how the engine sees a queue's claim loops. The contract of each call of a
``LeaseStore`` is in the docstring of ``neoq.backends.lease.engine`` ("What a store
implements to get leases").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from ...job import Job
from ...waiting import Look
from ..base import Claim, Outcome

__all__ = ["LeaseHolder", "LeaseStore", "LeaseToken", "Leased", "Loops", "Lost", "Settlement"]

#: One job ``LeaseStore.fetch`` leased: ``(job, key, token, due_at, cancel_requested)``.
Leased = tuple[Job, Any, int, datetime, bool]

#: One lease ``LeaseStore.renew`` found lost: ``(key, the job's status or None)``.
Lost = tuple[Any, str | None]


class LeaseHolder(Protocol):
    """What made a leased claim and settles it (``LeaseEngine``): a backend hands it the claim."""

    def settle(self, claim: Claim, outcome: Outcome) -> None: ...
    def progress(self, claim: Claim, fraction: float, note: str | None) -> None: ...
    def settle_then_claim(self, claim: Claim, outcome: Outcome, queue: str) -> Claim | None: ...
    def release(self, claim: Claim) -> None: ...


@dataclass(eq=False)
class LeaseToken:
    """``Claim.token`` of a leased claim: which lease the claim holds."""

    #: The engine that made the claim (it settles it, even after the backend reopened).
    engine: LeaseHolder = field(repr=False)
    #: The store's key of the job (PostgreSQL: the row id, an int).
    job_id: Any
    queue: str
    #: The fencing token: the job's token when this claim leased it.
    token: int
    #: When the job was due before it was leased (a finished job gets it back).
    due_at: datetime
    #: Set once by ``settle``; later calls change nothing.
    settled: bool = False
    #: Set when the heartbeat found the lease gone.
    lost: bool = False
    #: When the claim was made (monotonic): a buffered claim left unstarted too long is put back.
    leased_at: float = 0.0


class Settlement:
    """One outcome on its way to the store: the lease it ends and the outcome."""

    __slots__ = ("lease", "outcome")

    def __init__(self, lease: LeaseToken, outcome: Outcome) -> None:
        self.lease = lease
        self.outcome = outcome


class LeaseStore(Protocol):
    """The store's side of the lease engine (see the module docstring for each call's contract)."""

    def fetch(self, queue: str, limit: int, lease: float, owner: str) -> tuple[list[Leased], float | None, bool]:
        """Lease up to ``limit`` due jobs of ``queue``; or say when the next comes due."""
        ...

    def settle_many(self, batch: list[Settlement]) -> set[Any]:
        """Write ``batch``'s outcomes, fenced; return the keys written."""
        ...

    def renew(self, leases: list[LeaseToken], lease: float) -> list[Lost]:
        """Renew ``leases`` for ``lease`` seconds; return the ones lost, with their job's status."""
        ...

    def give_back(self, leases: list[LeaseToken]) -> None:
        """Put unstarted leased jobs back as they were, their attempt uncounted."""
        ...

    def close(self) -> None:
        """Release the store's resources."""
        ...

    # Optional: ``progress(lease: LeaseToken, fraction: float, note: str | None) -> None`` stores a
    # running job's progress report, written only while ``lease`` still holds the job (fenced by
    # its token, like ``settle_many``). A store without it drops the reports (``LeaseEngine.progress``).


class Loops(Protocol):
    """The claim loops of one queue in this process, as the engine sees them
    (``neoq.waiting.QueueWaiting`` is one)."""

    @property
    def claiming(self) -> int:
        """Claim calls in progress (waiting or looking): the loops one fetch serves."""
        ...

    def signal(self) -> None:
        """Jobs were buffered for the loops: have one look (and take one)."""
        ...

    def chain(self, look: Callable[[], Look[Claim] | None]) -> Claim | None:
        """The look of a loop that just settled a job, outside the turn."""
        ...
