"""Transaction mode's claims: one look at a queue, and a processed job's settle chained to the next claim.

**A claim is a transaction.** ``look`` takes a connection from the worker pool and sends
``BEGIN``, ``SELECT ... FOR UPDATE SKIP LOCKED`` (``claim_probe``: ``run_after <= now()`` in the
query itself; it also says whether more jobs are due, and when the next one comes due) and a
``SAVEPOINT``, pipelined into one round trip. The open transaction holds the job's row lock until
the settle (``settles.Settles``) writes the outcome and commits; if the process dies, PostgreSQL
rolls the transaction back and the job is claimable again. When nothing is due, ``claim_idle``
says when the next job comes due and whether others hold due jobs, and commits, in one more round
trip. The answer is a ``neoq.waiting.Look``: this module never waits, the backend's ``waiting``
decides who looks when (docs/waiting.md).

``chain`` is the look of ``Backend.settle_then_claim``: RELEASE SAVEPOINT, the outcome, COMMIT,
then BEGIN, the claim query and SAVEPOINT in one pipeline, the connection going from the settled
claim to the new one without the pool.

It is given what it uses of the backend as callbacks: the pools (``require`` opens them in a
forked child), the error wrapper, and the registry of this process's claims (``register``).
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import pq
from psycopg_pool import PoolTimeout

from ...errors import BackendConnectionError, BackendError, NeoqError
from ...job import Job
from ...waiting import Look
from ..base import Claim, Outcome
from .common import Conn, _close_quietly
from .rows import _claimed_job
from .settles import Settles
from .state import _Held, _Pools
from .wire import (
    _BEGIN,
    _COMMIT,
    _FATAL_ERROR,
    _LIMITED_STATEMENTS,
    _PIPELINE_ABORTED,
    _PREPARED,
    _RELEASE_SAVEPOINT_B,
    _SAVEPOINT_B,
    _WORK_STATEMENTS,
    _Command,
    _exchange,
    _exchange_prepared,
    _Hot,
    _load_row,
    _prepare,
    _prepare_again,
    _receive,
    _result_error,
    _send,
)

__all__ = ["TransactionClaims"]

logger = logging.getLogger(__name__)

#: How long a look waits for a worker connection at most (seconds; the connect timeout if shorter).
_GETCONN_WAIT = 2.0


#: A look that found nothing: (seconds until the next job is due or None, others hold due jobs).
_Idle = tuple["float | None", bool]


class TransactionClaims:
    """The claim side of transaction mode (see the module docstring)."""

    def __init__(
        self,
        *,
        hot: _Hot,
        settles: Settles,
        require: Callable[[], _Pools],
        wrap: Callable[[BaseException, str], BackendError],
        register: Callable[[_Held], bool],
        connect_timeout: float,
        safe_url: str,
    ) -> None:
        self._hot = hot
        self.settles = settles
        self._require = require
        self._wrap = wrap
        #: Registers a claim with this process (cancellations find it); True when a cancellation
        #: of its job arrived since its claim query was sent.
        self._register = register
        self._connect_timeout = connect_timeout
        self._safe_url = safe_url
        #: The global limit of each queue that has one (flow.py): its claims lock a slot first.
        self.global_limits: dict[str, int] = {}
        #: The work connections the limited claims are prepared on.
        self._limited_ready: weakref.WeakSet[Conn] = weakref.WeakSet()
        #: Queues whose last chained claim took a job of non-zero priority: their next one reads the
        #: three ranges at once (claim) instead of trying the single range first (claim_plain).
        self._prioritized: set[str] = set()

    def look(self, queue: str) -> Look[Claim]:
        """Claim a due job of ``queue`` now, or say when the next comes due (``Backend.look``)."""
        pools = self._require()
        while True:
            conn = self._getconn(pools, min(_GETCONN_WAIT, self._connect_timeout))
            if conn is None:
                return Look(held=True)  # every connection runs a job: look again soon
            started = time.monotonic()
            try:
                row = self._claim_row(conn, queue)
                idle = self._idle(conn, queue) if row is None else None
            except psycopg.Error as exc:
                self.settles.putconn(conn)  # the pool rolls back or discards it
                raise self._wrap(exc, f"claiming a job of queue {queue!r}") from exc
            if row is None:
                self.settles.putconn(conn)
                assert idle is not None
                return Look(due_in=idle[0], held=idle[1])
            claim = self._take(pools, conn, row, started)
            if claim is not None:
                more = bool(row[16])
                # Nothing else due: the probe's next due time completes the answer.
                return Look(claim, more=more, due_in=None if more else row[17])
            # Its job was cancelled while it waited: look again.

    def chain(self, claim: Claim, held: _Held, outcome: Outcome, queue: str) -> Look[Claim] | None:
        """Settle the processed attempt ``claim`` and claim ``queue``'s next due job in one round
        trip (``Backend.settle_then_claim``, through ``QueueWaiting.chain``). None when it did
        not look after all (the claim was ended from outside, or the claim part failed: the
        outcome is stored, and the loop claims again the usual way)."""
        return self.settles.once(held, lambda: self._chained(claim, held, outcome, queue))

    def _chained(self, claim: Claim, held: _Held, outcome: Outcome, queue: str) -> Look[Claim] | None:
        """``chain`` once the claim is its to settle (``Settles.once``)."""
        settles = self.settles
        conn = held.conn
        pools = settles.pools()
        if (
            pools is None
            or held.interrupted
            or conn.closed
            or conn.info.transaction_status != pq.TransactionStatus.INTRANS
        ):
            settles.store(held, claim.job, outcome)
            return None
        started = time.monotonic()
        row = self._settle_and_claim(conn, held, claim.job, queue)
        held.stored = True
        if row is None:
            if conn.info.transaction_status != pq.TransactionStatus.INTRANS:
                return None  # the claim failed; release() returns the connection
            try:
                next_due, busy = self._idle(conn, queue)
            except psycopg.Error as exc:  # the outcome is stored; release() cleans up
                logger.debug("neoq: claiming after job %s failed: %s", claim.job.id, exc)
                return None
            # The queue has nothing due: the claim loop goes straight to waiting.
            return Look(due_in=next_due, held=busy)
        if self._prioritized and not row[14]:
            self._prioritized.discard(queue)
        held.returned = True  # the connection is the next claim's now
        settles.forget(held)
        try:
            following = self._take(pools, conn, row, started)
        except NeoqError as exc:
            # The outcome is stored; the claim loop claims again the usual way.
            logger.debug("neoq: claiming after job %s failed: %s", claim.job.id, exc)
            return None
        # The plain claim query does not say whether more is due.
        return None if following is None else Look(following)

    # -- one round trip each ---------------------------------------------------------------

    def _claim_row(self, conn: Conn, queue: str) -> tuple[Any, ...] | None:
        """BEGIN, the claim query and the handler's SAVEPOINT, in one round trip; the claim's row
        (None when nothing is due: the transaction is still open)."""
        hot = self._hot
        commands: tuple[_Command, ...] = (
            (_BEGIN, None, False),
            (hot.claim_probe, (queue.encode(conn.info.encoding),), hot.prepared)
            if not self.global_limits
            else self._claim_command(conn, queue, probe=True),
            (_SAVEPOINT_B, None, False),
        )
        # Someone may have deallocated neoq's statements on this connection (DEALLOCATE ALL).
        names = _WORK_STATEMENTS if not self.global_limits else (*_WORK_STATEMENTS, *_LIMITED_STATEMENTS)
        results = _exchange_prepared(conn, commands, names, hot.prepared)
        return _load_row(conn, results[1])

    def _claim_command(self, conn: Conn, queue: str, *, probe: bool) -> _Command:
        """The claim (``probe``: claim_probe) of ``queue``; for a queue with a global limit, its
        ``_limited`` form (claimed_job_limited), sent whole: limited queues pay for the planning."""
        hot = self._hot
        encoded = queue.encode(conn.info.encoding)
        limit = self.global_limits.get(queue)
        if limit is None:
            return (hot.claim_probe if probe else hot.claim, (encoded,), hot.prepared)
        wire, text, names = _PREPARED["claim_probe_limited" if probe else "claim_limited"]
        values = {"queue": encoded, "global_limit": str(limit).encode()}
        params = tuple(values[name] for name in names)
        if not hot.prepared:
            return (text, params, False)
        if conn not in self._limited_ready:  # prepared once per connection, the first time it is needed
            _prepare(conn, _LIMITED_STATEMENTS)
            self._limited_ready.add(conn)
        return (wire, params, True)

    def _idle(self, conn: Conn, queue: str) -> _Idle:
        """After a claim that found nothing: (seconds until the next job is due, others hold due
        jobs), and the transaction ended, in one round trip.

        Committed, not rolled back: a claim that found nothing may still have locked a row. When
        a job it was about to lock was updated meanwhile (its retry was just settled), PostgreSQL
        locks the new version before it rechecks the claim's conditions on it, and keeps the lock
        when the recheck fails. Rolled back, that lock would leave an aborted transaction's id in
        the row's xmax, the trace of an attempt lost without a settle (migration 0003), and the
        next claim would count an attempt that never ran. A transaction that wrote nothing
        commits without writing anything either.
        """
        hot = self._hot
        commands: tuple[_Command, ...] = (
            (hot.claim_idle, (queue.encode(conn.info.encoding),), hot.prepared),
            (_COMMIT, None, False),
        )
        row = _load_row(conn, _exchange(conn, commands)[0])
        assert row is not None
        return row[0], bool(row[1])

    def _settle_and_claim(self, conn: Conn, held: _Held, job: Job, queue: str) -> tuple[Any, ...] | None:
        """The exchange of ``chain``: the claim's row, or None when the claim failed.

        Raises ``BackendError`` when the outcome was not stored.
        """
        hot = self._hot
        encoding = conn.info.encoding
        settle: tuple[_Command, ...] = (
            (_RELEASE_SAVEPOINT_B, None, False),
            self.settles.processed(job, held),
            (_COMMIT, None, False),
        )
        plain = not self.global_limits and queue not in self._prioritized
        claim: tuple[_Command, ...] = (
            (_BEGIN, None, False),
            (hot.claim_plain if plain else hot.claim, (queue.encode(encoding),), hot.prepared)
            if not self.global_limits
            else self._claim_command(conn, queue, probe=False),
            (_SAVEPOINT_B, None, False),
        )
        try:
            # One segment (one sync): the server commits a COMMIT when it executes it, so a claim
            # that fails after it cannot undo the outcome; and libpq sends a segment per sync.
            with conn.lock:
                _send(conn.pgconn, settle + claim)
                results = _receive(conn, len(settle) + len(claim))
            settled, claimed = results[: len(settle)], results[len(settle) :]
            for result in settled:
                if result.status == _FATAL_ERROR:
                    raise _result_error(conn, result)
        except psycopg.Error as exc:
            with suppress(psycopg.Error):
                if not conn.closed:
                    conn.rollback()
            raise self._wrap(exc, f"settling job {job.id} as processed") from exc
        for result in claimed:
            if result.status == _FATAL_ERROR or result.status == _PIPELINE_ABORTED:
                # The outcome is committed; the claim loop claims again the usual way (and reports).
                error = _result_error(conn, result)
                logger.debug("neoq: claiming after job %s failed: %s", job.id, error)
                with suppress(psycopg.Error):
                    if isinstance(error, pg_errors.InvalidSqlStatementName) and hot.prepared:
                        _prepare_again(conn, _WORK_STATEMENTS)  # deallocated by someone
                        self._limited_ready.discard(conn)
                    else:
                        conn.rollback()
                return None
        row = _load_row(conn, claimed[1])
        if plain and row is None:
            row = self._claim_ranges(conn, queue)
        return row

    def _claim_ranges(self, conn: Conn, queue: str) -> tuple[Any, ...] | None:
        """After claim_plain found no job (a job of non-zero priority is due, the queue is paused,
        or nothing is due), the claim of every range, in the same transaction and one more round
        trip; the queue keeps the three-range claim while it hands out jobs of non-zero priority.
        None when the claim failed (the transaction is rolled back) or found nothing (still open)."""
        hot = self._hot
        commands: tuple[_Command, ...] = (
            (_RELEASE_SAVEPOINT_B, None, False),
            (hot.claim, (queue.encode(conn.info.encoding),), hot.prepared),
            (_SAVEPOINT_B, None, False),
        )
        try:
            row = _load_row(conn, _exchange(conn, commands)[1])
        except psycopg.Error as exc:
            logger.debug("neoq: claiming a job of queue %r failed: %s", queue, exc)
            with suppress(psycopg.Error):
                if not conn.closed:
                    conn.rollback()
            return None
        if row is not None and row[14]:
            self._prioritized.add(queue)
        return row

    # -- making a claim --------------------------------------------------------------------

    def _take(self, pools: _Pools, conn: Conn, row: tuple[Any, ...], started: float) -> Claim | None:
        """Make a claim of the job ``row`` locked on ``conn``; None when a cancellation was waiting
        for it (it is then stored CANCELLED and ``conn`` returned). An earlier attempt that the
        claim found lost is counted first (``Settles.send_count``); this one is counted by its settle."""
        job_id = str(row[0])
        held = _Held(conn, job_id, str(row[1]), started)
        lost = held.lost = bool(row[13])
        held.ran_at = row[12]
        held.attempts = int(row[11]) + lost + 1
        # Registered before anything else, so a cancellation arriving from now on finds it.
        # One that arrived while the claim query ran may have missed its snapshot.
        cancelled = self._register(held)
        if row[10] or cancelled:
            # Cancelled while it waited for this claim: record it and never run it.
            self.settles.settle_unrun(held, _claimed_job(row, job_id, 0, None))
            return None
        if lost:
            try:
                self.settles.send_count(pools, held)
            except BaseException:
                # Without the lost attempt counted the job must not run: end the claim (it is due again).
                self.settles.forget(held)
                _close_quietly(conn)
                self.settles.putconn(conn)
                self.settles.signal(held.queue)  # its job is due again
                raise
        return Claim(_claimed_job(row, job_id, held.attempts, held.ran_at), transaction=conn, token=held)

    def _getconn(self, pools: _Pools, timeout: float) -> Conn | None:
        try:
            return pools.work.getconn(timeout=timeout)
        except PoolTimeout as exc:
            stats = pools.work.get_stats()
            if stats.get("pool_size", 0) >= stats.get("pool_max", 0):
                return None  # every connection is held by a running job: wait for one
            raise BackendConnectionError(f"no PostgreSQL connection to {self._safe_url} within {timeout:g}s") from exc
