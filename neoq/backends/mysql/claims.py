"""Transaction mode: a claim is a transaction that holds its job's row lock while the handler runs.

- **Claim** (``look``). On a worker connection (autocommit off, READ COMMITTED):
  ``SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1``; the row lock is the claim, and a dead worker's
  session takes it along at once. The attempt is counted on a second, autocommit connection
  (``neoq_attempts``: the claim's own transaction cannot commit before the handler ran), in one
  statement that also returns the count and records the claiming session as the holder; then a
  ``SAVEPOINT`` marks where the handler's writes begin. The handler gets the connection.
- **Settle** (``settle``), on the handler's thread: a failure rolls back to the savepoint; one
  multi-table UPDATE writes the outcome, bumps the fencing token and clears the holder; COMMIT.
- **Settle from outside** (timeout, deadline, cancellation, forced shutdown): ``interrupt`` kills
  the claim's session (the handler's writes roll back with it, its later statements fail), and
  ``settle`` writes the outcome on another connection, once the killed session's lock is gone,
  only if no other claim counted an attempt meanwhile.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pymysql

from ...errors import BackendError, NeoqError
from ...job import JobStatus
from ...waiting import Look
from ..base import Claim, Outcome
from .pools import Conn, Pool, wrap
from .rows import db_time, job_from_row
from .settings import MySQLSettings
from .store import Cursor, Runner

__all__ = ["Held", "TransactionClaims"]

logger = logging.getLogger(__name__)

_CLAIM = (
    "SELECT j.id, j.queue, j.fingerprint, j.payload, j.run_after, j.deadline, j.max_retries, j.retries,"
    " j.error, j.created_at, j.attempts, NULL, NULL, 'running',"
    " EXISTS (SELECT 1 FROM neoq_cancellations c WHERE c.job_id = j.id)"
    " FROM neoq_jobs j WHERE j.queue = %(queue)s AND j.status = 'new' AND j.run_after <= UTC_TIMESTAMP(6)"
    " ORDER BY j.run_after, j.id LIMIT 1 FOR UPDATE SKIP LOCKED;"
    # Where the handler's writes begin: a failure rolls back to it, keeping the claim's lock.
    " SAVEPOINT neoq_claim"
)
_IDLE = (
    "SELECT TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), MIN(n.run_after)),"
    " EXISTS (SELECT 1 FROM neoq_jobs b WHERE b.queue = %s AND b.status = 'new' AND b.run_after <= UTC_TIMESTAMP(6))"
    " FROM neoq_jobs n WHERE n.queue = %s AND n.status = 'new' AND n.run_after > UTC_TIMESTAMP(6)"
)
# LAST_INSERT_ID(expr) makes the statement's insert id the new count: counted and read in one trip.
_COUNT = (
    "INSERT INTO neoq_attempts (job_id, attempts, ran_at, holder) VALUES (%s, LAST_INSERT_ID(1), UTC_TIMESTAMP(6), %s)"
    " ON DUPLICATE KEY UPDATE attempts = LAST_INSERT_ID(attempts + 1), ran_at = UTC_TIMESTAMP(6),"
    " holder = VALUES(holder)"
)
#: The outcome's status, unless a retry meets a cancellation request: then CANCELLED.
_STATUS = (
    "IF(%(status)s = 'new' AND EXISTS (SELECT 1 FROM neoq_cancellations c WHERE c.job_id = %(id)s),"
    " 'cancelled', %(status)s)"
)
_SETTLE = (
    "UPDATE neoq_jobs j LEFT JOIN neoq_attempts a ON a.job_id = j.id"
    f" SET j.status = {_STATUS}, j.error = %(error)s, j.run_after = COALESCE(%(run_after)s, j.run_after),"
    " j.retries = COALESCE(%(retries)s, j.retries),"
    f" j.finished_at = IF({_STATUS} = 'new', NULL, UTC_TIMESTAMP(6)), j.lease_token = j.lease_token + 1,"
    " j.lease_owner = NULL, a.holder = NULL WHERE j.id = %(id)s"
)


@dataclass(eq=False)
class Held:
    """``Claim.token`` of a transaction-mode claim."""

    conn: Conn = field(repr=False)
    job_id: int
    queue: str
    #: The claim's session on the server (``CONNECTION_ID()``), to kill it from outside.
    session: int
    #: The attempt count this claim made: a settle from outside writes only while it still stands.
    attempt: int
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    settled: bool = False
    interrupted: bool = False
    broken: bool = False
    #: The connection went on to the next claim of a chained settle (``chain``): not released with this one.
    conn_passed: bool = False


class TransactionClaims:
    """Claims of the transaction mode: worker connections from ``work``, counting on ``aux``'s."""

    def __init__(
        self,
        settings: MySQLSettings,
        work: Pool,
        aux: Runner,
        *,
        signal: Callable[[str], None],
        register: Callable[[Held], None],
        forget: Callable[[Held], None],
    ) -> None:
        self._settings = settings
        self._work = work
        self._aux = aux
        self._signal = signal
        self._register = register
        self._forget = forget

    def _wrap(self, exc: BaseException, doing: str) -> BackendError:
        return wrap(self._settings, exc, doing)

    def look(self, queue: str) -> Look[Claim]:
        """A claim on a worker connection from the pool, or what the queue holds (``Backend.look``)."""
        for _ in range(20):  # a job whose cancellation was requested is ended here and the next looked at
            conn = self._work.get()
            try:
                found = self._claim(conn, queue, "", 0)
            except BaseException:
                self._work.put(conn, broken=True)
                raise
            if found is None or found.claim is None:
                self._work.put(conn)
                if found is None:
                    continue
                return found
            return found
        return Look(due_in=0.0)

    def chain(self, claim: Claim, held: Held, outcome: Outcome, queue: str) -> Look[Claim] | None:
        """Settle a processed attempt and claim ``queue``'s next job on the same connection, in one round
        trip (UPDATE; COMMIT; the claim; SAVEPOINT); the connection passes to the new claim."""
        with held.lock:
            if held.settled or held.interrupted:
                return None
            held.settled = True
        self._forget(held)
        conn = held.conn
        params = _settle_params(held.job_id, outcome)
        try:
            sql = _settle_sql(outcome) + "; COMMIT; "
            found = self._claim(conn, queue, sql % _escaped(conn, params), sql.count(";"))
        except BaseException:
            held.broken = True
            raise
        held.conn_passed = found is not None and found.claim is not None
        if found is None:  # the chained claim found a cancelled job: the loop claims as usual
            return Look(due_in=0.0)
        return found

    def _claim(self, conn: Conn, queue: str, prefix: str, statements: int) -> Look[Claim] | None:
        """Run ``prefix`` (``statements`` escaped statements: a settle and COMMIT, or nothing), then the
        claim, in one round trip."""
        try:
            with conn.cursor() as cur:
                cur.execute(prefix + _CLAIM % _escaped(conn, {"queue": queue}))
                _skip(cur, statements)
                row = cur.fetchone()
                cur.nextset()  # the SAVEPOINT
                if row is None:
                    cur.execute(_IDLE, (queue, queue))
                    idle = cur.fetchone()
                    conn.rollback()
                    due_in = None if idle is None or idle[0] is None else max(0.0, int(idle[0]) / 1e6)
                    return Look(due_in=due_in, held=bool(idle and idle[1]))
                job_id = int(row[0])
                session = int(conn.thread_id())  # type: ignore[no-untyped-call]
                counted = self._aux.run("counting an attempt", lambda aux: _count(aux, job_id, session), write=False)
        except NeoqError:
            raise
        except (pymysql.err.MySQLError, OSError) as exc:
            raise self._wrap(exc, f"claiming a job of queue {queue!r}") from exc
        job = job_from_row(row, JobStatus.RUNNING)
        job = dataclasses.replace(job, attempts=job.attempts + counted, ran_at=datetime.now(timezone.utc))
        held = Held(conn, job_id, queue, session, counted)
        claim = Claim(job, conn, held)
        if row[14]:  # cancelled while it waited (or while a dead worker held it): never run
            self._settle_here(held, Outcome(JobStatus.CANCELLED, job.error))
            held.settled = True
            return None
        self._register(held)
        return Look(claim)

    def settle(self, claim: Claim, outcome: Outcome) -> None:
        held: Held = claim.token
        with held.lock:
            if held.settled:
                return
            held.settled = True
            outside = held.interrupted
        try:
            if outside:
                self._settle_outside(held, outcome)
            else:
                self._settle_here(held, outcome)
        finally:
            self._forget(held)
        if outcome.status is JobStatus.NEW:
            self._signal(held.queue)

    def _settle_here(self, held: Held, outcome: Outcome) -> None:
        """The outcome, in the claim's transaction, and COMMIT: one round trip."""
        conn = held.conn
        try:
            with conn.cursor() as cur:
                sql = _settle_sql(outcome) + "; COMMIT"
                cur.execute(sql % _escaped(conn, _settle_params(held.job_id, outcome)))
                _skip(cur, sql.count(";"))
        except (pymysql.err.MySQLError, OSError) as exc:
            held.broken = True
            try:
                conn.rollback()
            except Exception:  # gone: the server rolled back
                pass
            raise self._wrap(exc, f"settling job {held.job_id}") from exc

    def _settle_outside(self, held: Held, outcome: Outcome) -> None:
        def write(cur: Cursor) -> None:
            cur.execute("SELECT id FROM neoq_jobs WHERE id = %s FOR UPDATE", (held.job_id,))  # the killed lock is gone
            cur.execute("SELECT attempts FROM neoq_attempts WHERE job_id = %s", (held.job_id,))
            row = cur.fetchone()
            if row is None or int(row[0]) != held.attempt:
                return  # claimed again meanwhile: that claim decides (this attempt stays counted)
            sql = _settle_sql(outcome).replace("ROLLBACK TO SAVEPOINT neoq_claim; ", "")
            for statement in sql.split("; "):
                cur.execute(statement, _settle_params(held.job_id, outcome))

        self._aux.run(f"settling job {held.job_id} from outside its transaction", write)

    def interrupt(self, held: Held) -> None:
        """Kill the claim's session: its statement stops, its transaction rolls back, its lock goes."""
        with held.lock:
            if held.settled or held.interrupted:
                return
            held.interrupted = True
            held.broken = True
        try:
            self._aux.run("interrupting an attempt", lambda cur: cur.execute(f"KILL {int(held.session)}"), write=False)
        except NeoqError as exc:
            logger.warning("neoq: could not end the session of job %s queue=%r: %s", held.job_id, held.queue, exc)

    def release(self, held: Held) -> None:
        if held.conn_passed:
            return
        if not held.settled:
            held.broken = True  # an unsettled claim: its transaction must not be reused
        self._forget(held)
        if held.broken:
            self._work.put(held.conn, broken=True)
            return
        self._work.put(held.conn)


