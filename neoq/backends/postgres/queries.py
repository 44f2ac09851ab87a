"""The named SQL of the PostgreSQL backend, read once from ``sql/queries.sql``."""

from __future__ import annotations

import re
from importlib import resources

__all__ = ["QUERIES", "parse_queries"]

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def parse_queries(text: str) -> dict[str, str]:
    """Return the blocks of ``text`` by name: each starts at a ``-- name: x`` line."""
    queries: dict[str, str] = {}
    matches = list(_NAME.finditer(text))
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        body = "\n".join(
            line for line in text[match.end() : end].splitlines() if line.strip() and not line.lstrip().startswith("--")
        )
        name = match.group(1)
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice in queries.sql")
        queries[name] = body.strip().rstrip(";")
    return queries


#: Every named query, by name.
QUERIES: dict[str, str] = parse_queries(
    resources.files(__package__).joinpath("sql").joinpath("queries.sql").read_text(encoding="utf-8")
)
