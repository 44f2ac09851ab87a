"""Transaction mode: a claim is a transaction that holds its job's row lock while the handler runs.

- **Claim** (``look``). On a worker connection (autocommit off, READ COMMITTED):
  ``SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1``; the row lock is the claim, and a dead worker's
  session takes it along at once. Then, in a second round trip, the claim leaves a **marker** in
  ``neoq_claims`` (a MEMORY table: written at once, never rolled back, no commit to wait for)
  naming its session, and a ``SAVEPOINT`` marks where the handler's writes begin.
- **Attempts survive crashes without a second commit per job.** The settle counts the attempt
  (``attempts + 1``) in the claim's own transaction and removes the marker just before COMMIT, in
  the same round trip. An attempt that ended without a settle (its worker died, its session was
  killed) leaves its marker behind, and only such an attempt does: the next claim of the job finds
  it while holding the job's lock, counts that attempt durably on another connection
  (``neoq_attempts``), and goes on, so a job that kills every worker still ends FAILED. A marker
  whose session is alive is what makes a read report the job RUNNING (``rows.STATE``).
- **Settle** (``settle``), on the handler's thread: a failure rolls back to the savepoint; the
  outcome, the marker's removal and COMMIT go in one round trip; a processed attempt's settle and
  the next claim of its loop share that round trip and the connection (``chain``).
- **Settle from outside** (timeout, deadline, cancellation, forced shutdown): ``interrupt`` kills
  the claim's session (the handler's writes roll back with it, its later statements fail), and
  ``settle`` writes the outcome on another connection once the killed session's lock is gone, only
  while the marker is still that session's (else another claim took the job and counted it).

The MEMORY marker is lost if the server itself restarts: an attempt in progress then goes
uncounted (docs/mysql.md).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pymysql

from ...errors import BackendError, NeoqError
from ...job import Job, JobStatus
from ...waiting import Look
from ..base import Claim, Outcome
from .pools import Conn, Pool, wrap
from .rows import db_time
from .settings import MySQLSettings
from .store import Cursor, Runner, probe, row_of, skip

__all__ = ["Held", "TransactionClaims"]

logger = logging.getLogger(__name__)

#: KILL of a session that ended meanwhile.
_ER_NO_SUCH_THREAD = 1094

# One round trip: the claim names the job it locked in a session variable, and its marker is
# written for that job; a dead attempt's marker is kept (INSERT IGNORE) for the claim to count.
_CLAIM = (
    "SET @neoq_claimed = NULL;"
    # Three columns: each costs PyMySQL a packet to parse (much of a claim's CPU). The first is the
    # fields joined by '|' (none holds one; the queue is the one claimed), then the fingerprint
    # (at most 1,024 bytes, it may hold a '|'); the error and the payload are as large as stored.
    " SELECT CONCAT(CONCAT_WS('|', @neoq_claimed := j.id, j.run_after, IFNULL(j.deadline, ''),"
    " IFNULL(j.max_retries, ''), j.retries,"
    " j.attempts + COALESCE((SELECT a.attempts FROM neoq_attempts a WHERE a.job_id = j.id), 0), j.created_at,"
    " EXISTS (SELECT 1 FROM neoq_cancellations c WHERE c.job_id = j.id),"
    " IFNULL((SELECT m.ran_at FROM neoq_claims m WHERE m.job_id = j.id), ''), UTC_TIMESTAMP(6), j.priority, j.snoozes),"
    " '|', j.fingerprint), j.error, j.payload"
    " FROM neoq_jobs j WHERE j.queue = %(queue)s AND j.status = 'new' AND j.run_after <= UTC_TIMESTAMP(6)"
    " AND NOT EXISTS (SELECT 1 FROM neoq_queue_pauses p WHERE p.queue = j.queue)"  # flow.py: paused
    # An attempt being ended from outside: its outcome is on its way (see _FENCE).
    " AND NOT EXISTS (SELECT 1 FROM neoq_claims f WHERE f.job_id = j.id"
    " AND f.fenced_at > UTC_TIMESTAMP(6) - INTERVAL 30 SECOND)"
    " ORDER BY j.priority DESC, j.run_after, j.id LIMIT 1 FOR UPDATE SKIP LOCKED;"
    " INSERT IGNORE INTO neoq_claims (job_id, holder, ran_at)"
    " SELECT @neoq_claimed, CONNECTION_ID(), UTC_TIMESTAMP(6) FROM DUAL WHERE @neoq_claimed IS NOT NULL;"
    # Where the handler's writes begin: a failure rolls back to it, keeping the claim's lock.
    " SAVEPOINT neoq_claim"
)
#: Before its session is killed, an attempt ended from outside is fenced: no claim takes its job
#: (freed by the kill) until the outcome is written, or for 30 s if that never happens.
_FENCE = "UPDATE neoq_claims SET holder = 0, fenced_at = UTC_TIMESTAMP(6) WHERE job_id = %s AND holder = %s"
#: The claim's marker in place of a dead attempt's, once that attempt is counted.
_MARK = "REPLACE INTO neoq_claims (job_id, holder, ran_at) VALUES (%s, CONNECTION_ID(), UTC_TIMESTAMP(6))"
_IDLE = (
    "SELECT TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), MIN(n.run_after)),"
    " EXISTS (SELECT 1 FROM neoq_jobs b WHERE b.queue = %s AND b.status = 'new' AND b.run_after <= UTC_TIMESTAMP(6))"
    " FROM neoq_jobs n WHERE n.queue = %s AND n.status = 'new' AND n.run_after > UTC_TIMESTAMP(6)"
)
#: An attempt whose worker died, counted by the next claim of its job (autocommit, another connection).
_COUNT_LOST = (
    "INSERT INTO neoq_attempts (job_id, attempts, ran_at) VALUES (%s, 1, %s)"
    " ON DUPLICATE KEY UPDATE attempts = attempts + 1, ran_at = VALUES(ran_at)"
)
#: The outcome's status, unless a retry meets a cancellation request: then CANCELLED.
_STATUS = (
    "IF(%(status)s = 'new' AND EXISTS (SELECT 1 FROM neoq_cancellations c WHERE c.job_id = %(id)s),"
    " 'cancelled', %(status)s)"
)
# Assigned left to right: traceback is decided before error changes (no traceback with the error
# unchanged, as a cancellation or a put-back sends, keeps the stored one).
_SETTLE = (
    "UPDATE neoq_jobs SET traceback = IF(%(traceback)s IS NULL AND %(error)s <=> error, traceback, %(traceback)s),"
    f" status = {_STATUS}, error = %(error)s, result = NULL, run_after = COALESCE(%(run_after)s, run_after),"
    " retries = COALESCE(%(retries)s, retries), snoozes = snoozes + %(snoozed)s,"
    f" finished_at = IF({_STATUS} = 'new', NULL, UTC_TIMESTAMP(6)), lease_token = lease_token + 1,"
    " lease_owner = NULL, attempts = attempts + %(counted)s, ran_at = COALESCE(%(ran_at)s, ran_at)"
    " WHERE id = %(id)s"
)

#: A progress report, fenced by the claim's marker.
_PROGRESS = (
    "INSERT INTO neoq_progress (job_id, fraction, note, updated_at)"
    " SELECT %s, %s, %s, UTC_TIMESTAMP(6) FROM neoq_claims WHERE job_id = %s AND holder = %s"
    " ON DUPLICATE KEY UPDATE fraction = VALUES(fraction), note = VALUES(note), updated_at = VALUES(updated_at)"
)
#: A processed attempt: no status to decide, no request to use up.
_PROCESSED = (
    "UPDATE neoq_jobs SET status = 'processed', error = NULL, traceback = NULL, result = %(result)s,"
    " finished_at = UTC_TIMESTAMP(6),"
    " lease_token = lease_token + 1, lease_owner = NULL, attempts = attempts + %(counted)s,"
    " ran_at = COALESCE(%(ran_at)s, ran_at) WHERE id = %(id)s"
)


@dataclass(eq=False)
class Held:
    """``Claim.token`` of a transaction-mode claim."""

    conn: Conn = field(repr=False)
    job_id: int
    queue: str
    #: The claim's session on the server (``CONNECTION_ID()``): its marker's holder, killed from outside.
    session: int
    #: When the attempt started (the marker's time), written with the outcome.
    ran_at: datetime | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    settled: bool = False
    interrupted: bool = False
    broken: bool = False
    #: ``release`` came before the settle: the settle gives the connection back.
    released: bool = False
    #: ``interrupt`` fenced the job (its marker's holder is 0) before killing the session.
    fenced: bool = False
    #: The connection went on to the next claim of a chained settle (``chain``): not released with this one.
    conn_passed: bool = False


class TransactionClaims:
    """Claims of the transaction mode: worker connections from ``work``, short statements on ``aux``'s."""

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
        #: The claim's text for each queue, its name escaped once (every connection is utf8mb4).
        self._claims: dict[str, str] = {}

    def set_claim(self, queue: str, text: str) -> None:
        """Claim ``queue``'s jobs with ``text``, ``_CLAIM``'s statements changed (flow.py: a global limit)."""
        self._claims[queue] = text

    def _wrap(self, exc: BaseException, doing: str) -> BackendError:
        return wrap(self._settings, exc, doing)

    def look(self, queue: str) -> Look[Claim]:
        """A claim on a worker connection from the pool, or what the queue holds (``Backend.look``).

        An idle queue is looked at every poll_interval: one autocommit read on the pool says whether
        anything is due before a worker connection begins a locking transaction.
        """
        due, next_due = self._aux.run(f"looking at queue {queue!r}", lambda cur: probe(cur, queue), write=False)
        if not due:
            return Look(due_in=next_due)
        for _ in range(20):  # a job whose cancellation was requested is ended here and the next looked at
            conn = self._work.get()
            try:
                found = self._claim(conn, queue, "", 0)
            except BaseException:
                self._work.put(conn, broken=True)
                raise
            if found is not None and found.claim is not None:
                return found
            self._work.put(conn)
            if found is not None:
                return found
        return Look(due_in=0.0)

    def chain(self, held: Held, outcome: Outcome, queue: str) -> Look[Claim] | None:
        """Settle a processed attempt and claim ``queue``'s next job on the same connection: the
        outcome, COMMIT and the claim in one round trip; the connection passes to the new claim."""
        with held.lock:
            if held.settled or held.interrupted:
                return None
            held.settled = True
        self._forget(held)
        conn = held.conn
        # The common case (a processed attempt), with only its own values escaped.
        settle = _PROCESSED_CHAIN % {
            "id": held.job_id,
            "counted": 1,
            "ran_at": conn.escape(db_time(held.ran_at)),
            "result": conn.escape(outcome.result),
        }
        try:
            found = self._claim(conn, queue, settle, _PROCESSED_CHAIN_STATEMENTS)
        except BaseException:
            held.broken = True
            raise
        held.conn_passed = found is not None and found.claim is not None
        return Look(due_in=0.0) if found is None else found  # None: a cancelled job was ended; look again

    def _claim(self, conn: Conn, queue: str, prefix: str, statements: int) -> Look[Claim] | None:
        """Run ``prefix`` (``statements`` escaped statements: a settle and COMMIT, or nothing) and the
        claim in one round trip; then mark the claim. None: the job found was cancelled unrun."""
        try:
            claim = self._claims.get(queue)
            if claim is None:
                claim = self._claims[queue] = _CLAIM % {"queue": conn.escape(queue)}
            row = row_of(conn, prefix + claim, statements + 1, 2)  # after: the marker, the SAVEPOINT
            if row is None:
                with conn.cursor() as cur:
                    cur.execute(_IDLE, (queue, queue))
                    idle = cur.fetchone()
                conn.rollback()
                due_in = None if idle is None or idle[0] is None else max(0.0, int(idle[0]) / 1e6)
                return Look(due_in=due_in, held=bool(idle and idle[1]))
            # id, run_after, deadline, max_retries, retries, attempts, created_at, cancelled, lost, now,
            # priority, snoozes, fingerprint
            packed = _text(row[0]).split("|", 12)
            job_id = int(packed[0])
            lost = packed[8] or None
            if lost:  # an attempt ended without a settle: count it durably, then mark this one
                self._aux.run("counting a lost attempt", lambda aux: aux.execute(_COUNT_LOST, (job_id, lost)))
                with conn.cursor() as cur:
                    cur.execute(_MARK, (job_id,))
            session = int(conn.thread_id())  # type: ignore[no-untyped-call]
            held = Held(conn, job_id, queue, session)  # the row's queue is the one claimed (a binary match)
            if packed[7] == "1":  # cancelled while it waited (or while a dead worker held it): never run
                self._settle_here(held, Outcome(JobStatus.CANCELLED, row[1]), counted=0)
                held.settled = True
                return None
        except NeoqError:
            raise
        except (pymysql.err.MySQLError, OSError) as exc:
            raise self._wrap(exc, f"claiming a job of queue {queue!r}") from exc
        held.ran_at = now = _time(packed[9])  # the server's clock, as finished_at will be
        job = Job(
            id=str(job_id),
            queue=queue,
            fingerprint=packed[12],
            payload=_decode(row[2]),
            error=row[1],
            run_after=_time(packed[1]),
            deadline=_time(packed[2]) if packed[2] else None,
            max_retries=int(packed[3]) if packed[3] else None,
            retries=int(packed[4]),
            attempts=int(packed[5]) + (1 if lost else 0) + 1,
            created_at=_time(packed[6]),
            ran_at=now,
            status=JobStatus.RUNNING,
            priority=int(packed[10]),
            snoozes=int(packed[11]),
        )
        self._register(held)
        return Look(Claim(job, conn, held))

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
            if held.released:  # released before this settle: the connection comes back now
                self._work.put(held.conn, broken=held.broken)
        if outcome.status is JobStatus.NEW:
            self._signal(held.queue)

    def _settle_here(self, held: Held, outcome: Outcome, *, counted: int = 1) -> None:
        """The outcome, the marker's removal and COMMIT, in the claim's transaction: one round trip."""
        conn = held.conn
        try:
            sql = _settle_sql(outcome) + "; COMMIT"
            conn.query(sql % _escaped(conn, _settle_params(held, outcome, counted)))
            skip(conn, sql.count(";") - 1)
            conn.next_result()
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
            cur.execute("SELECT holder FROM neoq_claims WHERE job_id = %s", (held.job_id,))
            row = cur.fetchone()
            if row is None or int(row[0]) != (0 if held.fenced else held.session):
                return  # claimed again meanwhile (the fence expired): that claim counted this attempt and decides
            statements = _settle_sql(outcome).replace("ROLLBACK TO SAVEPOINT neoq_claim; ", "")
            for statement in statements.split("; "):
                cur.execute(statement, _settle_params(held, outcome))

        self._aux.run(f"settling job {held.job_id} from outside its transaction", write)

    def progress(self, held: Held, fraction: float, note: str | None) -> None:
        """A progress report on the pool (the claim's transaction holds the row), only while the claim's
        marker still names its session."""
        if held.settled or held.interrupted:
            return
        self._aux.run(
            "storing a progress report",
            lambda cur: cur.execute(_PROGRESS, (held.job_id, fraction, note, held.job_id, held.session)),
            write=False,
        )

    def interrupt(self, held: Held) -> None:
        """Kill the claim's session: its statement stops, its transaction rolls back, its lock goes."""
        with held.lock:
            if held.settled or held.interrupted:
                return
            held.interrupted = True
            held.broken = True
        try:
            fenced = self._aux.run(
                "fencing an attempt", lambda cur: cur.execute(_FENCE, (held.job_id, held.session)), write=False
            )
            held.fenced = bool(fenced)
            self._aux.run("interrupting an attempt", _kill(held.session), write=False)
        except NeoqError as exc:
            logger.warning("neoq: could not end the session of job %s queue=%r: %s", held.job_id, held.queue, exc)

    def release(self, held: Held) -> None:
        """Give the claim's connection back; an unsettled claim's waits for its settle.

        The runtime tells a handler to stop before it interrupts and settles its attempt, so the
        handler may return and its claim be released first: closing the connection then would free
        the job for a claim before the outcome is fenced and written.
        """
        if held.conn_passed:
            return
        with held.lock:
            if not held.settled:
                held.released = True  # settle() gives the connection back
                return
        self._forget(held)
        self._work.put(held.conn, broken=held.broken)


