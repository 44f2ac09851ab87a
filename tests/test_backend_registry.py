"""Backends by URL scheme (the ``neoq.backends`` entry points) and what they declare (capabilities).

The end-to-end test builds a small package outside neoq, with an entry point of its own, installs it
into this virtualenv with pip, and reaches its backend through ``neoq.new()`` and the ``neoq``
command in new processes (a process reads the entry points once).
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import neoq
from neoq import Job
from neoq.backends import Backend, MemoryBackend
from neoq.backends.capabilities import (
    DASHBOARD,
    ENQUEUE_IN_TRANSACTION,
    FLOW_CONTROL,
    KNOWN,
    NOTIFY,
    SHARED,
    TRANSACTION,
    WORKERS,
)
from neoq.backends.registry import ENTRY_POINT_GROUP, backend_class, schemes
from neoq.errors import ConfigurationError
from neoq.testing import wait_for

ROOT = Path(__file__).resolve().parent.parent

DISTRIBUTION = "neoq-dummy-backend"

#: The two lines of packaging a third-party backend needs, and the rest of a minimal package.
PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "neoq-dummy-backend"
version = "0.1"

[project.entry-points."neoq.backends"]
dummy = "neoq_dummy_backend:DummyBackend"
dummyprivate = "neoq_dummy_backend:PrivateBackend"
dummybroken = "neoq_dummy_backend_is_not_installed:Backend"
dummynotabackend = "neoq_dummy_backend:NotABackend"

[tool.setuptools]
py-modules = ["neoq_dummy_backend"]
"""

MODULE = '''\
"""A third-party backend: a test double built on the memory store."""

from neoq.backends import MemoryBackend


class DummyBackend(MemoryBackend):
    """Declares "shared" (a test double: the CLI's inspecting commands accept only shared stores).

    It opens with one job waiting in the queue named after the URL's host, so that what the CLI
    shows proves it reached this backend.
    """

    capabilities = frozenset({"shared", "notify", "dummy-extra"})

    @classmethod
    def from_url(cls, url, *, clock=None, **options):
        backend = cls(clock=clock)
        backend.seed = url.split("://", 1)[1]
        backend.options = options
        return backend

    def open(self):
        super().open()
        if self.seed and not self.stats():
            from neoq.job import Job, prepare_job

            self.enqueue([prepare_job(Job(queue="seeded-" + self.seed, payload={}))[0]])


class PrivateBackend(DummyBackend):
    capabilities = frozenset({"notify"})


class NotABackend:
    pass
'''

#: Runs in a new process, where the entry points are read afresh.
CLIENT_SCRIPT = """\
import json, sys, threading
import neoq
from neoq.backends.registry import schemes
from neoq.testing import wait_for

out = {"schemes": schemes()}
with neoq.new("dummy://x", flavour="plain") as nq:
    out["backend"] = type(nq.backend).__name__
    out["options"] = nq.backend.options
    out["capabilities"] = sorted(nq.backend.capabilities)
    done = threading.Event()
    ran = []
    def handler(job):
        ran.append(job.payload["n"])
        done.set()
    nq.start("work", handler)
    job_id = nq.enqueue(neoq.Job(queue="work", payload={"n": 7}))
    assert done.wait(10), "the job did not run"
    wait_for(lambda: nq.get_job(job_id).status is neoq.JobStatus.PROCESSED)
    out["ran"] = ran
for url in ("dummybroken://x", "dummynotabackend://x", "nosuchscheme://user:topsecret@host/db"):
    try:
        neoq.new(url)
    except neoq.ConfigurationError as exc:
        out[url.partition(":")[0]] = str(exc)
print(json.dumps(out))
"""


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def dummy_installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The package ``neoq-dummy-backend`` installed in this virtualenv for the module's tests."""
    source = tmp_path_factory.mktemp("neoq-dummy-backend")
    (source / "pyproject.toml").write_text(PYPROJECT)
    (source / "neoq_dummy_backend.py").write_text(MODULE)
    # Offline and fast: built with this virtualenv's setuptools and wheel (the dev extra has them).
    installed = _pip("install", "--no-deps", "--no-build-isolation", str(source))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    try:
        yield
    finally:
        removed = _pip("uninstall", "--yes", DISTRIBUTION)
        assert removed.returncode == 0, removed.stdout + removed.stderr


