"""Transaction mode's settles: the outcome written in the claim's transaction, attempts counted.

A claim of transaction mode (``claims.TransactionClaims``) holds a worker connection with its
transaction open. ``Settles`` ends it: the outcome and the attempt's count in that transaction
(``settle``), the connection back to the pool once the runtime is done with it too (``release``),
a handler's running statement cancelled (``interrupt``). An earlier attempt that a claim found
lost (its worker died) is counted apart, on a counter connection, before the handler runs
(``send_count``) and read back before the settle (``collect_count``), so a job that kills every
worker still runs out of attempts (migration 0003).

It is given what it uses of the backend as callbacks: the current pools, the error wrapper, and
the registry of this process's claims (``forget``, whether a cancellation was seen).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import suppress
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg import pq

from ...errors import BackendConnectionError, BackendError, NeoqError
from ...job import Job, JobStatus
from ..base import Claim, Outcome
from .common import _ROLLBACK_TO_SAVEPOINT, CHANNEL, Conn, _close_quietly
from .queries import QUERIES
from .state import _drop_count, _Held, _Pools
from .wire import (
    _COMMIT,
    _FATAL_ERROR,
    _PREPARED,
    _RELEASE_SAVEPOINT_B,
    _ROLLBACK_TO_SAVEPOINT_B,
    _Command,
    _exchange,
    _Hot,
    _receive,
    _result_error,
    _send,
    _wire_text,
)

__all__ = ["Settles", "close_under_handler", "settle_params"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


def settle_params(job: Job, outcome: Outcome, held: _Held, counted: int = 1) -> dict[str, Any]:
    """The parameters of the ``settle`` query for ``job``'s ``outcome``."""
    status = outcome.status
    return {
        "id": int(job.id or 0),
        "counted": counted,
        "ran_at": held.ran_at,
        "status": status.value,
        "error": None if status is JobStatus.PROCESSED else outcome.error,
        "traceback": None if status is JobStatus.PROCESSED else outcome.traceback,
        "result": outcome.result if status is JobStatus.PROCESSED else None,
        "run_after": outcome.run_after if status is JobStatus.NEW else None,
        "retries": outcome.retries if status is JobStatus.NEW else None,
        "snoozed": 1 if outcome.snoozed else 0,
        "channel": CHANNEL,
    }


def close_under_handler(held: _Held) -> None:
    """Close the claim's connection, which its handler may still be using."""
    conn = held.conn
    lock: threading.Lock = conn.lock
    # The handler thread holds the connection's lock while one of its statements runs;
    # closing the libpq connection under it would pull the rug from a running call.
    if lock.acquire(timeout=0.5):
        try:
            _close_quietly(conn)
        finally:
            lock.release()
        return
    with suppress(Exception):
        conn.cancel_safe(timeout=2.0)
    if lock.acquire(timeout=2.0):
        try:
            _close_quietly(conn)
        finally:
            lock.release()
    # Else release() closes it once the handler returns: whatever the handler does in the
    # meantime runs in a transaction that is never committed.