def _kill(session: int) -> Callable[[Cursor], None]:
    def kill(cur: Cursor) -> None:
        try:
            cur.execute(f"KILL {int(session)}")
        except pymysql.err.MySQLError as exc:
            if not exc.args or exc.args[0] != _ER_NO_SUCH_THREAD:
                raise  # else the session is gone already: its transaction rolled back

    return kill


def _settle_sql(outcome: Outcome) -> str:
    """The statements (``;``-separated, named parameters) that store ``outcome`` in the claim's transaction."""
    done = "; DELETE FROM neoq_claims WHERE job_id = %(id)s"
    if outcome.status is JobStatus.PROCESSED:
        return _PROCESSED + done
    # A failure: the handler's writes go, the claim's lock stays; a waiting cancellation request is used up.
    return (
        "ROLLBACK TO SAVEPOINT neoq_claim; " + _SETTLE + "; DELETE FROM neoq_cancellations WHERE job_id = %(id)s" + done
    )


#: A processed attempt's settle, COMMIT, then a chained claim (``chain``): the statements before the claim.
_PROCESSED_CHAIN = (
    (_PROCESSED + "; DELETE FROM neoq_claims WHERE job_id = %(id)s; COMMIT; ")
    .replace("%(id)s", "%(id)d")
    .replace("%(counted)s", "%(counted)d")
)
_PROCESSED_CHAIN_STATEMENTS = _PROCESSED_CHAIN.count(";")


def _settle_params(held: Held, outcome: Outcome, counted: int = 1) -> dict[str, Any]:
    return {
        "id": held.job_id,
        "status": outcome.status.value,
        "error": None if outcome.status is JobStatus.PROCESSED else outcome.error,
        "run_after": db_time(outcome.run_after),
        "retries": outcome.retries,
        "counted": counted,
        "snoozed": int(outcome.snoozed),
        "ran_at": db_time(held.ran_at),
        "result": outcome.result if outcome.status is JobStatus.PROCESSED else None,
        "traceback": None if outcome.status is JobStatus.PROCESSED else outcome.traceback,
    }


def _escaped(conn: Conn, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` as SQL literals (PyMySQL's escaping, as ``execute`` does it), for a multi-statement text."""
    return {key: conn.escape(value) for key, value in params.items()}


_decode = json.JSONDecoder().decode


def _time(text: str) -> datetime:
    """A DATETIME(6) as MySQL writes it in text (``2026-01-02 03:04:05.000006``), as aware UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, (bytes, bytearray)) else str(value)
