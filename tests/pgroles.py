"""PostgreSQL roles for tests: a role with no privilege on neoq's tables, and the worker role of the docs.

``worker_grants()`` reads the GRANT statements from docs/postgres.md ("A role for workers"), so the
tests check exactly what the documentation tells operators to run.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

DOCS = Path(__file__).resolve().parent.parent / "docs" / "postgres.md"

#: The names the documented statements use, replaced by the test's.
DOC_ROLE = "app_worker"
DOC_DATABASE = "app"


def worker_grants() -> list[str]:
    """The statements of the ```sql block in docs/postgres.md that creates the worker role."""
    text = DOCS.read_text(encoding="utf-8")
    for block in re.findall(r"```sql\n(.*?)```", text, re.DOTALL):
        if f"CREATE ROLE {DOC_ROLE}" in block:
            lines = [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("--")]
            return [statement.strip() for statement in " ".join(lines).split(";") if statement.strip()]
    raise AssertionError(f"docs/postgres.md has no sql block with CREATE ROLE {DOC_ROLE}")


def as_role(url: str, role: str) -> str:
    """``url`` connecting as ``role`` (the test server trusts local connections)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{role}@{host}", parts.path, parts.query, parts.fragment))


def _dbname(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


@contextmanager
def role(url: str, statements: list[str] | None = None) -> Iterator[str]:
    """A new LOGIN role; yields ``url`` connecting as it, and drops the role afterwards.

    ``statements``: the documented worker role's (``worker_grants()``), run as the superuser on
    ``url``'s database with the names replaced; None makes a role with nothing granted (what
    PUBLIC has: CONNECT, USAGE on the public schema).
    """
    name = f"neoq_test_role_{secrets.token_hex(4)}"
    dbname = _dbname(url)
    with psycopg.connect(url, autocommit=True) as conn:
        if statements is None:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
        else:
            for statement in statements:
                text = re.sub(rf"\b{DOC_ROLE}\b", name, statement)
                text = re.sub(rf"\bDATABASE {DOC_DATABASE}\b", f'DATABASE "{dbname}"', text)
                conn.execute(text.encode())
    try:
        yield as_role(url, name)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [name])
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def revoke_public(url: str) -> None:
    """Take from PUBLIC what PostgreSQL grants it by default on ``url``'s database, so that a role
    has only what is granted to it by name."""
    dbname = _dbname(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(dbname)))
        conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
        conn.execute("REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA public FROM PUBLIC")
