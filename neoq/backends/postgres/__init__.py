"""The PostgreSQL backend (``pip install neoq[postgres]``): see ``docs/postgres.md``.

``neoq.new("postgresql://...")`` picks it. psycopg 3 and psycopg_pool are imported here and only
here; without them, constructing ``PostgresBackend`` raises ``ConfigurationError`` saying which
extra to install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...errors import ConfigurationError
from ..base import Backend

__all__ = ["PostgresBackend"]

if TYPE_CHECKING:
    from .backend import PostgresBackend
else:
    try:
        from .backend import PostgresBackend
    except ImportError as exc:  # psycopg or psycopg_pool is not installed
        if exc.name not in ("psycopg", "psycopg_pool") and not str(exc.name or "").startswith("psycopg"):
            raise
        _missing = str(exc.name)

        def _not_installed() -> ConfigurationError:
            return ConfigurationError(
                f"the PostgreSQL backend needs {_missing}, which is not installed: pip install neoq[postgres]"
            )

        class PostgresBackend(Backend):
            """Stand-in that explains how to install the PostgreSQL driver."""

            def __new__(cls, *args: Any, **kwargs: Any) -> Any:
                raise _not_installed()

            @classmethod
            def from_url(cls, url: str, **options: Any) -> Any:
                raise _not_installed()
