"""The PostgreSQL backend's flow control (docs/flow-control.md): a mixin of ``PostgresBackend``.

**Pausing.** A paused queue has a row in ``neoq_queue_pauses`` (migration 0006). Every claim
statement, in either mode, reads it in the statement that locks the job, so a claim that starts
after the pause committed takes nothing. A claim statement already running when it committed
read the table before: ``pause_queue`` waits for those (``pg_stat_activity``: active statements
that name the table and began before the wait's own statement), so that once it returns no claim
of the queue is made anywhere. Where the server hides other sessions' query text (another role,
without ``pg_read_all_stats``) it cannot see them, and does not wait. The pause is announced
(``p:<queue>``): each client's lease mode gives back the jobs it had leased ahead for the queue
and not started. ``resume_queue`` deletes the row and notifies ``q:<queue>``, which wakes the
queue's claim loops everywhere (a look at a paused queue answers "nothing due, none scheduled",
so they wait for it, or for the poll interval).

**Global limits.** ``prepare_queue`` makes the queue's slots (``neoq_slots``, 1 to the limit).
In transaction mode a claim locks a free slot before it looks for a job (``claimed_job_limited``)
and holds it in the claim's transaction: the settle's commit frees it, and so does the end of a
dead process's session. In lease mode the fetch counts the queue's live leases under an advisory
lock (``lease_claim_limited``), but for its own jobs whose outcomes are on their way (batched, they
are written a moment later); a dead process's leases stop counting when they expire. Either
way a loop held back answers "held" and looks again every ``HELD_POLL`` (a quarter second): a
slot freed in another process is not announced. Jobs a process leased ahead count as running: they
take room (never more than the limit leaves) that the process's own loops use next.

**Rate limits.** A look at a rate-limited queue claims a job as usual, then takes a start in
its key's window (``neoq_rate_take``: the starts of the last ``per`` seconds in
``neoq_rate_starts``, counted under an advisory lock per queue and key, in its own short
statement: the claim's transaction holds no lock of the limit while the handler runs). With the
window full the claim ends unstarted and uncounted (transaction mode: committed without a settle;
lease mode: given back without a wake-up): the job as it was, and the look answers when the window
has room; with a ``key``, the job is put off until its key has room and the look goes on.

**Unique for a period.** ``open_windows`` runs in the enqueue's transaction, after its rows are
in: the last enqueue of each queue and fingerprint with a ``unique_for`` is a row of
``neoq_unique_windows``, and ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` replaces it only when
it lies outside the new job's ``unique_for``. Concurrent enqueues of one key take turns on that
row, so exactly one gets in; a refused one raises ``DuplicateJobError`` and its transaction
(and every job of its batch) rolls back.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, cast

import psycopg

from ...errors import DuplicateJobError
from ...uniqueness import unique_seconds
from ...waiting import Look
from ..capabilities import GLOBAL_LIMIT, PAUSE, PRIORITY, RATE_LIMIT, SNOOZE, UNIQUE_FOR
from ..lease import LeaseToken
from ..lease.handback import give_back_queue, take_back, unwritten
from ..ratelook import rated_look
from .common import CHANNEL, Conn, _close_quietly
from .queries import QUERIES

if TYPE_CHECKING:
    from ...flow import RateLimit
    from ...handler import Handler
    from ...job import Job
    from ..base import Claim
    from ..lease import LeaseEngine
    from .claims import TransactionClaims
    from .leasestore import PostgresLeaseStore
    from .pools import Connections

__all__ = ["FLOW_CAPABILITIES", "PostgresFlow", "open_windows"]

logger = logging.getLogger(__name__)

#: The flow-control capabilities of the PostgreSQL backend, in both modes.
FLOW_CAPABILITIES = frozenset({PRIORITY, PAUSE, SNOOZE, UNIQUE_FOR, GLOBAL_LIMIT, RATE_LIMIT})

#: The longest ``pause_queue`` waits for claim statements that began before it (seconds): a claim
#: statement takes milliseconds, so only a stuck server makes it give up (with a warning).
PAUSE_WAIT = 10.0


class PostgresFlow:
    """``pause_queue``, ``resume_queue``, ``paused_queues`` (on the backend's aux connections)."""

    _conns: Connections
    _lease_engine: LeaseEngine | None
    _lease_store: PostgresLeaseStore
    _prefetch: dict[str, int]

    if TYPE_CHECKING:

        @functools.cached_property
        def _transactions(self) -> TransactionClaims: ...

    @functools.cached_property
    def _rates(self) -> dict[str, RateLimit]:
        """The rate limit of each queue that has one: its looks take a start with each claim."""
        return {}

    @functools.cached_property
    def _flow_looks(self) -> set[str]:
        """The queues whose looks go through ``_flow_look``: rate-limited, or limited in lease mode."""
        return set()

    @functools.cached_property
    def _global_limits(self) -> dict[str, int]:
        """The global limit of each queue that has one; the lease store reads it too."""
        return {}

    def _flow_store(self, store: PostgresLeaseStore) -> None:
        """Give the lease store the global limits, and the signal of a queue whose settles freed room."""
        self._lease_store = store
        store.global_limits = self._global_limits
        store.freed = lambda queues: self._signal(queues)
        store.unwritten = lambda queue: unwritten(self._lease(), queue)

    def _prepare_flow(self, queue: str, handler: Handler) -> None:
        """``prepare_queue``'s part: a queue with a global limit gets its slots, and claims that take one;
        a queue with a rate limit, looks that take a start."""
        if handler.rate_limit is not None:
            self._rates[queue] = handler.rate_limit
            self._prefetch[queue] = 0
            self._flow_looks.add(queue)
        limit = handler.global_limit
        if limit is None:
            return
        with self._conns.aux(f"preparing the global limit of queue {queue!r}") as conn:
            conn.execute(QUERIES["make_slots"], {"queue": queue, "global_limit": limit})
        self._global_limits[queue] = limit
        self._transactions.global_limits = self._global_limits
        if self._is_lease(queue):
            self._flow_looks.add(queue)

    if TYPE_CHECKING:  # the backend's (PostgresBackend, PoolSizing), which come first at run time

        def _signal(self, queues: Iterable[str] | None) -> None: ...

        def _is_lease(self, queue: str) -> bool: ...

        def _lease(self) -> LeaseEngine: ...

        def _count_claimer(self) -> None: ...

        def _barrier(self) -> None: ...

    # -- rate limits ---------------------------------------------------------------------

    def _flow_look(self, queue: str) -> Look[Claim]:
        """``look`` for a rate-limited queue, or a queue with a global limit in lease mode.

        A global limit in lease mode counts live leases: the outcomes settled in this process are
        written first (``_barrier``), or the room they freed would be seen only later.
        A rate limit: a
        claim, then a start of its key's window (``rate_take``). With the window full the job goes
        back unstarted, its attempt uncounted: as it was when the limit has no key (the look
        answers when the window has room), else put off until its key's window has room (the look
        goes on: another key's job may start).
        """
        rate = self._rates.get(queue)
        lease = self._is_lease(queue)

        def look() -> Look[Claim]:
            if not lease:
                self._count_claimer()
            elif queue in self._global_limits:
                self._barrier()  # this process's outcomes written: the room they freed is seen
            return self._lease().look(queue) if lease else self._transactions.look(queue)

        if rate is None:
            return look()

        def take_start(key: str) -> float:
            per = rate.window
            params = {"queue": queue, "key": key, "count": rate.count, "per": per}
            with self._conns.aux(f"taking a start of queue {queue!r}") as conn:
                row = conn.execute(QUERIES["rate_take"], params).fetchone()
            return 0.0 if row is None else float(row[0])

        return rated_look(look, rate, take_start, self._put_off)

    def _put_off(self, claim: Claim, delay: float | None) -> None:
        """End ``claim`` unstarted, no attempt counted: its job due as before, or in ``delay`` seconds."""
        token = claim.token
        if isinstance(token, LeaseToken):
            lease = take_back(cast("LeaseEngine", token.engine), claim)  # the engine that made the claim
            if lease is not None:
                if delay is not None:
                    lease.due_at = datetime.now(timezone.utc) + timedelta(seconds=delay)
                self._lease_store.give_back([lease], wake=False)
            return
        settles = self._transactions.settles
        held = token
        conn = held.conn
        held.settled = held.released = held.returned = True
        settles.forget(held)
        try:
            with conn.pipeline():
                if delay is not None:
                    conn.execute(QUERIES["put_off"], {"id": int(held.job_id), "delay": delay})
                conn.commit()  # no settle: the lock's committer is no trace of an attempt (migration 0003)
        except psycopg.Error as exc:
            _close_quietly(conn)
            raise self._conns.wrap(exc, f"putting job {held.job_id} back") from exc
        finally:
            settles.putconn(conn)

    def pause_queue(self, queue: str) -> None:
        with self._conns.aux(f"pausing queue {queue!r}") as conn:
            conn.execute(QUERIES["pause_queue"], {"queue": queue, "channel": CHANNEL})
            # Committed (autocommit): claims from now on see it. Wait for those that began before.
            deadline = time.monotonic() + PAUSE_WAIT
            pause = 0.001
            while True:
                row = conn.execute(QUERIES["claims_under_way"]).fetchone()
                if row is None or not row[0]:
                    break
                if time.monotonic() >= deadline:
                    logger.warning("neoq: pausing queue %r: %d claims under way did not end in time", queue, row[0])
                    break
                time.sleep(pause)
                pause = min(pause * 2, 0.05)
        self._paused_elsewhere(queue)  # this client's own lease buffer, without the notification's delay

    def resume_queue(self, queue: str) -> None:
        with self._conns.aux(f"resuming queue {queue!r}") as conn:
            conn.execute(QUERIES["resume_queue"], {"queue": queue, "channel": CHANNEL})
        self._signal([queue])  # this client's loops at once (and without a listener)

    def paused_queues(self) -> set[str]:
        with self._conns.aux("reading the paused queues") as conn:
            return {row[0] for row in conn.execute(QUERIES["paused_queues"]).fetchall()}

    def _paused_elsewhere(self, queue: str) -> None:
        """A ``p:<queue>`` notification: give back the jobs leased ahead for ``queue``, not started."""
        engine = self._lease_engine
        if engine is not None:
            give_back_queue(engine, queue)


def open_windows(conn: Conn | psycopg.Connection[Any], jobs: Sequence[Job], ids: Sequence[str]) -> None:
    """Record the enqueue of ``jobs`` (stored as ``ids``) that have a ``unique_for``, in the caller's
    transaction; raise ``DuplicateJobError`` for the first that falls in an earlier one's window."""
    picked = [index for index, job in enumerate(jobs) if job.unique_for is not None]
    if not picked:
        return
    params = {
        "queues": [jobs[i].queue for i in picked],
        "fingerprints": [jobs[i].fingerprint or "" for i in picked],
        "windows": [unique_seconds(jobs[i]) for i in picked],
        "ids": [int(ids[i]) for i in picked],
    }
    row = conn.execute(QUERIES["open_windows"], params).fetchone()
    if row is None:
        return
    index, holder, ago, window = picked[row[0] - 1], row[1], row[2], row[3]
    job = jobs[index]
    if holder is None:  # enqueued by a transaction that committed while this one waited
        raise DuplicateJobError(f"job {index} of queue {job.queue!r} was enqueued just now, within its unique_for")
    raise DuplicateJobError(
        f"job {index} of queue {job.queue!r} was enqueued as job {holder} {ago:.3g}s ago, "
        f"within its unique_for of {window:g}s",
        str(holder),
    )
