"""The MySQL/MariaDB backend's flow control (docs/flow-control.md): a mixin of ``MySQLBackend``.

**Pausing.** A paused queue has a row in ``neoq_queue_pauses`` (migration 0003). Every claim, in
either mode, reads it in the statement that locks its jobs (``FOR UPDATE SKIP LOCKED``), and the
probe of an idle queue answers "nothing due, none scheduled" for it. A claim statement already
running when the pause committed read the table before: ``pause_queue`` waits for those
(``information_schema.PROCESSLIST``: the sessions running a statement that names the table,
seen when the pause committed, until each has been seen doing something else), so that once it
returns no claim of the queue is made anywhere. Without the ``PROCESS`` privilege the server shows
only the session's own statements, and it does not wait. Jobs this process leased ahead are given
back at once; other processes give back theirs when a look reads the paused queues (at most every
``poll_interval``). ``resume_queue`` deletes the row and wakes this process's loops; other
processes' loops see it at their next poll.

**Unique for a period.** In the enqueue's transaction, before its rows go in: each key (queue,
fingerprint) with a ``unique_for`` has a row of ``neoq_unique_windows``, made or locked by an
``INSERT ... ON DUPLICATE KEY UPDATE`` (keys in order: concurrent batches take turns, never
deadlock); the enqueue is refused when that row's last enqueue lies within the new job's window,
else the row is set to this enqueue after the jobs are stored. Concurrent enqueues of a key wait
for one another's commit, so exactly one gets in.

**Rate limits.** A look at a rate-limited queue claims a job as usual, then takes a start in its
key's window in a short transaction of its own: the key's row of ``neoq_rate_windows`` locked,
the starts of the last ``per`` (``neoq_rate_starts``) counted. With the window full the claim ends
unstarted and uncounted (lease mode: given back; transaction mode: rolled back), and the look
answers when the window has room; with a ``key``, the job is put off until its key has room and
the look goes on.

**Global limits.** ``prepare_queue`` makes the queue's slots (``neoq_slots``: 0 to the limit).
Transaction mode: a claim locks a free slot of 1..limit (``FOR UPDATE SKIP LOCKED``) in the claim's
transaction before it looks for a job: the settle's COMMIT frees it, and so does the end of a dead
worker's session. Lease mode: the fetch locks slot 0 (fetches of the queue take turns across
processes) and counts the queue's live leases, after this process's outcomes are written; a dead
process's leases stop counting when they expire. A loop held back answers "held" and looks again
a quarter second later. Limited queues lease nothing ahead.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, cast

import pymysql

from ...errors import DuplicateJobError
from ...uniqueness import unique_seconds
from ...waiting import Look
from ..capabilities import GLOBAL_LIMIT, PAUSE, PRIORITY, RATE_LIMIT, SNOOZE, UNIQUE_FOR
from ..lease import LeaseToken
from ..lease.handback import give_back_queue, take_back
from ..ratelook import rated_look
from .claims import _CLAIM, Held
from .leasestore import MySQLLeaseStore
from .pools import wrap

if TYPE_CHECKING:
    from ...flow import RateLimit
    from ...handler import Handler
    from ...job import Job
    from ..base import Claim
    from ..lease import LeaseEngine
    from .claims import TransactionClaims
    from .pools import Pool
    from .settings import MySQLSettings
    from .store import Cursor, Runner

__all__ = ["FLOW_CAPABILITIES", "MySQLFlow", "has_windows", "lock_windows", "open_windows"]

logger = logging.getLogger(__name__)

#: The flow-control capabilities of the MySQL backend, in both modes.
FLOW_CAPABILITIES = frozenset({PRIORITY, PAUSE, SNOOZE, UNIQUE_FOR, GLOBAL_LIMIT, RATE_LIMIT})

#: The longest ``pause_queue`` waits for claim statements that began before it (seconds).
PAUSE_WAIT = 10.0

#: The sessions running a claim (a locking read that names the paused queues), but this one.
_CLAIMS_UNDER_WAY = (
    "SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID()"
    " AND INFO LIKE '%neoq_queue_pauses p WHERE%'"
)


def _keys(jobs: Sequence[Job]) -> list[tuple[str, str, int]]:
    """The (queue, fingerprint, index) of the jobs with a ``unique_for``, in key order."""
    return sorted((job.queue, job.fingerprint or "", index) for index, job in enumerate(jobs) if job.unique_for)


def lock_windows(cur: Cursor, jobs: Sequence[Job]) -> None:
    """Before ``jobs`` are stored, in the caller's transaction: lock the window of each key with a
    ``unique_for``, and raise ``DuplicateJobError`` for the first within an earlier enqueue's window."""
    keys = _keys(jobs)
    if not keys:
        return
    rows = ",".join(["(%s, %s, '1970-01-01', 0)"] * len(keys))
    pairs = [value for queue, fingerprint, _ in keys for value in (queue, fingerprint)]
    cur.execute(
        "INSERT INTO neoq_unique_windows (queue, fingerprint, enqueued_at, unique_for)"
        f" VALUES {rows} ON DUPLICATE KEY UPDATE queue = neoq_unique_windows.queue",
        pairs,
    )
    cur.execute(
        "SELECT queue, fingerprint, job_id, TIMESTAMPDIFF(MICROSECOND, enqueued_at, UTC_TIMESTAMP(6))"
        f" FROM neoq_unique_windows WHERE (queue, fingerprint) IN ({','.join(['(%s, %s)'] * len(keys))})",
        pairs,
    )
    found = {(_text(row[0]), _text(row[1])): (row[2], int(row[3])) for row in cur.fetchall()}
    for queue, fingerprint, index in sorted(keys, key=lambda key: key[2]):
        holder, ago_us = found.get((queue, fingerprint), (None, None))
        window = unique_seconds(jobs[index])
        if holder is not None and ago_us is not None and ago_us < window * 1e6:
            raise DuplicateJobError(
                f"job {index} of queue {queue!r} was enqueued as job {holder} {ago_us / 1e6:.3g}s ago, "
                f"within its unique_for of {window:g}s: nothing was stored",
                str(holder),
            )


