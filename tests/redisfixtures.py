"""Redis fixtures: the local server (or one started here), a key prefix of its own per test, and
servers of a test's own that it may restart.

``NEOQ_TEST_REDIS_URL`` names the server (default ``redis://127.0.0.1:6379``); the tests use
database ``REDIS_TEST_DB`` and a unique key prefix each, and delete only the keys under that
prefix: never FLUSHDB. When no server answers there, the session starts Debian's
``redis-server`` on a free port (no persistence); under ``CI=true`` a missing ``redis-server``
fails the tests instead of skipping them.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

#: The database number the tests use (the benchmarks flush 11; the tests delete only their prefix).
REDIS_TEST_DB = 13

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port(below: int | None = None) -> int:
    """A free TCP port on 127.0.0.1; ``below``: one under that number (a Cluster node also listens
    on its port + 10,000)."""
    for _ in range(200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", 0 if below is None else random.randrange(20000, below)))
            except OSError:
                continue
            port = int(sock.getsockname()[1])
        if below is None:
            return port
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port found")


def _answers(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.AuthenticationError, redis.ResponseError):
        return True  # it answers: it wants a password
    except redis.RedisError:
        return False


class RedisServer:
    """A ``redis-server`` of a test's own on a free port, in a folder of its own; ``kill()`` then
    ``start()`` restarts it on the same port with the same data (its AOF, when ``appendonly``)."""

    def __init__(self, *, appendonly: bool = False, extra: tuple[str, ...] = ()) -> None:
        if not os.path.exists(REDIS_SERVER):
            if os.environ.get("CI") == "true":
                pytest.fail(f"redis-server is not installed ({REDIS_SERVER}); .ci/run installs it")
            pytest.skip("redis-server is not installed")
        self.port = free_port(55535 if "--cluster-enabled" in extra else None)
        self.folder = tempfile.mkdtemp(prefix="neoq-redis-")
        self.args = [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", self.folder,
            "--save", "",
            "--appendonly", "yes" if appendonly else "no",
            "--appendfsync", "always",
            "--daemonize", "no",
            "--logfile", str(Path(self.folder) / "redis.log"),
            *extra,
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        try:
            self.start()
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_answers(self.url)

    def kill(self) -> None:
        """SIGKILL: the server stops at once, as in a crash (an AOF with fsync always keeps every write)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    """The server the tests use: ``NEOQ_TEST_REDIS_URL``, the local one, or one started here."""
    url = os.environ.get("NEOQ_TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
    if _answers(url):
        yield url
        return
    server = RedisServer()
    try:
        yield server.url.rsplit("/", 1)[0]
    finally:
        server.close()


def delete_prefix(url: str, prefix: str) -> None:
    """Delete every key under ``prefix`` (and nothing else) on ``url``'s database."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        batch: list[Any] = []
        for key in client.scan_iter(match=_glob_escape(prefix) + "*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                client.unlink(*batch)
                batch = []
        if batch:
            client.unlink(*batch)
    finally:
        client.close()


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def redis_prefix(purpose: str = "t") -> str:
    return f"w-redis-test-{purpose}-{secrets.token_hex(4)}:"


@pytest.fixture
def redis_db_url(redis_server_url: str) -> str:
    """The test database's URL, without a prefix."""
    return f"{redis_server_url}/{REDIS_TEST_DB}"


@pytest.fixture
def redis_url(redis_db_url: str) -> Iterator[str]:
    """A URL with a key prefix of this test's own; its keys are deleted after the test."""
    prefix = redis_prefix()
    yield f"{redis_db_url}?prefix={prefix}"
    delete_prefix(redis_db_url, prefix)


@pytest.fixture
def redis_own_server() -> Iterator[Callable[..., RedisServer]]:
    """``redis_own_server(appendonly=True)`` starts a server of the test's own; all stopped after it."""
    servers: list[RedisServer] = []

    def start(**kwargs: Any) -> RedisServer:
        server = RedisServer(**kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def wait_answers(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not _answers(url):
        assert time.monotonic() < deadline, f"Redis at {url} does not answer"
        time.sleep(0.05)
