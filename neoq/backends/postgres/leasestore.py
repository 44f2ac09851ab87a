"""PostgreSQL's ``LeaseStore``: the lease mode's statements (``sql/lease.sql``) on a pool of its own.

The lease engine (``neoq.backends.lease``) does the rest. Each call is one autocommit statement:

- ``fetch``: ``lease_claim``, which leases up to ``limit`` due jobs (``UPDATE ... WHERE id IN
  (SELECT ... FOR UPDATE SKIP LOCKED LIMIT n)``), counts their attempts and commits at once
  (asynchronously: a lease lost in a crash loses nothing); or, when none is due, says when the
  next one comes due. Its LIMIT is written into the text, so each limit's prepared plan is right.
- ``settle_many``: ``lease_settle``, every outcome of a batch in one statement, fenced by token.
- ``renew``: ``lease_heartbeat``, the leases past a third of their time, and the lost ones.
- ``give_back``: ``lease_return``, unstarted leased jobs due again as before, attempts uncounted.

No connection is held between statements: the pool (autocommit, one to four connections) is the
engine's alone, so PgBouncer in transaction pooling serves it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from importlib import resources
from typing import Any

import psycopg
from psycopg.abc import Buffer
from psycopg.adapt import Loader
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolTimeout

from ...errors import BackendConnectionError, BackendError
from ...job import JobStatus
from ..lease import Leased, LeaseToken, Lost, Settlement
from . import forking
from .common import CHANNEL, _utc_session
from .queries import parse_queries
from .rows import _job

__all__ = ["PostgresLeaseStore"]

#: The named queries of the lease mode.
LEASE_QUERIES: dict[str, str] = parse_queries(
    resources.files(__package__).joinpath("sql").joinpath("lease.sql").read_text(encoding="utf-8")
)

Conn = psycopg.Connection[TupleRow]

#: lease_claim with its LIMIT written in, by limit: a prepared statement whose LIMIT is a
#: parameter gets a generic plan that expects a tenth of the table (a hash join over a sequential
#: scan, twice the CPU of the custom plan), so PostgreSQL plans it anew on every execution; with
#: the number in the text, the generic plan is the right one and is reused.
_CLAIM_BY_LIMIT: dict[tuple[str, int], str] = {}


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


class PostgresLeaseStore:
    """The lease mode's statements over a connection pool of their own (autocommit).

    ``wrap(exc, doing)`` turns a driver error into the backend's ``BackendError`` (the backend's
    ``_wrap``: it scrubs secrets and notes an unreachable server).
    """

    def __init__(
        self,
        url: str,
        *,
        kwargs: dict[str, Any],
        connect_timeout: float,
        safe_url: str,
        wrap: Callable[[BaseException, str], BackendError],
    ) -> None:
        self._connect_timeout = connect_timeout
        self._safe_url = safe_url
        self._wrap = wrap
        self._pool: ConnectionPool[Conn] = ConnectionPool(
            url,
            kwargs=kwargs,
            min_size=1,
            max_size=4,
            open=False,
            timeout=connect_timeout,
            reconnect_timeout=3.0,
            name="neoq-lease",
            configure=_configure,
        )
        self._pool.open(wait=False)
        #: The global limit (``Handler.global_limit``) of each queue that has one (flow.py), and
        #: what to call with such queues once outcomes of theirs are written (their loops may go on).
        self.global_limits: dict[str, int] = {}
        self.freed: Callable[[set[str]], None] | None = None
        #: The ids of the queue's jobs whose handlers returned and whose outcomes are not written yet.
        self.unwritten: Callable[[str], list[Any]] | None = None

    def close(self) -> None:
        self._pool.close(timeout=5.0)

    @contextmanager
    def _conn(self, doing: str) -> Iterator[Conn]:
        try:
            with self._pool.connection(timeout=self._connect_timeout) as conn:
                yield conn
        except PoolTimeout as exc:
            raise BackendConnectionError(
                f"no PostgreSQL connection to {self._safe_url} within {self._connect_timeout:g}s while {doing}"
            ) from exc
        except psycopg.Error as exc:
            raise self._wrap(exc, doing) from exc

    def fetch(self, queue: str, limit: int, lease: float, owner: str) -> tuple[list[Leased], float | None, bool]:
        """Lease up to ``limit`` due jobs of ``queue`` in one statement (``lease_claim``)."""
        params: dict[str, Any] = {"queue": queue, "lease": lease, "owner": owner}
        global_limit = self.global_limits.get(queue)
        name = "lease_claim" if global_limit is None else "lease_claim_limited"
        statement = _CLAIM_BY_LIMIT.get((name, limit))
        if statement is None:
            statement = _CLAIM_BY_LIMIT[name, limit] = LEASE_QUERIES[name].replace("%(limit)s", str(int(limit)))
        if global_limit is not None:
            params["global_limit"] = global_limit
            done = [] if self.unwritten is None else self.unwritten(queue)
            params["done"] = "{" + ",".join(str(job_id) for job_id in done) + "}"
        with self._conn(f"leasing jobs of queue {queue!r}") as conn:
            # One autocommit statement: it turns synchronous_commit off for its own transaction.
            rows = conn.execute(statement, params).fetchall()
        if len(rows) == 1 and rows[0][0] is None:
            # Rows locked by transaction-mode claims are skipped, not seen; a full global limit holds
            # the queue back (its loops look again soon: a settle elsewhere frees room unannounced).
            return [], rows[0][14], bool(rows[0][17])
        rows.sort(key=_row_order)
        leased: list[Leased] = []
        utc = timezone.utc
        running = JobStatus.RUNNING
        for row in rows:
            job_id = row[0]
            job = _job(row, str(job_id), running, row[11], row[12], None, row[15], row[16])
            leased.append((job, job_id, row[10], row[4].astimezone(utc), row[13]))
        return leased, None, False

    def settle_many(self, batch: list[Settlement]) -> set[Any]:
        """Write ``batch``'s outcomes in one statement (``lease_settle``), fenced by each token."""
        ids: list[str] = []
        tokens: list[str] = []
        statuses: list[str] = []
        errors: list[str] = []
        run_afters: list[str] = []
        retries: list[str] = []
        results: list[str] = []
        tracebacks: list[str] = []
        snoozed: list[str] = []
        processed = JobStatus.PROCESSED
        for pending in batch:
            lease, outcome = pending.lease, pending.outcome
            status = outcome.status
            ids.append(str(lease.job_id))
            tokens.append(str(lease.token))
            if status is processed:
                statuses.append("processed")
                errors.append("NULL")
                run_afters.append(str((lease.due_at - _EPOCH) // _MICROSECOND))
                retries.append("NULL")
                results.append("NULL" if outcome.result is None else _text_element(outcome.result))
                tracebacks.append("NULL")
                snoozed.append("0")
                continue
            retry = status is JobStatus.NEW
            # A retry is due at its own time; a finished job gets back the time it was due.
            run_after = outcome.run_after if retry and outcome.run_after else lease.due_at
            statuses.append(status.value)
            errors.append(_text_element(outcome.error))
            run_afters.append(str((run_after - _EPOCH) // _MICROSECOND))
            retries.append(str(outcome.retries) if retry and outcome.retries is not None else "NULL")
            results.append("NULL")
            tracebacks.append(_text_element(outcome.traceback))
            snoozed.append("1" if outcome.snoozed else "0")
        # Array literals ('{1,2}') built here: psycopg adapts a list element by element in Python.
        params = {
            "ids": "{" + ",".join(ids) + "}",
            "tokens": "{" + ",".join(tokens) + "}",
            "statuses": "{" + ",".join(statuses) + "}",
            "errors": "{" + ",".join(errors) + "}",
            "run_afters": "{" + ",".join(run_afters) + "}",
            "retries": "{" + ",".join(retries) + "}",
            "results": "{" + ",".join(results) + "}",
            "tracebacks": "{" + ",".join(tracebacks) + "}",
            "snoozed": "{" + ",".join(snoozed) + "}",
            "channel": CHANNEL,
        }
        with self._conn(f"writing the outcomes of {len(batch)} jobs") as conn:
            written = {row[0] for row in conn.execute(LEASE_QUERIES["lease_settle"], params).fetchall()}
        limited = self.global_limits
        if limited and self.freed is not None:
            queues = {pending.lease.queue for pending in batch if pending.lease.queue in limited}
            if queues:
                self.freed(queues)
        return written

    def progress(self, lease: LeaseToken, fraction: float, note: str | None) -> None:
        """A leased job's progress report (``lease_progress``), fenced by the lease's token."""
        params = {"id": lease.job_id, "token": lease.token, "fraction": fraction, "note": note}
        with self._conn("storing a progress report") as conn:
            conn.execute(LEASE_QUERIES["lease_progress"], params)

    def renew(self, leases: list[LeaseToken], lease: float) -> list[Lost]:
        """Renew ``leases`` in one statement (``lease_heartbeat``); return the lost ones."""
        params = {
            "ids": "{" + ",".join([str(held.job_id) for held in leases]) + "}",
            "tokens": "{" + ",".join([str(held.token) for held in leases]) + "}",
            "lease": lease,
            # Renew once a third of the lease has passed: fewer row versions for short jobs.
            "renew_below": lease * 2.0 / 3.0,
        }
        with self._conn("renewing leases") as conn:
            lost = conn.execute(LEASE_QUERIES["lease_heartbeat"], params).fetchall()
        return [(int(job_id), status) for job_id, status in lost]

    def give_back(self, leases: list[LeaseToken], *, wake: bool = True) -> None:
        """Put unstarted leased jobs back in one statement (``lease_return``; without ``wake``,
        ``lease_put_off``: no wake-up for their queue)."""
        with self._conn("putting unstarted leased jobs back") as conn:
            conn.execute(
                LEASE_QUERIES["lease_return" if wake else "lease_put_off"],
                {
                    "ids": [t.job_id for t in leases],
                    "tokens": [t.token for t in leases],
                    "due_ats": [t.due_at for t in leases],
                    "channel": CHANNEL,
                },
            )


_decode_json = json.JSONDecoder().decode


class _JsonLoader(Loader):
    """A ``json`` column as ``json.loads`` gives it, without its encoding detection (half the cost)."""

    def load(self, data: Buffer) -> Any:
        return _decode_json(str(data, "utf-8", "surrogatepass"))


def _configure(conn: Conn) -> None:
    """The pool's configure hook: the connection is this process's (``forking``), its session is in
    UTC (as every session of neoq's); the cheaper loader for the payloads a claim returns."""
    forking.track(conn)
    _utc_session(conn)
    conn.adapters.register_loader("json", _JsonLoader)


def _row_order(row: TupleRow) -> tuple[Any, Any, Any]:
    # The claim order: priority descending, then run_after (the due time before the lease), then id.
    return -row[15], row[4], row[0]


def _text_element(text: str | None) -> str:
    """``text`` as an element of a PostgreSQL array literal; NUL and lone surrogates shown escaped."""
    if text is None:
        return "NULL"
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