def open_windows(cur: Cursor, jobs: Sequence[Job], ids: Sequence[str]) -> None:
    """After ``jobs`` are stored as ``ids`` (``lock_windows`` before): their enqueue opens their windows."""
    keys = _keys(jobs)
    if not keys:
        return
    params: list[Any] = []
    for queue, fingerprint, index in keys:
        params += (queue, fingerprint, unique_seconds(jobs[index]), int(ids[index]))
    cur.execute(
        "INSERT INTO neoq_unique_windows (queue, fingerprint, enqueued_at, unique_for, job_id) VALUES "
        + ",".join(["(%s, %s, UTC_TIMESTAMP(6), %s, %s)"] * len(keys))
        + " ON DUPLICATE KEY UPDATE enqueued_at = VALUES(enqueued_at), unique_for = VALUES(unique_for),"
        " job_id = VALUES(job_id)",
        params,
    )


def has_windows(jobs: Sequence[Job]) -> bool:
    """Whether a job of ``jobs`` has a ``unique_for`` (its enqueue is then a transaction)."""
    return any(job.unique_for for job in jobs)


class MySQLFlow:
    """``pause_queue``, ``resume_queue``, ``paused_queues``, and the limits of ``prepare_queue``/``look``."""

    _runner: Runner
    _settings: MySQLSettings
    _lease_engine: LeaseEngine | None
    _prefetch: dict[str, int]
    _transactions: TransactionClaims
    _work_pool: Pool
    _queue_modes: dict[str, str]
    _lease_store: MySQLLeaseStore
    poll_interval: float

    if TYPE_CHECKING:

        def _look(self, queue: str) -> Look[Claim]: ...

        def _signal(self, queue: str) -> None: ...

        def _require(self) -> None: ...

        def _forget(self, held: Held) -> None: ...

        def _barrier(self) -> None: ...

    def _flow_init(self) -> None:
        #: The rate limit of each queue that has one; the global limits.
        self._rates: dict[str, RateLimit] = {}
        self._global_limits: dict[str, int] = {}
        #: The queues whose looks go through ``look``'s flow part: rate-limited, or limited in lease mode.
        self._flow_looks: set[str] = set()
        #: The queues this process saw paused, and when it read them (monotonic seconds).
        self._paused_seen: set[str] = set()
        self._paused_read = 0.0

    def _is_lease(self, queue: str) -> bool:
        return self._queue_modes.get(queue, self._settings.default_mode) == "lease"

    def _prepare_flow(self, queue: str, handler: Handler) -> None:
        """``prepare_queue``'s part: a rate limit's looks take a start with each claim."""
        if handler.rate_limit is not None:
            self._rates[queue] = handler.rate_limit
            self._prefetch[queue] = 0
            self._flow_looks.add(queue)
        if handler.global_limit is not None:
            self._prepare_limit(queue, handler.global_limit)

    # -- looking -------------------------------------------------------------------------

    def look(self, queue: str) -> Look[Claim]:
        """Claim a due job of ``queue`` now, or say when the next comes due (``Backend.look``).

        Lease mode reads the paused queues at most every ``poll_interval`` first: what this process
        leased ahead for a queue paused elsewhere goes back unstarted.
        """
        if self._pauses_stale():
            self._check_pauses()
        if queue not in self._flow_looks:
            return self._look(queue)
        if queue in self._global_limits:
            self._barrier()  # this process's outcomes written: the room they freed is seen
        rate = self._rates.get(queue)
        if rate is None:
            return self._look(queue)
        return rated_look(
            functools.partial(self._look, queue),
            rate,
            functools.partial(self._take_start, queue, rate=rate),
            self._put_off,
        )

    # -- pausing -------------------------------------------------------------------------

    def pause_queue(self, queue: str) -> None:
        self._require()

        def pause(cur: Cursor) -> None:
            cur.execute(
                "INSERT IGNORE INTO neoq_queue_pauses (queue, paused_at) VALUES (%s, UTC_TIMESTAMP(6))", (queue,)
            )
            # Committed (autocommit): claims from now on see it. Wait for those that began before.
            cur.execute(_CLAIMS_UNDER_WAY)
            under_way = {row[0] for row in cur.fetchall()}
            deadline = time.monotonic() + PAUSE_WAIT
            pause = 0.001
            while under_way:
                if time.monotonic() >= deadline:
                    logger.warning("neoq: pausing queue %r: %d claims under way did not end", queue, len(under_way))
                    return
                time.sleep(pause)
                pause = min(pause * 2, 0.05)
                cur.execute(_CLAIMS_UNDER_WAY)
                under_way &= {row[0] for row in cur.fetchall()}

        self._runner.run(f"pausing queue {queue!r}", pause, write=False)
        self._paused_seen.add(queue)
        engine = self._lease_engine
        if engine is not None:
            give_back_queue(engine, queue)

    def resume_queue(self, queue: str) -> None:
        self._require()
        self._runner.run(
            f"resuming queue {queue!r}",
            lambda cur: cur.execute("DELETE FROM neoq_queue_pauses WHERE queue = %s", (queue,)),
            write=False,
        )
        self._paused_seen.discard(queue)
        self._signal(queue)

    def paused_queues(self) -> set[str]:
        self._require()

        def read(cur: Cursor) -> set[str]:
            cur.execute("SELECT queue FROM neoq_queue_pauses")
            return {_text(row[0]) for row in cur.fetchall()}

        return self._runner.run("reading the paused queues", read, write=False)

    def _pauses_stale(self) -> bool:
        """Lease mode: whether the paused queues were read longer than ``poll_interval`` ago."""
        return self._lease_engine is not None and time.monotonic() - self._paused_read >= self.poll_interval

    def _check_pauses(self) -> None:
        """Give back what this process leased ahead for queues paused elsewhere. Read again until that
        is done: a loop meanwhile comes here too, not to the buffer (``settle_then_claim``)."""
        engine = self._lease_engine
        if engine is None:
            return
        began = time.monotonic()
        paused = self.paused_queues()
        for queue in paused - self._paused_seen:
            give_back_queue(engine, queue)
        self._paused_seen = paused
        self._paused_read = began

    def _prune_windows(self) -> None:
        """Forget the ``unique_for`` windows that have closed (``prune``)."""
        self._runner.run(
            "pruning unique_for windows",
            lambda cur: cur.execute(
                "DELETE FROM neoq_unique_windows"
                " WHERE enqueued_at < UTC_TIMESTAMP(6) - INTERVAL CAST(unique_for * 1e6 AS SIGNED) MICROSECOND"
            ),
            write=False,
        )

    # -- rate limits ---------------------------------------------------------------------

    def _take_start(self, queue: str, key: str, rate: RateLimit) -> float:
        """Take a start of ``(queue, key)`` if its window has room: 0; else the seconds until it has."""
        per_us = int(rate.window * 1e6)
        stored = key if len(key.encode()) <= 64 else "sha256:" + hashlib.sha256(key.encode()).hexdigest()

        def take(cur: Cursor) -> float:
            cur.execute(
                "INSERT INTO neoq_rate_windows (queue, rate_key) VALUES (%s, %s)"
                " ON DUPLICATE KEY UPDATE rate_key = neoq_rate_windows.rate_key",
                (queue, stored),
            )
            cur.execute(
                "DELETE FROM neoq_rate_starts WHERE queue = %s AND rate_key = %s"
                " AND started_at <= UTC_TIMESTAMP(6) - INTERVAL %s MICROSECOND",
                (queue, stored, per_us),
            )
            cur.execute(
                "SELECT COUNT(*), TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), MIN(started_at)) FROM neoq_rate_starts"
                " WHERE queue = %s AND rate_key = %s",
                (queue, stored),
            )
            row = cur.fetchone()
            taken, since_oldest = (int(row[0]), row[1]) if row else (0, None)
            if taken < rate.count:
                cur.execute(
                    "INSERT INTO neoq_rate_starts (queue, rate_key, started_at) VALUES (%s, %s, UTC_TIMESTAMP(6))",
                    (queue, stored),
                )
                return 0.0
            return max(0.001, (per_us + int(since_oldest or 0)) / 1e6)

        return self._runner.run(f"taking a start of queue {queue!r}", take)

    def _put_off(self, claim: Claim, delay: float | None) -> None:
        """End ``claim`` unstarted, no attempt counted: its job due as before, or in ``delay`` seconds."""
        token = claim.token
        if isinstance(token, LeaseToken):
            lease = take_back(cast("LeaseEngine", token.engine), claim)
            if lease is not None:
                if delay is not None:
                    lease.due_at = datetime.now(timezone.utc) + timedelta(seconds=delay)
                self._lease_store.give_back([lease], wake=False)
            return
        if isinstance(token, Held):
            self._put_back(token, delay)

    def _put_back(self, held: Held, delay: float | None) -> None:
        """End a transaction-mode claim unstarted: its marker gone, its job due as before or in
        ``delay`` seconds, COMMIT (its lock, and a global limit's slot, freed); no attempt counted."""
        with held.lock:
            if held.settled:
                return
            held.settled = True
        self._forget(held)
        conn = held.conn
        sql = "DELETE FROM neoq_claims WHERE job_id = %(id)s AND holder = CONNECTION_ID(); "
        if delay is not None:
            sql += "UPDATE neoq_jobs SET run_after = UTC_TIMESTAMP(6) + INTERVAL %(us)s MICROSECOND WHERE id = %(id)s; "
        sql += "COMMIT"
        params = {"id": conn.escape(held.job_id), "us": conn.escape(int((delay or 0) * 1e6))}
        try:
            with conn.cursor() as cur:
                cur.execute(sql % params)
                for _ in range(sql.count(";")):
                    cur.nextset()
        except (pymysql.err.MySQLError, OSError) as exc:
            held.broken = True
            raise wrap(self._settings, exc, f"putting job {held.job_id} back") from exc
        finally:
            self._work_pool.put(conn, broken=held.broken)

    # -- global limits -------------------------------------------------------------------

    def _flow_store(self) -> MySQLLeaseStore:
        """The lease mode's store, which reads the global limits."""
        self._lease_store = store = MySQLLeaseStore(self._runner, self._signal)
        store.global_limits = self._global_limits
        return store

    def _prepare_limit(self, queue: str, limit: int) -> None:
        """Make ``queue``'s slots (0 to ``limit``); claims of either mode then take one."""
        self._runner.run(
            f"preparing the global limit of queue {queue!r}",
            lambda cur: cur.execute(
                "INSERT IGNORE INTO neoq_slots (queue, slot) VALUES " + ",".join(["(%s, %s)"] * (limit + 1)),
                [value for slot in range(limit + 1) for value in (queue, slot)],
            ),
        )
        self._global_limits[queue] = limit
        self._prefetch[queue] = 0  # leased ahead, jobs would hold room that running ones could use
        if self._is_lease(queue):
            self._flow_looks.add(queue)
        else:
            self._transactions.set_claim(queue, limited_claim(queue, limit))


def limited_claim(queue: str, limit: int) -> str:
    """The transaction mode's claim of a queue with a global limit: a free slot locked first, no job without one."""
    name = pymysql.converters.escape_item(queue, "utf8mb4")
    slot = (
        "SET @neoq_claimed = NULL, @neoq_slot = (SELECT slot FROM neoq_slots WHERE queue = %(queue)s"
        f" AND slot BETWEEN 1 AND {int(limit)} ORDER BY slot LIMIT 1 FOR UPDATE SKIP LOCKED);"
    )
    text = _CLAIM.replace("SET @neoq_claimed = NULL;", slot, 1)
    text = text.replace(" AND j.status = 'new'", " AND j.status = 'new' AND @neoq_slot IS NOT NULL", 1)
    assert text.count("@neoq_slot") == 2, "claims._CLAIM changed: update flow.limited_claim"
    return text % {"queue": name}


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, (bytes, bytearray)) else str(value)
