"""The MySQL 8.0+ / MariaDB 10.6+ backend (``pip install neoq[mysql]``): see ``docs/mysql.md``.

``neoq.new("mysql://user:password@host:3306/database")`` (or ``mariadb://``) picks it. PyMySQL is
imported here and only here; without it, constructing ``MySQLBackend`` raises
``ConfigurationError`` saying which extra to install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...errors import ConfigurationError
from ..base import Backend

__all__ = ["MySQLBackend"]

if TYPE_CHECKING:
    from .backend import MySQLBackend
else:
    try:
        from .backend import MySQLBackend
    except ImportError as exc:  # PyMySQL is not installed
        if exc.name != "pymysql" and not str(exc.name or "").startswith("pymysql."):
            raise

        def _not_installed() -> ConfigurationError:
            return ConfigurationError(
                "the MySQL backend needs PyMySQL, which is not installed: pip install neoq[mysql]"
            )

        class MySQLBackend(Backend):
            """Stand-in that explains how to install the MySQL driver."""

            def __new__(cls, *args: Any, **kwargs: Any) -> Any:
                raise _not_installed()

            @classmethod
            def from_url(cls, url: str, **options: Any) -> Any:
                raise _not_installed()
