"""What the PostgreSQL backend's modules share: the notification channel, the handler's savepoint,
ids, times and sessions in UTC, which errors mean the connection is lost."""

from __future__ import annotations

from contextlib import suppress
from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import PoolTimeout

#: The one LISTEN/NOTIFY channel of every queue.
CHANNEL = "neoq"

Conn = psycopg.Connection[TupleRow]

#: The savepoint taken before each handler; a failure rolls back to it.
_SAVEPOINT = "SAVEPOINT neoq_handler"
_ROLLBACK_TO_SAVEPOINT = "ROLLBACK TO SAVEPOINT neoq_handler"


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(timezone.utc)


def _parse_id(job_id: object) -> int | None:
    # Ids are the decimal text of a bigint; anything else names no job (and never reaches SQL).
    if not isinstance(job_id, str) or not job_id.isascii() or not job_id.isdigit():
        return None
    if len(job_id) > 19 or (len(job_id) > 1 and job_id[0] == "0"):
        return None
    value = int(job_id)
    return value if 0 < value < 2**63 else None


def _is_connection_error(exc: BaseException) -> bool:
    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, psycopg.Error):
        return False
    state = exc.sqlstate
    if state is None:
        # Client-side failures (cannot connect, connection lost) carry no SQLSTATE.
        return isinstance(exc, psycopg.OperationalError)
    # 08: connection exception; 57P0x: the server is shutting down or ended the session.
    return state.startswith("08") or state.startswith("57P")


def _utc_session(conn: psycopg.Connection[Any]) -> None:
    """Make sure ``conn``'s session TimeZone is UTC.

    The connection options ask for it, but libpq sends ``PGTZ`` from the environment as a setting of
    its own, which the server applies after the options. In another zone, a time stored near the
    ends of what Python can hold (``datetime.max`` from an older neoq) is a year 10000 or year 0
    there, and reading it failed: every claim of its queue, ``get_job`` and ``list_jobs``. The
    server reports the zone at connect (ParameterStatus), so only such a session pays a round trip.
    """
    if conn.info.parameter_status("TimeZone") == "UTC":
        return
    conn.execute("SET TimeZone TO 'UTC'")
    if not conn.autocommit:
        conn.commit()


def _close_quietly(conn: psycopg.Connection[Any]) -> None:
    with suppress(Exception):
        conn.close()
