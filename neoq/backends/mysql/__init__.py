"""MySQL 8.0+ and MariaDB 10.6+: ``neoq.new("mysql://user:password@host:3306/database")`` (docs/mysql.md)."""

from __future__ import annotations

from .backend import MySQLBackend

__all__ = ["MySQLBackend"]
