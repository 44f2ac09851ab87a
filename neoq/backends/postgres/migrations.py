"""Numbered schema migrations, applied in order under an advisory lock.

Each ``sql/migrations/NNNN_name.sql`` file runs once per database, in its own step of one
transaction that holds ``pg_advisory_xact_lock``; the versions applied are recorded in
``neoq_migrations``. Several processes starting at once queue on the lock: the first applies
what is missing, the others find it done.

Whether anything is missing is first found out with reads only, so a role without DDL rights
(``docs/postgres.md``: the worker role) opens a client on a schema that ``neoq migrate`` made
current, and only a schema that lacks something takes the lock and runs DDL.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

import psycopg

from ..migrationfiles import read_migrations

__all__ = ["MIGRATIONS_LOCK_ID", "available_migrations", "migrate", "missing_migrations"]

logger = logging.getLogger(__name__)

#: The advisory lock key neoq's migrations take ("neoqmigr" as 8 bytes).
MIGRATIONS_LOCK_ID = int.from_bytes(b"neoqmigr", "big") & 0x7FFFFFFFFFFFFFFF

#: neoq_migrations where ``CREATE TABLE`` puts it: in the first schema of the ``search_path`` that
#: exists (``current_schema()``), not in a later one that has neoq's tables too. NULL when absent.
_FIND_TABLE = "SELECT to_regclass(quote_ident(current_schema()) || '.neoq_migrations')"

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS neoq_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@lru_cache(maxsize=1)
def available_migrations() -> tuple[tuple[int, str, str], ...]:
    """Return ``(version, name, sql)`` of every migration shipped with neoq, in order."""
    return read_migrations(__package__ or __name__, "PostgreSQL")


def missing_migrations(conn: psycopg.Connection[Any]) -> list[int]:
    """Return the versions of the shipped migrations that ``conn``'s schema lacks, with reads only.

    Every version when neoq has no schema there. Needs no privilege beyond SELECT on
    ``neoq_migrations``; ``conn`` may be in autocommit mode or in a transaction.
    """
    done = _applied(conn)
    return [version for version, _, _ in available_migrations() if done is None or version not in done]


def migrate(conn: psycopg.Connection[Any]) -> list[int]:
    """Apply the migrations ``conn``'s database lacks; return the versions applied.

    ``conn`` must be idle in autocommit mode. Everything happens in one transaction, so a
    failed migration leaves the schema as it was. A current schema is recognised with reads
    only: no lock is taken and no DDL runs.
    """
    done = _applied(conn)
    if done is not None and all(version in done for version, _, _ in available_migrations()):
        _warn_newer(done)
        return []
    applied_now: list[int] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATIONS_LOCK_ID])
        conn.execute(_CREATE_TABLE)
        done = {row[0] for row in conn.execute("SELECT version FROM neoq_migrations").fetchall()}
        for version, name, text in available_migrations():
            if version in done:
                continue
            logger.info("neoq: applying PostgreSQL migration %04d_%s", version, name)
            conn.execute(text.encode("utf-8"))
            conn.execute("INSERT INTO neoq_migrations (version, name) VALUES (%s, %s)", [version, name])
            applied_now.append(version)
        _warn_newer(done)
    return applied_now


def _applied(conn: psycopg.Connection[Any]) -> set[int] | None:
    """The versions recorded in ``conn``'s schema; None when it has no ``neoq_migrations``."""
    row = conn.execute(_FIND_TABLE).fetchone()
    if row is None or row[0] is None:
        return None
    return {version for (version,) in conn.execute("SELECT version FROM neoq_migrations").fetchall()}


def _warn_newer(done: set[int]) -> None:
    newer = sorted(done - {version for version, _, _ in available_migrations()})
    if newer:
        logger.warning("neoq: the database has schema versions %s that this neoq does not know; upgrade neoq", newer)