class Settles:
    """The settle side of transaction-mode claims (see the module docstring)."""

    def __init__(
        self,
        *,
        hot: _Hot,
        pools: Callable[[], _Pools | None],
        wrap: Callable[[BaseException, str], BackendError],
        scrub: Callable[[str], str],
        forget: Callable[[_Held], None],
        cancel_seen: Callable[[str], bool],
        signal: Callable[[str], None],
        connect_timeout: float,
    ) -> None:
        self._hot = hot
        self.pools = pools
        self._wrap = wrap
        self._scrub = scrub
        self.forget = forget
        self._cancel_seen = cancel_seen
        #: Signals a queue whose job a claim of this process left due again (ended unsettled).
        self.signal = signal
        self._connect_timeout = connect_timeout

    # -- the runtime's calls -------------------------------------------------------------

    def settle(self, claim: Claim, held: _Held, outcome: Outcome) -> None:
        """``Backend.settle`` of a transaction-mode claim."""
        self.once(held, lambda: self.store(held, claim.job, outcome))

    def store(self, held: _Held, job: Job, outcome: Outcome) -> None:
        """Store ``outcome`` (``write_outcome``) and note that it is."""
        self.write_outcome(held, job, outcome)
        held.stored = True

    def once(self, held: _Held, write: Callable[[], _T]) -> _T | None:
        """Settle ``held`` with ``write`` (it stores the outcome), the first time only: None after.

        The one frame of every settle (``settle``, and the chained settle-and-claim of
        ``claims.TransactionClaims.chain``): under the claim's lock, the lost attempt's counter
        read first (``collect_count``), and whatever ``write`` does, the claim ended (``done``).
        """
        with held.lock:
            if held.settled:
                return None
            held.settled = True
            try:
                self.collect_count(held)
                return write()
            finally:
                self.done(held)

    def done(self, held: _Held) -> None:
        """After a settle (called with ``held.lock``): forget the claim; return its connection if
        the runtime released it, else close it to a handler that may still run."""
        self.forget(held)
        if held.released:
            self.give_back(held)
        elif held.interrupted:
            # The handler may still run: close its transaction to it, so its later statements
            # fail instead of running outside the job's transaction.
            close_under_handler(held)

    def interrupt(self, held: _Held) -> None:
        """``Backend.interrupt``: cancel the handler's running statement; never raises."""
        held.interrupted = True
        conn = held.conn
        if conn.closed or held.settled:
            return
        try:
            conn.cancel_safe(timeout=min(5.0, self._connect_timeout))
        except Exception as exc:  # interrupt must not raise; settle copes with a live statement
            logger.debug("neoq: cancelling the statement of job %s failed: %s", held.job_id, exc)

    def release(self, held: _Held) -> None:
        """``Backend.release``: the runtime is done with the claim; never raises."""
        try:
            with held.lock:
                held.released = True
                if held.settled:
                    self.give_back(held)
                # Else an outside settle is on its way; it returns the connection when done.
        except Exception:  # release must not raise
            logger.exception("neoq: releasing the connection of job %s failed", held.job_id)

    def give_back(self, held: _Held) -> None:
        """Return the claim's connection to the pool, exactly once, clean (with ``held.lock``).

        A claim that ends without its outcome stored (the settle failed, or never came) leaves
        its job due again, and no notification says so: its queue is signalled.
        """
        if held.returned:
            return
        held.returned = True
        _drop_count(held)
        conn = held.conn
        if not conn.closed and conn.info.transaction_status != pq.TransactionStatus.IDLE:
            try:
                conn.rollback()
            except psycopg.Error:
                _close_quietly(conn)
        self.putconn(conn)
        if not held.stored:
            self.signal(held.queue)

    def putconn(self, conn: Conn) -> None:
        """Give a worker connection back to the current pool (or close it: closed, or another open())."""
        pools = self.pools()
        if pools is None:
            _close_quietly(conn)
            return
        try:
            pools.work.putconn(conn)
        except Exception:  # a closed pool, or a connection of an earlier open(): just close it
            _close_quietly(conn)

    # -- writing outcomes ----------------------------------------------------------------

    def processed(self, job: Job, held: _Held, result: str | None = None) -> _Command:
        """The statement that stores PROCESSED for ``job`` and counts its attempt: the short one,
        unless the handler returned a result or a cancellation request for it reached this process
        (the full settle stores the result and removes the request)."""
        hot = self._hot
        job_id = job.id or "0"
        if result is not None or self._cancel_seen(job_id):
            params = settle_params(job, Outcome(JobStatus.PROCESSED, result=result), held)
            return (hot.settle, tuple(_wire_text(params[name]) for name in _PREPARED["settle"][2]), hot.prepared)
        ran_at = held.ran_at
        assert ran_at is not None
        return (hot.settle_processed, (job_id.encode(), ran_at.isoformat().encode()), hot.prepared)

    def write_outcome(self, held: _Held, job: Job, outcome: Outcome) -> None:
        """Store ``outcome`` and the attempt in the claim's transaction and commit it."""
        conn = held.conn
        params = settle_params(job, outcome, held)
        doing = f"settling job {job.id} as {outcome.status.value}"
        try:
            if conn.closed:
                raise BackendConnectionError(f"the connection of job {job.id} was closed before it was settled")
            status = conn.info.transaction_status
            if status == pq.TransactionStatus.IDLE:
                self._count_unsettled(conn, job, held)
                raise BackendError(
                    f"job {job.id}'s transaction was ended by its handler (handlers must not commit or roll back "
                    "job_context().transaction); the outcome is lost and the job will run again"
                )
            if outcome.status is JobStatus.PROCESSED:
                if status == pq.TransactionStatus.INERROR:
                    raise BackendError(
                        f"job {job.id}'s handler returned with its transaction in error, so its writes cannot "
                        "commit; the job will run again"
                    )
                # The outcome and the commit in one round trip, through the prepared statement.
                # The savepoint is released first, so that the job row is updated by the transaction
                # that locked it. Updated inside the savepoint's subtransaction, the row's old version
                # gets a MultiXact as its xmax (the parent's lock and the child's update), which every
                # claim whose index scan passes it has to look up: claims under concurrency slowed down.
                commands: tuple[_Command, ...] = (
                    (_RELEASE_SAVEPOINT_B, None, False),
                    self.processed(job, held, outcome.result),
                    (_COMMIT, None, False),
                )
                _exchange(conn, commands)
                return
            if held.interrupted:
                self._write_outcome_from_outside(held, params)
                return
            # A failure: undo the handler's writes, keep the claim's lock, record the outcome.
            for attempt in range(3):
                try:
                    with conn.pipeline():
                        conn.execute(_ROLLBACK_TO_SAVEPOINT)
                        conn.execute(QUERIES["settle"], params)
                        conn.commit()
                    return
                except pg_errors.QueryCanceled:
                    # interrupt()'s cancel request can land after the handler's statement ended,
                    # on ours instead; the savepoint is still there, so do it again.
                    if not held.interrupted or attempt == 2:
                        raise
        except psycopg.Error as exc:
            with suppress(psycopg.Error):
                if not conn.closed:
                    conn.rollback()
            raise self._wrap(exc, doing) from exc
        except NeoqError:
            with suppress(psycopg.Error):
                if not conn.closed:
                    conn.rollback()
            raise

    def _count_unsettled(self, conn: Conn, job: Job, held: _Held) -> None:
        """Count the attempt of a handler that ended the claim's transaction itself: no settle will."""
        try:
            conn.execute(QUERIES["count_unsettled"], {"id": int(job.id or 0), "ran_at": held.ran_at})
            conn.commit()
        except psycopg.Error as exc:
            logger.warning(
                "neoq: the attempt of job %s could not be counted: %s", job.id, self._scrub(str(exc).strip())
            )
            with suppress(psycopg.Error):
                conn.rollback()

    def _write_outcome_from_outside(self, held: _Held, params: dict[str, Any]) -> None:
        """Undo the handler's writes, store the outcome, commit and close, under one hold of the lock.

        The handler may still be running: holding the connection's lock from the rollback to
        the close means none of its later statements can run in between (in a new transaction
        after the commit); once the lock is free, the connection is closed and they fail.
        """
        hot = self._hot
        args = tuple(_wire_text(params[name]) for name in _PREPARED["settle"][2])
        commands: tuple[_Command, ...] = (
            (_ROLLBACK_TO_SAVEPOINT_B, None, False),
            (hot.settle, args, hot.prepared),
            (_COMMIT, None, False),
        )
        for attempt in range(3):
            try:
                _exchange(held.conn, commands, close_after=True)
                return
            except pg_errors.QueryCanceled:
                # interrupt()'s cancel request can land after the handler's statement ended, on
                # ours instead; the savepoint is still there, so do it again.
                if attempt == 2:
                    raise

    def settle_unrun(self, held: _Held, job: Job) -> None:
        """A claimed job with a pending cancellation: store CANCELLED and end the claim."""
        conn = held.conn
        held.settled = held.released = held.returned = True
        self.forget(held)
        try:
            with conn.pipeline():
                # Never started: not an attempt; an earlier one the claim saw lost is counted here.
                params = settle_params(job, Outcome(JobStatus.CANCELLED, job.error), held, counted=int(held.lost))
                conn.execute(QUERIES["settle"], params)
                conn.commit()
        except psycopg.Error as exc:
            _close_quietly(conn)
            self.putconn(conn)
            raise self._wrap(exc, f"cancelling job {job.id}") from exc
        logger.info("neoq: job %s queue=%r was cancelled before it could start", job.id, job.queue)
        self.putconn(conn)

    # -- counting attempts that ended without a settle ---------------------------------------

    def send_count(self, pools: _Pools, held: _Held) -> None:
        """Count the lost attempt the claim saw, on a second connection, before the handler runs.

        The attempt this claim runs is counted by its settle, in the claim's transaction; an
        earlier one that ended without a settle cannot be: if this attempt died too, a count
        written in its transaction would vanish with it, and the trace this claim's lock
        replaced would be gone, so a job that kills every worker would never run out of
        attempts. So it is counted in a transaction of its own on a connection of its own,
        committed whatever becomes of this worker: once its bytes are on the socket (flushed
        here, before the handler starts), the server runs and commits it even if this process
        is SIGKILLed the next instant. Its result is read only before the attempt is settled
        (``collect_count``), so the handler does not wait for that round trip.

        Committed with synchronous_commit off: it has to survive the *worker* dying, which it does
        once the server has it. Only a crash of the server itself could lose it, and that also
        rolls back every running claim, so a job would at worst be counted one attempt short.
        """
        ran_at = held.ran_at
        assert ran_at is not None
        conn = pools.counters.get()
        hot = self._hot
        try:
            with conn.lock:
                _send(conn.pgconn, ((hot.counter, (held.job_id.encode(), ran_at.isoformat().encode()), hot.prepared),))
        except psycopg.Error as exc:
            _close_quietly(conn)
            raise self._wrap(exc, f"counting an attempt of job {held.job_id}") from exc
        except BaseException:
            _close_quietly(conn)
            raise
        held.counter = conn

    def collect_count(self, held: _Held) -> None:
        """Read the result of the attempt counter ``send_count`` sent, before the attempt is settled.

        A counter that failed is written again here, while this worker is alive; if that fails
        too, ``BackendError`` is raised: the caller then settles nothing, the claim's transaction
        (the handler's writes with it) is rolled back, and the job runs again.
        """
        conn = held.counter
        if conn is None:
            return
        held.counter = None
        try:
            with conn.lock:
                result = _receive(conn, 1)[0]
            if result.status == _FATAL_ERROR:
                raise _result_error(conn, result)
            value = result.get_value(0, 0)
            assert value is not None
            counted = int.from_bytes(value, "big", signed=True)
        except psycopg.Error as exc:
            _close_quietly(conn)
            logger.warning(
                "neoq: the attempt counter of job %s failed (%s); counting it again",
                held.job_id,
                self._scrub(str(exc).strip()),
            )
            counted = self._count_attempt(held)
        else:
            pools = self.pools()
            if pools is None:
                _close_quietly(conn)
            else:
                pools.counters.put(conn)
        if counted + 1 != held.attempts:
            logger.warning(
                "neoq: job %s ran as attempt %d but is at attempt %d: an attempt of a worker that died "
                "holding it was counted after this claim read the count",
                held.job_id,
                held.attempts,
                counted + 1,
            )

    def _count_attempt(self, held: _Held) -> int:
        """Count ``held``'s attempt on a counter connection, waiting for the result; raise BackendError."""
        pools = self.pools()
        if pools is None:
            raise BackendError(f"the attempt of job {held.job_id} could not be counted: the backend is closed")
        ran_at = held.ran_at
        params = (held.job_id.encode(), None if ran_at is None else ran_at.isoformat().encode())
        conn = pools.counters.get()
        try:
            hot = self._hot
            result = _exchange(conn, ((hot.counter, params, hot.prepared),))[0]
            value = result.get_value(0, 0)
            assert value is not None
        except psycopg.Error as exc:
            _close_quietly(conn)
            raise self._wrap(exc, f"counting an attempt of job {held.job_id} (it will run again)") from exc
        finally:
            pools.counters.put(conn)
        return int.from_bytes(value, "big", signed=True)
