"""The PostgreSQL backend's runtime state: per claim (its connection), per open() (its pools and
threads). Per queue, this process's own enqueues are in notices.py; claims of both modes wait in
``neoq.waiting``."""

from __future__ import annotations

import threading
from datetime import datetime

from psycopg_pool import ConnectionPool

from .common import Conn, _close_quietly
from .counters import _Counters
from .listener import _Canceller, _Listener


class _Held:
    """Backend-private state of one claim (``Claim.token``): its connection and who is done with it.

    ``settle`` and ``release`` may run in different threads and in either order when the
    runtime ends an attempt from outside (timeout, cancellation, forced shutdown); ``lock``
    orders them, and the connection goes back to the pool once both happened.
    """

    __slots__ = (
        "attempts",
        "claimed_at",
        "conn",
        "counter",
        "interrupted",
        "job_id",
        "lock",
        "lost",
        "queue",
        "ran_at",
        "released",
        "returned",
        "settled",
        "stored",
    )

    def __init__(self, conn: Conn, job_id: str, queue: str, claimed_at: float) -> None:
        self.conn = conn
        self.job_id = job_id
        self.queue = queue
        #: When the claim query was sent (monotonic): cancellations seen earlier were for an older claim.
        self.claimed_at = claimed_at
        #: The counter connection whose attempt counter's result is still to be read (Settles.collect_count).
        self.counter: Conn | None = None
        #: The attempt number the claim read (attempts so far + 1), and when the attempt started.
        self.attempts = 0
        self.ran_at: datetime | None = None
        #: Whether the claim saw an earlier attempt that ended without a settle (counted apart).
        self.lost = False
        self.lock = threading.Lock()
        self.settled = False
        #: Whether the outcome was committed: a claim that ends without it leaves its job due again.
        self.stored = False
        self.released = False
        self.interrupted = False
        self.returned = False


class _Pools:
    """What one open() created; close() tears it down."""

    def __init__(
        self,
        work: ConnectionPool[Conn],
        aux: ConnectionPool[Conn],
        listener: _Listener,
        canceller: _Canceller,
        counters: _Counters,
    ) -> None:
        self.work = work
        self.aux = aux
        self.listener = listener
        self.canceller = canceller
        self.counters = counters
        #: At most one aux connection that a single ``enqueue`` kept for the next one, with the
        #: monotonic time it goes back to the pool: a checkout from the pool and its return cost
        #: a job enqueued one at a time about 12 us together (3-10% of its enqueue, measured here).
        #: Taken with ``list.pop`` (atomic), so two enqueues never share it; while kept, the
        #: pool counts it as in use.
        self.spare: list[tuple[Conn, float]] = []
        #: Set by ``runtime.stop`` before it gives the spare back: a spare kept later is given back at once.
        self.closed = False

    def drop_spare(self) -> None:
        """Give the kept connection back to the aux pool (which closes it once closed itself)."""
        while self.spare:
            try:
                conn, _ = self.spare.pop()
            except IndexError:
                break
            self.aux.putconn(conn)


def _drop_count(held: _Held) -> None:
    """Close the counter connection of a claim that ends unsettled; the counter it sent still commits."""
    conn, held.counter = held.counter, None
    if conn is not None:
        _close_quietly(conn)
