"""The SQLite backend's settings: the URL's path, the options, and the checks made before anything is stored.

``sqlite:///relative/path.db`` (three slashes) and ``sqlite:////absolute/path.db`` (four), as
SQLAlchemy reads them. ``:memory:`` is refused: each connection would get a database of its own,
so nothing would be shared, not even between the threads of one client. The file must be on a
local file system of the host (SQLite's locks do not hold over NFS or SMB), in a directory that
exists and that neoq may write (the ``-wal`` and ``-shm`` files live beside the database).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypedDict

from ...errors import ConfigurationError
from ...job import setting_seconds

__all__ = [
    "NETWORK_FILE_SYSTEMS",
    "SqliteOptions",
    "SqliteSettings",
    "check_path",
    "file_system_type",
    "parse_settings",
    "path_from_url",
]

#: The lease of a running job (seconds): a worker that dies is noticed once it runs out.
DEFAULT_LEASE = 30.0
#: The safety-net look of an idle queue (seconds); the watcher wakes loops sooner.
DEFAULT_POLL_INTERVAL = 1.0
#: How often an open client's watcher checks ``PRAGMA data_version`` for another process's commits.
DEFAULT_WATCH_INTERVAL = 0.01
#: How long a write waits for a file another process keeps locked before it fails (seconds).
DEFAULT_BUSY_TIMEOUT = 30.0
#: Connections of one client's pool (readers run side by side in WAL mode; writers take turns).
DEFAULT_POOL_SIZE = 4

#: File system types (``/proc/mounts``) on which SQLite's locking is not reliable.
NETWORK_FILE_SYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smbfs",
        "smb3",
        "ncpfs",
        "afs",
        "9p",
        "ceph",
        "glusterfs",
        "fuse.glusterfs",
        "fuse.sshfs",
        "sshfs",
        "fuse.s3fs",
        "fuse.rclone",
        "lustre",
        "gpfs",
        "davfs",
        "fuse.davfs",
        "virtiofs",
        "vboxsf",
    }
)

_SYNCHRONOUS = {"normal": "NORMAL", "full": "FULL", "extra": "EXTRA"}


class SqliteOptions(TypedDict, total=False):
    """The keyword options of ``SqliteBackend`` (and of ``neoq.new("sqlite:///...")``)."""

    lease: float
    poll_interval: float
    watch_interval: float
    busy_timeout: float
    pool_size: int
    synchronous: str | bool
    migrate: bool


@dataclass(frozen=True)
class SqliteSettings:
    """Checked settings of one backend."""

    #: The database file, absolute.
    path: str
    lease: float
    poll_interval: float
    watch_interval: float
    busy_timeout: float
    pool_size: int
    #: ``PRAGMA synchronous``: ``NORMAL`` (default), ``FULL`` or ``EXTRA``.
    synchronous: str
    migrate: bool


def path_from_url(url: str) -> str:
    """The file path of a ``sqlite://`` URL: three slashes relative, four absolute."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "sqlite":
        raise ConfigurationError("a SQLite URL starts with sqlite:/// (relative path) or sqlite://// (absolute)")
    if not rest.startswith("/"):
        raise ConfigurationError(
            "a SQLite URL has no host: write sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    path = rest[1:]
    _refuse_memory(path)
    if "?" in path:
        raise ConfigurationError(
            "a SQLite URL takes no ?query: give options as keyword arguments of neoq.new() (e.g. lease=10)"
        )
    return path


def _refuse_memory(path: str) -> None:
    if not path or path == ":memory:" or path.startswith("file::memory:") or "mode=memory" in path:
        raise ConfigurationError(
            "the SQLite backend needs a database file: an in-memory SQLite database (:memory:) cannot be shared "
            "between threads and processes; use memory:// for jobs that live in this process only, or "
            "sqlite:///path/to/jobs.db"
        )


def parse_settings(path: str, **options: object) -> SqliteSettings:
    """Check ``path`` and the options; raise ``ConfigurationError`` saying what to fix."""
    unknown = set(options) - set(SqliteOptions.__annotations__)
    if unknown:
        raise ConfigurationError(
            f"unknown SQLite option(s) {', '.join(sorted(unknown))}; accepted: "
            f"{', '.join(sorted(SqliteOptions.__annotations__))}"
        )
    if not isinstance(path, str):
        raise ConfigurationError(f"the SQLite path must be a str, not {type(path).__name__}")
    _refuse_memory(path)
    lease = _positive(options.get("lease", DEFAULT_LEASE), "lease")
    poll = _positive(options.get("poll_interval", DEFAULT_POLL_INTERVAL), "poll_interval")
    watch = _positive(options.get("watch_interval", DEFAULT_WATCH_INTERVAL), "watch_interval")
    busy = _positive(options.get("busy_timeout", DEFAULT_BUSY_TIMEOUT), "busy_timeout")
    pool_size = options.get("pool_size", DEFAULT_POOL_SIZE)
    if not isinstance(pool_size, int) or isinstance(pool_size, bool) or pool_size < 1:
        raise ConfigurationError(f"pool_size must be an int of at least 1, not {pool_size!r}")
    synchronous = options.get("synchronous", "normal")
    if synchronous is True:
        synchronous = "full"
    if not isinstance(synchronous, str) or synchronous.lower() not in _SYNCHRONOUS:
        raise ConfigurationError(f"synchronous must be 'normal', 'full' or 'extra', not {synchronous!r}")
    migrate = options.get("migrate", True)
    if not isinstance(migrate, bool):
        raise ConfigurationError(f"migrate must be True or False, not {migrate!r}")
    return SqliteSettings(
        path=os.path.abspath(os.path.expanduser(path)),
        lease=lease,
        poll_interval=poll,
        watch_interval=watch,
        busy_timeout=busy,
        pool_size=pool_size,
        synchronous=_SYNCHRONOUS[synchronous.lower()],
        migrate=migrate,
    )


def _positive(value: object, name: str) -> float:
    seconds = setting_seconds(value, name)  # type: ignore[arg-type]
    if seconds <= 0:
        raise ConfigurationError(f"{name} must be above 0 seconds, not {value!r}")
    return seconds


def file_system_type(path: str, mounts: str = "/proc/mounts") -> str | None:
    """The type of the file system holding ``path`` (the longest mount point above it), or None."""
    try:
        with open(mounts, encoding="utf-8", errors="replace") as file:
            lines = file.read().splitlines()
    except OSError:
        return None  # not Linux, or no /proc: nothing to tell
    best, kind = "", None
    target = os.path.realpath(path)
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def check_path(path: str, *, mounts: str = "/proc/mounts") -> None:
    """Refuse, before anything is stored, a file SQLite could not share safely or neoq could not write.

    A missing directory, a network file system, a read-only file or directory, a full disk: each a
    ``ConfigurationError`` naming the path and what to do.
    """
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise ConfigurationError(
            f"the directory of the SQLite database {path!r} does not exist: create {folder!r} first"
        )
    kind = file_system_type(folder, mounts)
    if kind is not None and (kind in NETWORK_FILE_SYSTEMS or kind.split(".")[0] in NETWORK_FILE_SYSTEMS):
        raise ConfigurationError(
            f"the SQLite database {path!r} is on a network file system ({kind}): SQLite's locks are not reliable "
            "there and jobs could run twice or be lost; put the file on a local disk of this host, or use "
            "PostgreSQL to share jobs between machines"
        )
    if os.path.isdir(path):
        raise ConfigurationError(f"the SQLite database path {path!r} is a directory; name a file inside it")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise ConfigurationError(
            f"the SQLite database {path!r} is read-only: neoq writes to it (claims, outcomes); make it writable"
        )
    if not os.access(folder, os.W_OK):
        raise ConfigurationError(
            f"the directory {folder!r} of the SQLite database is read-only: SQLite keeps its -wal and -shm files "
            "beside the database; make the directory writable"
        )
    try:
        stat = os.statvfs(folder)
    except OSError:
        return
    if stat.f_bavail * stat.f_frsize < 64 * 1024:
        raise ConfigurationError(
            f"the disk holding the SQLite database {path!r} is full: free some space and start again"
        )
