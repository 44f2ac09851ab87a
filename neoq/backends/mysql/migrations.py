"""The schema: numbered ``.sql`` files under ``sql/migrations``, applied in order under a lock.

MySQL commits DDL as it goes, so a migration is not one transaction: each file's statements run one
by one, then its version is recorded in ``neoq_migrations``. ``GET_LOCK`` (a named lock of the
server, per database; named by a hash of the database's name, since MySQL 8 takes names of 64
characters at most) makes processes that start at once apply each file once: the others wait, then
find it recorded.
"""

from __future__ import annotations

from ..migrationfiles import read_migrations
from .pools import Conn

__all__ = ["MIGRATIONS", "applied", "migrate"]

#: Seconds to wait for another process's migration.
_LOCK_TIMEOUT = 60


def _load() -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for version, _, sql in read_migrations(__package__ or __name__, "MySQL"):
        text = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
        found[version] = [stmt.strip() for stmt in text.split(";") if stmt.strip()]
    return found


#: The statements of each migration, by version.
MIGRATIONS: dict[int, list[str]] = _load()


def applied(conn: Conn) -> set[int]:
    """The versions recorded in the database (none when it has no neoq schema), with reads only."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() "
            "AND TABLE_NAME = 'neoq_migrations'"
        )
        row = cur.fetchone()
        if not row or not row[0]:
            return set()
        cur.execute("SELECT version FROM neoq_migrations")
        return {int(version) for (version,) in cur.fetchall()}


def migrate(conn: Conn) -> list[int]:
    """Apply the missing migrations on ``conn`` (autocommit) under the database's lock; return them."""
    if not set(MIGRATIONS) - applied(conn):
        return []
    done: list[int] = []
    with conn.cursor() as cur:
        cur.execute("SELECT GET_LOCK(CONCAT('neoq_migrate:', SHA1(DATABASE())), %s)", (_LOCK_TIMEOUT,))
        row = cur.fetchone()
        if not row or row[0] != 1:
            raise TimeoutError(f"another process held the neoq migration lock for {_LOCK_TIMEOUT}s")
        try:
            cur.execute(
                "CREATE TABLE IF NOT EXISTS neoq_migrations (version INT NOT NULL PRIMARY KEY, "
                "applied_at DATETIME(6) NOT NULL) ENGINE = InnoDB"
            )
            have = applied(conn)
            for version, statements in MIGRATIONS.items():
                if version in have:
                    continue
                for statement in statements:
                    cur.execute(statement)
                cur.execute(
                    "INSERT INTO neoq_migrations (version, applied_at) VALUES (%s, UTC_TIMESTAMP(6))", (version,)
                )
                done.append(version)
        finally:
            cur.execute("SELECT RELEASE_LOCK(CONCAT('neoq_migrate:', SHA1(DATABASE())))")
    return done
