"""Backends: where jobs are stored. ``Backend`` is the contract; subclass it to add a store.

``MemoryBackend`` and ``SqliteBackend`` (stdlib ``sqlite3``) need nothing installed. ``PostgresBackend``
needs the ``postgres`` extra (``pip install neoq[postgres]``), ``MySQLBackend`` the ``mysql`` extra,
``RedisBackend`` the ``redis`` extra; each is imported on first use, so ``import neoq`` works without them.
What a store offers beyond the contract is ``Backend.capabilities`` (names in ``capabilities``);
``neoq.new(url)`` finds a backend by the URL's scheme among the ``neoq.backends`` entry points
(``registry``), so a package outside neoq can add one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Backend, Claim, Outcome
from .memory import MemoryBackend

if TYPE_CHECKING:
    from .mysql import MySQLBackend
    from .postgres import PostgresBackend
    from .redis import RedisBackend
    from .sqlite import SqliteBackend

__all__ = [
    "Backend",
    "Claim",
    "MemoryBackend",
    "MySQLBackend",
    "Outcome",
    "PostgresBackend",
    "RedisBackend",
    "SqliteBackend",
]


def __getattr__(name: str) -> Any:
    if name == "PostgresBackend":
        from .postgres import PostgresBackend

        return PostgresBackend
    if name == "RedisBackend":
        from .redis import RedisBackend

        return RedisBackend
    if name == "SqliteBackend":
        from .sqlite import SqliteBackend

        return SqliteBackend
    if name == "MySQLBackend":
        from .mysql import MySQLBackend

        return MySQLBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