def _count(cur: Cursor, job_id: int, session: int) -> int:
    cur.execute(_COUNT, (job_id, session))
    return int(cur.lastrowid)


def _settle_sql(outcome: Outcome) -> str:
    """The statements (``;``-separated, named parameters) that store ``outcome`` in the claim's transaction."""
    if outcome.status is JobStatus.PROCESSED:
        return _SETTLE
    # A failure: the handler's writes go, the claim's lock stays; a waiting cancellation request is used up.
    return "ROLLBACK TO SAVEPOINT neoq_claim; " + _SETTLE + "; DELETE FROM neoq_cancellations WHERE job_id = %(id)s"


def _settle_params(job_id: int, outcome: Outcome) -> dict[str, Any]:
    return {
        "id": job_id,
        "status": outcome.status.value,
        "error": None if outcome.status is JobStatus.PROCESSED else outcome.error,
        "run_after": db_time(outcome.run_after),
        "retries": outcome.retries,
    }


def _escaped(conn: Conn, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` as SQL literals (PyMySQL's escaping, as ``execute`` does it), for a multi-statement text."""
    return {key: conn.escape(value) for key, value in params.items()}


def _skip(cur: Cursor, results: int) -> None:
    """Read past the results of the first ``results`` statements of a multi-statement text."""
    for _ in range(results):
        cur.nextset()