def _neoq(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "neoq", *argv], capture_output=True, text=True, timeout=60, cwd=ROOT)


@pytest.mark.slow
def test_a_backend_registered_by_another_package_is_reached_by_url(dummy_installed: None) -> None:
    result = subprocess.run([sys.executable, "-c", CLIENT_SCRIPT], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout)
    assert out["backend"] == "DummyBackend" and out["options"] == {"flavour": "plain"}
    assert out["capabilities"] == ["dummy-extra", "notify", "shared"]
    assert out["ran"] == [7]
    assert out["schemes"][:3] == ["memory", "postgresql", "postgres"]
    assert {"dummy", "dummyprivate", "dummybroken", "dummynotabackend"} <= set(out["schemes"])
    assert (
        "the backend for dummybroken:// (neoq_dummy_backend_is_not_installed:Backend) cannot be imported"
        in (out["dummybroken"])
    )
    assert "No module named 'neoq_dummy_backend_is_not_installed'" in out["dummybroken"]
    assert "is not a neoq.backends.Backend subclass" in out["dummynotabackend"]
    # An unknown scheme names every registered one, the third-party ones too, and never the password.
    unknown = out["nosuchscheme"]
    assert unknown.startswith("unknown backend URL scheme nosuchscheme://; accepted: memory://, postgresql://")
    assert "dummy://" in unknown and "topsecret" not in unknown


@pytest.mark.slow
def test_the_cli_reaches_it_and_decides_by_capability(dummy_installed: None) -> None:
    stats = _neoq("--url", "dummy://x", "--json", "stats")
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout) == {
        "seeded-x": {"new": 1, "running": 0, "processed": 0, "failed": 0, "cancelled": 0},
    }
    # The same class without "shared": the inspecting commands refuse it, as they refuse memory://.
    private = _neoq("--url", "dummyprivate://y", "stats")
    assert private.returncode == 1
    assert private.stderr.startswith("neoq: error: dummyprivate://y is private to each process")
    migrate = _neoq("--url", "dummy://x", "migrate")
    assert (migrate.returncode, migrate.stdout) == (0, "dummy://x: dummy:// keeps no schema; nothing to migrate\n")


# -- without installing anything -----------------------------------------------------------------------


