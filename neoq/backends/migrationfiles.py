"""The numbered ``sql/migrations/NNNN_name.sql`` files a SQL backend ships, read once.

Each SQL backend (PostgreSQL, SQLite, MySQL) keeps its schema as such files and applies the ones a
database lacks under its own lock; reading and checking the files is the same for all of them.
"""

from __future__ import annotations

import re
from importlib import resources

__all__ = ["read_migrations"]

_FILE = re.compile(r"^(\d{4})_(\w+)\.sql$")


def read_migrations(package: str, datastore: str) -> tuple[tuple[int, str, str], ...]:
    """``(version, name, sql)`` of every migration under ``package``'s ``sql/migrations``, in order.

    Raises ``RuntimeError`` (a packaging bug) unless the versions are 1..n without gaps.
    """
    folder = resources.files(package).joinpath("sql").joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [version for version, _, _ in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"neoq {datastore} migrations must be numbered 1..n without gaps, found {versions}")
    return tuple(found)
