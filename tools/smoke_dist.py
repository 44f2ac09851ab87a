#!/usr/bin/env python3
"""Check the built distributions: each installs in a clean virtualenv and works.

    python -m build --outdir dist && python tools/smoke_dist.py dist

For the wheel: its file list holds the package's data (``py.typed``, the PostgreSQL backend's SQL
files) and the optional integrations. For the wheel and for the sdist: a new virtualenv, ``pip install``
of the file alone, then ``import neoq`` (the version is the one in ``neoq/__init__.py``, the single
source), a job run end to end on the in-memory backend, the SQL files read as package resources,
and the ``neoq --help`` console script. Exits non-zero at the first failure.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tarfile
import tempfile
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

REQUIRED_IN_WHEEL = [
    "neoq/__init__.py",
    "neoq/py.typed",
    "neoq/backends/postgres/sql/queries.sql",
    "neoq/backends/postgres/sql/migrations/0001_initial.sql",
    "neoq/backends/sqlite/sql/migrations/0001_initial.sql",
    "neoq/contrib/flask.py",
    "neoq/contrib/django/apps.py",
    "neoq/contrib/django/management/commands/neoq_worker.py",
    "neoq/dashboard/templates/overview.html",
    "neoq/dashboard/static/dashboard.js",
    "neoq/dashboard/static/dashboard.css",
]

CHECK = r"""
import sys
from importlib.resources import files

import neoq

assert neoq.__version__ == sys.argv[1], (neoq.__version__, sys.argv[1])
sql = files("neoq.backends.postgres") / "sql"
names = sorted(p.name for p in sql.iterdir())
assert "queries.sql" in names, names
migrations = sorted(p.name for p in (sql / "migrations").iterdir() if p.name.endswith(".sql"))
assert migrations and migrations[0].startswith("0001"), migrations
assert "select" in (sql / "queries.sql").read_text().lower()

from importlib.metadata import entry_points

backends = {e.name: e.value for e in entry_points(group="neoq.backends")}
assert backends.get("memory") == "neoq.backends.memory:MemoryBackend", backends
assert backends.get("postgresql") == backends.get("postgres") == "neoq.backends.postgres:PostgresBackend", backends
assert backends.get("sqlite") == "neoq.backends.sqlite:SqliteBackend", backends

seen = []
with neoq.new("memory://") as nq:
    nq.start("smoke", lambda job: seen.append(job.payload["n"]))
    job_id = nq.enqueue(neoq.Job(queue="smoke", payload={"n": 1}))
    import time
    deadline = time.monotonic() + 10
    while nq.get_job(job_id).status != neoq.JobStatus.PROCESSED:
        assert time.monotonic() < deadline, nq.get_job(job_id)
        time.sleep(0.01)
assert seen == [1], seen

import tempfile
with tempfile.TemporaryDirectory() as folder:  # the SQLite migrations read as package resources
    with neoq.new("sqlite:///" + folder + "/jobs.db") as nq:
        job_id = nq.enqueue(neoq.Job(queue="smoke", payload={"n": 2}))
        assert nq.get_job(job_id).status == neoq.JobStatus.NEW
print("neoq", neoq.__version__, "ok:", len(migrations), "migration(s)")
"""


def source_version() -> str:
    tree = ast.parse((ROOT / "neoq" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets):
            return str(ast.literal_eval(node.value))
    raise SystemExit("smoke: no __version__ in neoq/__init__.py")


def one(dist: Path, pattern: str) -> Path:
    found = sorted(dist.glob(pattern))
    if len(found) != 1:
        raise SystemExit(f"smoke: expected one {pattern} in {dist}, found {[p.name for p in found]}")
    return found[0]


def check_contents(wheel: Path, sdist: Path, version: str) -> None:
    if f"-{version}-" not in wheel.name and f"-{version}." not in sdist.name:
        raise SystemExit(f"smoke: {wheel.name} / {sdist.name} do not carry version {version}")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [name for name in REQUIRED_IN_WHEEL if name not in names]
    if missing:
        raise SystemExit(f"smoke: missing from {wheel.name}: {missing}")
    stray = sorted(name for name in names if name.split("/")[0] not in ("neoq", f"neoq-{version}.dist-info"))
    if stray:
        raise SystemExit(f"smoke: {wheel.name} holds files outside the package: {stray[:10]}")
    with tarfile.open(sdist) as archive:
        members = {m.name.split("/", 1)[1] for m in archive.getmembers() if "/" in m.name}
    missing = [name for name in REQUIRED_IN_WHEEL if name not in members]
    if missing:
        raise SystemExit(f"smoke: missing from {sdist.name}: {missing}")
    print(f"smoke: {wheel.name} and {sdist.name} hold the package data")


def check_install(artifact: Path, version: str) -> None:
    with tempfile.TemporaryDirectory(prefix="neoq-smoke-") as tmp:
        env_dir = Path(tmp) / "venv"
        venv.EnvBuilder(with_pip=True).create(env_dir)
        python = env_dir / "bin" / "python"
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(artifact)],
            check=True,
        )
        # Run from the temporary directory so the checkout's own neoq/ cannot be imported by accident.
        subprocess.run([str(python), "-c", CHECK, version], check=True, cwd=tmp)
        out = subprocess.run(
            [str(env_dir / "bin" / "neoq"), "--help"], check=True, cwd=tmp, capture_output=True, text=True
        )
        if "worker" not in out.stdout:
            raise SystemExit(f"smoke: `neoq --help` does not list the worker command:\n{out.stdout}")
    print(f"smoke: {artifact.name} installs in a clean virtualenv and runs")


def main(argv: list[str]) -> int:
    dist = Path(argv[1] if len(argv) > 1 else ROOT / "dist")
    version = source_version()
    wheel, sdist = one(dist, "neoq-*.whl"), one(dist, "neoq-*.tar.gz")
    check_contents(wheel, sdist, version)
    for artifact in (wheel, sdist):
        check_install(artifact, version)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
