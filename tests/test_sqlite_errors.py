"""The SQLite backend's clear errors and its file handling: URLs, a missing directory, ``:memory:``, a
network file system, a read-only file, a full disk, a file another process keeps locked, migrations
applied once, and nothing left open after shutdown."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import neoq
from neoq import BackendError, ConfigurationError, Job, NeoqError
from neoq.backends.sqlite import SqliteBackend
from neoq.backends.sqlite.migrations import available_migrations
from neoq.backends.sqlite.settings import check_path, file_system_type, path_from_url
from neoq.testing import wait_for


def _db_fds(path: Path) -> list[str]:
    """This process's open file descriptors on the database file and its -wal/-shm files."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(path)):
            found.append(target)
    return found


# -- URLs and options ----------------------------------------------------------------------------


def test_three_slashes_are_relative_and_four_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert path_from_url("sqlite:///jobs.db") == "jobs.db"
    assert path_from_url("sqlite:////var/lib/app/jobs.db") == "/var/lib/app/jobs.db"
    monkeypatch.chdir(tmp_path)
    with neoq.new("sqlite:///relative.db") as nq:
        assert nq.backend.path == str(tmp_path / "relative.db")  # type: ignore[attr-defined]
        assert {"shared", "notify"} <= nq.backend.capabilities
        assert not {"transaction", "enqueue_in_transaction"} & nq.backend.capabilities
        nq.enqueue(Job(queue="q", payload={"a": 1}))
    assert (tmp_path / "relative.db").exists()
    with neoq.new(f"sqlite:///{tmp_path / 'relative.db'}") as nq:  # sqlite:////tmp/...: the same file
        assert nq.stats()["q"]["new"] == 1


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("sqlite:///:memory:", "cannot be shared"),
        ("sqlite://", "no host"),
        ("sqlite:///", "cannot be shared"),
        ("sqlite:///file::memory:?cache=shared", "cannot be shared"),
        ("sqlite://host/jobs.db", "no host"),
        ("sqlite:///jobs.db?lease=3", "keyword arguments"),
    ],
)
def test_urls_that_cannot_work_are_refused_before_anything_is_stored(url: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        neoq.new(url)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"lease": 0}, "lease"),
        ({"poll_interval": -1}, "poll_interval"),
        ({"pool_size": 0}, "pool_size"),
        ({"synchronous": "off"}, "synchronous"),
        ({"migrate": "yes"}, "migrate"),
        ({"pool_max_size": 3}, "unknown SQLite option"),
    ],
)
def test_bad_options_raise_configuration_error(tmp_path: Path, options: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        neoq.new(f"sqlite:///{tmp_path / 'jobs.db'}", **options)


# -- where the file is ---------------------------------------------------------------------------


def test_a_missing_directory_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such"
    with pytest.raises(ConfigurationError, match="does not exist: create") as info:
        neoq.new(f"sqlite:///{missing / 'jobs.db'}")
    assert str(missing) in str(info.value)
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("kind", ["nfs", "nfs4", "cifs", "smbfs", "fuse.sshfs"])
def test_a_network_file_system_is_refused(tmp_path: Path, kind: str) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/vda1 / ext4 rw 0 0\nserver:/export {tmp_path} {kind} rw 0 0\n")
    assert file_system_type(str(tmp_path / "jobs.db"), str(mounts)) == kind
    with pytest.raises(ConfigurationError, match="network file system") as info:
        check_path(str(tmp_path / "jobs.db"), mounts=str(mounts))
    assert kind in str(info.value) and "PostgreSQL" in str(info.value)
    assert not (tmp_path / "jobs.db").exists()


def test_a_local_file_system_is_accepted(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/vda1 / ext4 rw 0 0\nserver:/export {tmp_path}/elsewhere nfs rw 0 0\n")
    check_path(str(tmp_path / "jobs.db"), mounts=str(mounts))
    assert file_system_type(str(tmp_path / "jobs.db"), str(mounts)) == "ext4"
    assert file_system_type(str(tmp_path), str(tmp_path / "no-such-file")) is None


def _mount_tmpfs(size: str) -> Path:
    """A small tmpfs of its own (real file system limits); skips where this process may not mount one."""
    folder = Path(tempfile.mkdtemp(prefix="neoq-w-sqlite-fs-"))
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if proc.returncode != 0:
        folder.rmdir()
        pytest.skip(f"cannot mount a small tmpfs here: {proc.stderr.decode(errors='replace').strip()}")
    return folder


def _unmount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], check=False)
    folder.rmdir()


