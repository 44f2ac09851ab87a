"""The SQLite backend (stdlib ``sqlite3``, nothing to install): see ``docs/sqlite.md``.

``neoq.new("sqlite:///jobs.db")`` (relative path) or ``neoq.new("sqlite:////var/lib/app/jobs.db")``
(absolute) picks it: durable jobs in one file shared by the processes of one host.
"""

from __future__ import annotations

from .backend import SqliteBackend

__all__ = ["SqliteBackend"]
