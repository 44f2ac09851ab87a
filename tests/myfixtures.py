"""MySQL/MariaDB fixtures: a real server, and a fresh database per test session.

- The server is ``NEOQ_TEST_MYSQL_URL`` (default ``mysql://root@127.0.0.1:3306/``). If nothing
  answers there, MySQL tests skip, except under ``CI=true`` where they fail (``.ci/run`` starts
  MariaDB, installing it when absent).
- ``mysql_url``: the URL of a database ``neoq_test_mysql_<random>`` created for this session and
  dropped after it (never another's).
- ``mysql_clean``: the same URL, with neoq's tables emptied before the test.
- ``mysql_connect``: plain PyMySQL connections to it (autocommit off), closed after the test.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

DEFAULT_SERVER_URL = "mysql://root@127.0.0.1:3306/"
NEOQ_TABLES = (
    "neoq_jobs",
    "neoq_attempts",
    "neoq_claims",
    "neoq_progress",
    "neoq_cancellations",
    "neoq_ticks",
    "neoq_queue_pauses",
    "neoq_unique_windows",
    "neoq_rate_windows",
    "neoq_rate_starts",
    "neoq_slots",
)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"MySQL/MariaDB is required under CI=true: {reason}", pytrace=False)
    pytest.skip(f"no MySQL/MariaDB: {reason}")


def server_kwargs(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    return {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": parts.username or "root",
        "password": parts.password or "",
        "charset": "utf8mb4",
    }


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def connect(url: str, **extra: Any) -> Any:
    import pymysql

    kwargs = server_kwargs(url)
    database = urlsplit(url).path.lstrip("/")
    if database:
        kwargs["database"] = database
    return pymysql.connect(**kwargs, **extra)


@pytest.fixture(scope="session")
def mysql_server() -> str:
    url = os.environ.get("NEOQ_TEST_MYSQL_URL", DEFAULT_SERVER_URL)
    try:
        import pymysql
    except ImportError:
        _unavailable("PyMySQL is not installed (pip install -e '.[dev]')")
    try:
        conn = pymysql.connect(**server_kwargs(url), connect_timeout=3)
        conn.close()
    except Exception as exc:
        _unavailable(f"nothing answers at {url}: {exc}")
    return url


@pytest.fixture(scope="session")
def mysql_url(mysql_server: str) -> Iterator[str]:
    name = f"neoq_test_mysql_{secrets.token_hex(4)}"
    admin = connect(mysql_server, autocommit=True)
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    finally:
        admin.close()
    url = with_database(mysql_server, name)
    from neoq.backends.mysql import MySQLBackend

    try:
        MySQLBackend(url).migrate()
        yield url
    finally:
        admin = connect(mysql_server, autocommit=True)
        try:
            with admin.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            admin.close()


def open_sessions(url: str) -> int:
    """Sessions on the server using this test database, besides the one that counts them."""
    conn = connect(url, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = DATABASE() AND ID <> CONNECTION_ID()"
            )
            row = cur.fetchone()
            return int(row[0])
    finally:
        conn.close()


@pytest.fixture
def mysql_clean(mysql_url: str) -> str:
    conn = connect(mysql_url, autocommit=True)
    try:
        with conn.cursor() as cur:
            for table in NEOQ_TABLES:
                cur.execute(f"DELETE FROM {table}")
    finally:
        conn.close()
    return mysql_url


@pytest.fixture
def mysql_connect(mysql_url: str) -> Iterator[Callable[[], Any]]:
    opened: list[Any] = []

    def make() -> Any:
        conn = connect(mysql_url)
        opened.append(conn)
        return conn

    yield make
    for conn in opened:
        try:
            conn.close()
        except Exception:
            pass