def test_a_read_only_file_or_directory_is_named(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        folder = tmp_path / "data"
        folder.mkdir()
        db = folder / "jobs.db"
        with neoq.new(f"sqlite:///{db}") as nq:
            nq.enqueue(Job(queue="q", payload={}))
        db.chmod(0o444)
        with pytest.raises(ConfigurationError, match="is read-only") as info:
            neoq.new(f"sqlite:///{db}")
        assert str(db) in str(info.value)
        db.chmod(0o644)
        folder.chmod(0o555)
        try:
            with pytest.raises(ConfigurationError, match=r"directory .* is read-only"):
                neoq.new(f"sqlite:///{db}")
        finally:
            folder.chmod(0o755)
        return
    # Root may write any file whatever its mode: a file system mounted read-only stops it too.
    folder = _mount_tmpfs("1m")
    try:
        db = folder / "jobs.db"
        with neoq.new(f"sqlite:///{db}") as nq:
            nq.enqueue(Job(queue="q", payload={}))
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        with pytest.raises(ConfigurationError, match="is read-only") as info:
            neoq.new(f"sqlite:///{db}")
        assert str(db) in str(info.value)
        with pytest.raises(ConfigurationError, match=r"directory .* is read-only"):
            neoq.new(f"sqlite:///{folder / 'other.db'}")
    finally:
        _unmount(folder)


@pytest.fixture
def tiny_disk() -> Iterator[Path]:
    """A 600 KiB tmpfs: a real full disk."""
    folder = _mount_tmpfs("600k")
    try:
        yield folder
    finally:
        _unmount(folder)


def test_a_full_disk_is_named_and_the_batch_that_did_not_fit_is_not_stored(tiny_disk: Path) -> None:
    stored = 0
    with neoq.new(f"sqlite:///{tiny_disk / 'jobs.db'}") as nq:
        with pytest.raises(BackendError) as info:
            for n in range(10_000):
                nq.enqueue_many([Job(queue="q", payload={"n": n, "i": i, "pad": "x" * 2000}) for i in range(5)])
                stored += 5
        message = str(info.value)
        assert "full" in message and "nothing was stored" in message and "locked" not in message, message
        assert nq.stats()["q"]["new"] == stored, "a batch that did not fit left nothing behind"
    with open(tiny_disk / "filler", "wb") as filler:  # take what is left
        try:
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
        except OSError:
            pass
    with pytest.raises(ConfigurationError, match="is full"):
        neoq.new(f"sqlite:///{tiny_disk / 'other.db'}")


# -- a busy file ---------------------------------------------------------------------------------


def test_a_file_locked_for_a_while_is_waited_for_not_reported(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    with neoq.new(f"sqlite:///{db}") as nq:
        other = sqlite3.connect(str(db), isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")  # another process's long write transaction
        releaser = threading.Timer(2.5, lambda: other.execute("COMMIT"))  # past SQLite's own 2 s busy wait
        releaser.start()
        started = time.monotonic()
        job_id = nq.enqueue(Job(queue="q", payload={}))
        waited = time.monotonic() - started
        releaser.join()
        other.close()
        assert waited >= 2.0
        assert nq.get_job(job_id) is not None


def test_a_file_locked_past_busy_timeout_fails_with_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    with neoq.new(f"sqlite:///{db}", busy_timeout=0.5) as nq:
        other = sqlite3.connect(str(db), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(BackendError) as info:
                nq.enqueue(Job(queue="q", payload={}))
        finally:
            other.execute("ROLLBACK")
            other.close()
        message = str(info.value)
        assert "stayed locked" in message and "busy_timeout" in message
        assert "database is locked" not in message
        assert nq.stats() == {}


def test_many_processes_writing_at_once_never_see_database_is_locked(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    neoq.new(url).shutdown()
    child = textwrap.dedent(
        """
        import sys
        import neoq
        with neoq.new(sys.argv[1]) as nq:
            for i in range(150):
                nq.enqueue(neoq.Job(queue="q", payload={"p": sys.argv[2], "i": i}))
            nq.enqueue_many([neoq.Job(queue="q", payload={"p": sys.argv[2], "b": i}) for i in range(50)])
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", child, url, str(p)], stderr=subprocess.PIPE, text=True)
        for p in range(4)
    ]
    errors = [proc.communicate(timeout=120)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0, 0], errors
    with neoq.new(url) as nq:
        assert nq.stats()["q"]["new"] == 800


# -- schema --------------------------------------------------------------------------------------


def test_migrations_are_applied_once_when_processes_start_together(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    child = "import sys, neoq; neoq.new(sys.argv[1]).shutdown()"
    procs = [subprocess.Popen([sys.executable, "-c", child, url], stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errors = [proc.communicate(timeout=60)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 4, errors
    conn = sqlite3.connect(str(tmp_path / "jobs.db"))
    try:
        versions = [row[0] for row in conn.execute("SELECT version FROM neoq_migrations ORDER BY version")]
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()
    assert versions == [v for v, _, _ in available_migrations()]
    assert mode == "wal"


def test_missing_migrations_reads_only_and_migrate_false_refuses_a_new_file(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    backend = SqliteBackend(str(db))
    assert backend.missing_migrations() == [v for v, _, _ in available_migrations()]
    assert not db.exists()
    with pytest.raises(ConfigurationError, match="neoq migrate"):
        SqliteBackend(str(db), migrate=False).open()
    assert backend.migrate() == [v for v, _, _ in available_migrations()]
    assert backend.migrate() == []
    assert backend.missing_migrations() == []
    SqliteBackend(str(db), migrate=False).open()


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    db.write_bytes(b"this is not a database, it is a text file" * 100)
    with pytest.raises(NeoqError, match="not a usable SQLite database"):
        neoq.new(f"sqlite:///{db}")


# -- nothing left open ---------------------------------------------------------------------------


def test_shutdown_leaves_no_thread_and_no_open_file(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    before = set(threading.enumerate())
    nq = neoq.new(f"sqlite:///{db}")
    done: list[int] = []
    nq.start("q", neoq.Handler(lambda job: done.append(1), concurrency=4))
    nq.enqueue_many([Job(queue="q", payload={"i": i}) for i in range(200)])
    wait_for(lambda: len(done) == 200, 20)
    assert _db_fds(db), "the client has the file open while it runs"
    nq.shutdown()
    left = [t.name for t in threading.enumerate() if t not in before and t.is_alive()]
    assert left == []
    assert _db_fds(db) == []
    assert nq.backend._conns is None  # type: ignore[attr-defined]
