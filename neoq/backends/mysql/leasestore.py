"""MySQL's ``LeaseStore``: what the shared lease engine (``neoq.backends.lease``) needs, in short transactions.

A lease is (``run_after`` = its expiry, ``lease_token`` = the fencing token, ``lease_owner``) on a
job that stays ``new``, so the unique index still covers it and a job whose lease expired is
simply due again, for any process. Each call is one transaction on the backend's pool:

- ``fetch``: ``SELECT ... FOR UPDATE SKIP LOCKED LIMIT n`` (rows a transaction-mode claim holds
  are skipped), then one UPDATE leases them and counts their attempts (``attempts + 1``), one
  SELECT reads them back; or, when none is due, one SELECT says when the next comes due.
- ``settle_many``: every outcome of a batch in one UPDATE joined to a derived table, fenced by
  token (the rows to write are locked first: they are the keys written).
- ``renew``: the leases past a third of their time, rows locked elsewhere skipped; reports the
  leases lost with their job's status (``cancelled``: ``cancel_job`` reached it, in the row or,
  when it found the row locked for a moment, as a request).
- ``give_back``: unstarted leased jobs due again as before, attempts uncounted.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timezone
from typing import Any

from ...job import JobStatus
from ..lease import Leased, LeaseToken, Lost, Settlement
from .rows import JOB_SELECT, db_time, job_from_row, utc
from .store import Cursor, Runner, probe

__all__ = ["MySQLLeaseStore"]

_UTC = timezone.utc


_ROW = (
    "SELECT CAST(%s AS UNSIGNED), CAST(%s AS SIGNED), %s, %s, CAST(%s AS DATETIME(6)), CAST(%s AS SIGNED),"
    " %s, %s, CAST(%s AS SIGNED), CAST(%s AS SIGNED)"
)
#: The derived table's first row names its columns (MariaDB 10.6 takes no column list after the alias).
_ROW_FIRST = (
    "SELECT CAST(%s AS UNSIGNED) AS id, CAST(%s AS SIGNED) AS token, %s AS status, %s AS error,"
    " CAST(%s AS DATETIME(6)) AS run_after, CAST(%s AS SIGNED) AS retries, %s AS result, %s AS traceback,"
    " CAST(%s AS SIGNED) AS keep, CAST(%s AS SIGNED) AS snoozed"
)
#: A progress report, fenced by the lease's token (a consistent read of the job row: no lock taken).
_PROGRESS = (
    "INSERT INTO neoq_progress (job_id, fraction, note, updated_at)"
    " SELECT %s, %s, %s, UTC_TIMESTAMP(6) FROM neoq_jobs WHERE id = %s AND lease_token = %s AND status = 'new'"
    " ON DUPLICATE KEY UPDATE fraction = VALUES(fraction), note = VALUES(note), updated_at = VALUES(updated_at)"
)


def _room(cur: Cursor, queue: str, global_limit: int, limit: int) -> int:
    """How many jobs of ``queue`` a fetch may lease under its global limit: the queue's slot 0 locked
    (fetches of the queue take turns across processes), its live leases counted (flow.py)."""
    cur.execute("SELECT slot FROM neoq_slots WHERE queue = %s AND slot = 0 FOR UPDATE", (queue,))
    cur.execute(
        "SELECT COUNT(*) FROM neoq_jobs WHERE queue = %s AND status = 'new' AND lease_owner IS NOT NULL"
        " AND run_after > UTC_TIMESTAMP(6)",
        (queue,),
    )
    row = cur.fetchone()
    return min(limit, global_limit - (int(row[0]) if row else 0))


def _marks(count: int) -> str:
    return ",".join(["%s"] * count)


class MySQLLeaseStore:
    """The lease mode's statements over the backend's pool. ``signal(queue)`` wakes this process's claims."""

    def __init__(self, runner: Runner, signal: Callable[[str], None]) -> None:
        self._runner = runner
        self._signal = signal
        #: The global limit (``Handler.global_limit``) of each queue that has one (flow.py).
        self.global_limits: dict[str, int] = {}

    def close(self) -> None:
        """Nothing of its own: the pool is the backend's."""

    def fetch(self, queue: str, limit: int, lease: float, owner: str) -> tuple[list[Leased], float | None, bool]:
        """Lease up to ``limit`` due jobs of ``queue``, counting their attempts; or say when the next is due."""

        global_limit = self.global_limits.get(queue)

        def lease_jobs(cur: Cursor) -> tuple[list[Leased], float | None, bool]:
            room = limit if global_limit is None else _room(cur, queue, global_limit, limit)
            if room <= 0:
                return [], None, True  # others run the most the limit allows: look again soon
            cur.execute(
                "SELECT id, run_after FROM neoq_jobs WHERE queue = %s AND status = 'new'"
                " AND run_after <= UTC_TIMESTAMP(6)"
                " AND NOT EXISTS (SELECT 1 FROM neoq_queue_pauses p WHERE p.queue = %s)"  # flow.py: paused
                " ORDER BY priority DESC, run_after, id LIMIT %s FOR UPDATE SKIP LOCKED",
                (queue, queue, int(room)),
            )
            picked = cur.fetchall()
            if not picked:  # due jobs were there a moment ago (the probe): others hold them
                return [], next_due, True
            ids = [row[0] for row in picked]
            due = {row[0]: utc(row[1]) for row in picked}
            marks = _marks(len(ids))
            cur.execute(
                "UPDATE neoq_jobs SET run_after = UTC_TIMESTAMP(6) + INTERVAL %s MICROSECOND,"
                " lease_token = lease_token + 1, lease_owner = %s, attempts = attempts + 1,"
                f" ran_at = UTC_TIMESTAMP(6) WHERE id IN ({marks})",
                [int(lease * 1e6), owner, *ids],
            )
            cur.execute(
                JOB_SELECT.replace(
                    " FROM neoq_jobs j",
                    ", j.lease_token,"
                    " EXISTS (SELECT 1 FROM neoq_cancellations c WHERE c.job_id = j.id) FROM neoq_jobs j",
                )
                + f" WHERE j.id IN ({marks})",
                ids,
            )
            rows = {row[0]: row for row in cur.fetchall()}
            leased: list[Leased] = []
            for job_id in ids:
                row = rows[job_id]
                job = job_from_row(row, JobStatus.RUNNING)
                leased.append((job, int(job_id), int(row[20]), due[job_id] or job.run_after, bool(row[21])))  # type: ignore[arg-type]
            return leased, None, False

        # An idle queue is looked at every poll_interval: one autocommit read says whether anything is
        # due (else when the next job comes due) before a locking transaction is begun.
        due, next_due = self._runner.run(f"looking at queue {queue!r}", lambda cur: probe(cur, queue), write=False)
        if not due:
            return [], next_due, False
        return self._runner.run(f"leasing jobs of queue {queue!r}", lease_jobs)

    def settle_many(self, batch: list[Settlement]) -> set[Any]:
        """Write ``batch``'s outcomes in one UPDATE, each fenced by its token; return the ids written."""
        fence: list[Any] = []
        retried: set[str] = set()
        for pending in batch:
            fence += (pending.lease.job_id, pending.lease.token)
            if pending.outcome.status is JobStatus.NEW:
                retried.add(pending.lease.queue)
        pairs = ",".join(["(%s,%s)"] * len(batch))

        def write(cur: Cursor) -> set[Any]:
            cur.execute(
                f"SELECT id, error FROM neoq_jobs WHERE (id, lease_token) IN ({pairs}) AND status = 'new' FOR UPDATE",
                fence,
            )
            stored = {int(row[0]): row[1] for row in cur.fetchall()}
            if not stored:
                return set()
            rows: list[str] = []
            params: list[Any] = []
            for pending in batch:
                lease, outcome = pending.lease, pending.outcome
                if lease.job_id not in stored:
                    continue
                retry = outcome.status is JobStatus.NEW
                processed = outcome.status is JobStatus.PROCESSED
                error = None if processed else outcome.error
                # No traceback with the error unchanged (a cancellation, a put-back) keeps the stored one.
                keep = not processed and outcome.traceback is None and error == stored[lease.job_id]
                rows.append(_ROW_FIRST if not rows else _ROW)
                params += (
                    lease.job_id,
                    lease.token,
                    outcome.status.value,
                    error,
                    db_time(outcome.run_after if retry and outcome.run_after else lease.due_at),
                    outcome.retries if retry else None,
                    outcome.result if processed else None,
                    None if processed else outcome.traceback,
                    int(keep),
                    int(outcome.snoozed),
                )
            cur.execute(
                "UPDATE neoq_jobs j JOIN ("
                + " UNION ALL ".join(rows)
                + ") AS t ON j.id = t.id AND j.lease_token = t.token SET j.status = t.status, j.error = t.error,"
                " j.traceback = IF(t.keep = 1, j.traceback, t.traceback), j.result = t.result,"
                " j.run_after = t.run_after, j.retries = COALESCE(t.retries, j.retries),"
                " j.snoozes = j.snoozes + t.snoozed,"
                " j.finished_at = IF(t.status = 'new', NULL, UTC_TIMESTAMP(6)), j.lease_owner = NULL"
                " WHERE j.status = 'new'",
                params,
            )
            written = sorted(stored)
            cur.execute(f"DELETE FROM neoq_cancellations WHERE job_id IN ({_marks(len(written))})", written)
            return set(written)

        written = self._runner.run(f"writing the outcomes of {len(batch)} jobs", write)
        for queue in retried:
            self._signal(queue)
        return written

    def progress(self, lease: LeaseToken, fraction: float, note: str | None) -> None:
        """A leased job's progress report, written only while the lease still holds the job (its token)."""
        self._runner.run(
            "storing a progress report",
            lambda cur: cur.execute(_PROGRESS, (lease.job_id, fraction, note, lease.job_id, lease.token)),
            write=False,
        )

    def renew(self, leases: list[LeaseToken], lease: float) -> list[Lost]:
        """Renew the leases past a third of their time; return the lost ones with their job's status."""
        fence = [value for held in leases for value in (held.job_id, held.token)]
        pairs = ",".join(["(%s,%s)"] * len(leases))
        ids = [held.job_id for held in leases]

        def beat(cur: Cursor) -> list[Lost]:
            cur.execute(
                f"SELECT id FROM neoq_jobs WHERE (id, lease_token) IN ({pairs}) AND status = 'new'"
                # Not a lease given back (or retried) since the heartbeat took its list: it would be
                # pushed a lease ahead with nobody holding it.
                " AND lease_owner IS NOT NULL"
                " AND run_after < UTC_TIMESTAMP(6) + INTERVAL %s MICROSECOND FOR UPDATE SKIP LOCKED",
                [*fence, int(lease * 2e6 / 3)],
            )
            due = [row[0] for row in cur.fetchall()]
            if due:
                cur.execute(
                    "UPDATE neoq_jobs SET run_after = UTC_TIMESTAMP(6) + INTERVAL %s MICROSECOND"
                    f" WHERE id IN ({_marks(len(due))})",
                    [int(lease * 1e6), *due],
                )
            cur.execute(
                "SELECT j.id, j.lease_token, j.status,"
                " EXISTS (SELECT 1 FROM neoq_cancellations c WHERE c.job_id = j.id)"
                f" FROM neoq_jobs j WHERE j.id IN ({_marks(len(ids))})",
                ids,
            )
            found = {int(row[0]): (int(row[1]), str(row[2]), bool(row[3])) for row in cur.fetchall()}
            lost: list[Lost] = []
            for held in leases:
                now = found.get(held.job_id)
                if now is None:
                    lost.append((held.job_id, None))
                elif now[0] != held.token or now[1] != "new":
                    lost.append((held.job_id, now[1]))
                elif now[2]:
                    # cancel_job() found the row locked for a moment and left a request: stop the
                    # handler; its CANCELLED outcome is written fenced by this lease's token.
                    lost.append((held.job_id, "cancelled"))
            return lost

        return self._runner.run("renewing leases", beat)

    def give_back(self, leases: list[LeaseToken], *, wake: bool = True) -> None:
        """Put unstarted leased jobs back: due as before, their attempt uncounted; with ``wake``,
        this process's loops of their queues look again."""

        def back(cur: Cursor) -> None:
            for held in leases:
                cur.execute(
                    "UPDATE neoq_jobs SET run_after = %s, lease_owner = NULL, attempts = GREATEST(attempts - 1, 0)"
                    " WHERE id = %s AND lease_token = %s AND status = 'new'",
                    (db_time(held.due_at), held.job_id, held.token),
                )

        self._runner.run("putting unstarted leased jobs back", back)
        for queue in {held.queue for held in leases} if wake else ():
            self._signal(queue)