def test_neoq_registers_its_own_schemes_as_entry_points() -> None:
    """What setup.cfg declares reaches the installed distribution (the test virtualenv's)."""
    entries = {e.name: e.value for e in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert entries["memory"] == "neoq.backends.memory:MemoryBackend"
    assert entries["postgresql"] == entries["postgres"] == "neoq.backends.postgres:PostgresBackend"


def test_own_schemes_work_from_a_source_tree_that_was_never_installed(tmp_path: Path) -> None:
    """Without site-packages neoq is no distribution, so it has no entry points: its own schemes still work."""
    code = textwrap.dedent(
        """
        import importlib.metadata, json, sys
        import neoq
        from neoq.backends.registry import schemes
        assert not list(importlib.metadata.entry_points(group="neoq.backends"))
        with neoq.new("memory://") as nq:
            nq.enqueue(neoq.Job(queue="q", payload={}))
            kind = type(nq.backend).__name__
        try:
            neoq.new("postgresql://127.0.0.1:1/x")
        except neoq.ConfigurationError as exc:
            missing = str(exc)
        print(json.dumps({"schemes": schemes(), "kind": kind, "missing": missing}))
        """
    )
    # A bare copy of the package: the checkout may hold a neoq.egg-info that a reader of metadata finds.
    tree = tmp_path / "src"
    shutil.copytree(ROOT / "neoq", tree / "neoq", ignore=shutil.ignore_patterns("__pycache__"))
    # -S: no site-packages, so neither neoq's distribution nor psycopg; -I: no user site, no PYTHON* variables.
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", f"import sys; sys.path.insert(0, {str(tree)!r})\n{code}"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["schemes"] == ["memory", "postgresql", "postgres"] and out["kind"] == "MemoryBackend"
    assert "pip install neoq[postgres]" in out["missing"]


def test_backend_class_by_scheme() -> None:
    assert backend_class("memory") is MemoryBackend
    from neoq.backends.postgres import PostgresBackend

    assert backend_class("postgresql") is backend_class("postgres") is PostgresBackend
    assert schemes()[:3] == ["memory", "postgresql", "postgres"]
    with pytest.raises(ConfigurationError, match=r"unknown backend URL scheme nope://; accepted: memory://"):
        backend_class("nope")


def test_a_backend_without_from_url_says_to_pass_it_as_an_object() -> None:
    class Handmade(Backend):  # abstract, and from_url is a classmethod: nothing to implement for this test
        pass

    with pytest.raises(ConfigurationError, match=r"Handmade cannot be built from a URL .* neoq.new\(backend=...\)"):
        Handmade.from_url("handmade://x")


def test_memory_from_url_takes_the_clients_clock_and_no_options() -> None:
    from neoq.clock import Clock

    clock = Clock()
    backend = MemoryBackend.from_url("memory://", clock=clock)
    assert isinstance(backend, MemoryBackend) and backend._clock is clock
    with pytest.raises(ConfigurationError, match="memory:// takes no backend options; got pool_max_size"):
        MemoryBackend.from_url("memory://", pool_max_size=2)


# -- capabilities -----------------------------------------------------------------------------------------


def test_memory_capabilities() -> None:
    with neoq.new("memory://") as nq:
        # Private to its client; no transactions; a waiting claim is woken by the enqueue itself; the
        # dashboard's search and the worker registry (neoq.backends.search).
        assert nq.backend.capabilities == frozenset({NOTIFY, DASHBOARD, WORKERS}) | FLOW_CONTROL
        assert nq.backend.handler_modes == frozenset({"transaction"})


def test_postgres_capabilities_describe_the_backend_as_configured() -> None:
    """No server needed: capabilities are known before ``open()``."""
    from neoq.backends.postgres import PostgresBackend

    url = "postgresql://app:topsecret@127.0.0.1:5432/app"
    everything = frozenset({TRANSACTION, ENQUEUE_IN_TRANSACTION, SHARED, NOTIFY, DASHBOARD, WORKERS}) | FLOW_CONTROL
    assert PostgresBackend(url).capabilities == everything
    assert PostgresBackend(url).capabilities <= KNOWN
    # Lease mode by default: handlers get no transaction. No LISTEN: waiting claims poll.
    assert TRANSACTION not in PostgresBackend(url, mode="lease").capabilities
    assert NOTIFY not in PostgresBackend(url, listen=False).capabilities
    assert PostgresBackend(url).handler_modes == frozenset({"transaction", "lease"})
    assert PostgresBackend.from_url(url, clock=None, pool_max_size=3)._pool_max == 3


def test_a_backend_says_whether_release_is_needed() -> None:
    """The runtime calls ``release`` when the backend asks for it, not by looking at its methods."""

    class Releasing(MemoryBackend):
        needs_release = True

        def __init__(self) -> None:
            super().__init__()
            self.released: list[str] = []

        def release(self, claim: neoq.backends.Claim) -> None:
            self.released.append(claim.job.id or "")

    backend = Releasing()
    with neoq.new(backend=backend) as nq:
        ids = nq.enqueue_many([Job(queue="q", payload={"n": n}) for n in range(5)])
        nq.start("q", lambda job: None, concurrency=2)
        wait_for(lambda: sorted(backend.released) == sorted(ids))
    assert MemoryBackend.needs_release is False and Backend.needs_release is True


def test_the_handler_modes_a_backend_serves_are_its_own_to_declare() -> None:
    """The base class accepts the modes a backend declares, and names no backend when it refuses one."""

    class Leasing(MemoryBackend):
        handler_modes = frozenset({"transaction", "lease"})

    with neoq.new(backend=Leasing()) as nq:
        nq.start("leased", lambda job: None, mode="lease")
        job_id = nq.enqueue(Job(queue="leased", payload={}))
        wait_for(lambda: nq.get_job(job_id).status is neoq.JobStatus.PROCESSED)  # type: ignore[union-attr]
    with neoq.new("memory://") as nq, pytest.raises(ConfigurationError) as refused:
        nq.start("leased", lambda job: None, mode="lease")
    assert str(refused.value) == "MemoryBackend does not support mode='lease' (queue 'leased'); it serves 'transaction'"
