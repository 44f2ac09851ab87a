"""Numbered schema migrations of the SQLite backend, applied once under the file's write lock.

Each ``sql/migrations/NNNN_name.sql`` runs once per database file, in order, inside one
``BEGIN IMMEDIATE`` transaction (SQLite's write lock is the migration lock, and its DDL is
transactional, so a failed migration leaves the schema as it was); the versions applied are
recorded in ``neoq_migrations``. Several processes opening a new file at once queue on the lock:
the first applies what is missing, the others find it done. Whether anything is missing is first
found with reads only.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from functools import lru_cache

from ..migrationfiles import read_migrations

__all__ = ["applied_versions", "available_migrations", "migrate", "missing_migrations"]

logger = logging.getLogger(__name__)

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS neoq_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at INTEGER NOT NULL
)
"""


@lru_cache(maxsize=1)
def available_migrations() -> tuple[tuple[int, str, str], ...]:
    """``(version, name, sql)`` of every migration shipped with neoq, in order."""
    return read_migrations(__package__ or __name__, "SQLite")


def applied_versions(conn: sqlite3.Connection) -> set[int] | None:
    """The versions recorded in the file; None when it has no ``neoq_migrations`` table."""
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'neoq_migrations'").fetchone()
    if row is None:
        return None
    return {version for (version,) in conn.execute("SELECT version FROM neoq_migrations")}


def missing_migrations(conn: sqlite3.Connection) -> list[int]:
    """The shipped versions the file lacks (every one when it has no neoq schema), with reads only."""
    done = applied_versions(conn) or set()
    return [version for version, _, _ in available_migrations() if version not in done]


def migrate(conn: sqlite3.Connection) -> list[int]:
    """Apply what the file lacks, in one transaction that holds the write lock; return the versions applied.

    ``conn`` is in autocommit mode, outside a transaction. Busy errors propagate (the caller retries).
    """
    if not missing_migrations(conn):
        return []
    applied: list[int] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_CREATE_TABLE)
        done = applied_versions(conn) or set()
        for version, name, text in available_migrations():
            if version in done:
                continue
            logger.info("neoq: applying SQLite migration %04d_%s", version, name)
            for statement in _statements(text):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO neoq_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (version, name, time.time_ns() // 1000),
            )
            applied.append(version)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    newer = sorted(done - {version for version, _, _ in available_migrations()})
    if newer:
        logger.warning("neoq: the SQLite file has schema versions %s that this neoq does not know; upgrade neoq", newer)
    return applied


def _statements(text: str) -> list[str]:
    """The statements of a migration file (``executescript`` would commit the transaction first)."""
    lines = [line.split("--", 1)[0] for line in text.splitlines()]
    statements, current = [], []
    for line in lines:
        current.append(line)
        joined = "\n".join(current)
        if line.rstrip().endswith(";") and sqlite3.complete_statement(joined):
            statements.append(joined.strip())
            current = []
    if "\n".join(current).strip():
        statements.append("\n".join(current).strip())
    return statements
