"""The named SQL of the PostgreSQL backend, read once from ``sql/queries.sql``."""

from __future__ import annotations

import re
from importlib import resources

__all__ = ["QUERIES", "parse_queries"]

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
_INCLUDE = re.compile(r"^\s*--\s*include:\s*(\w+)\s*$")


def parse_queries(text: str) -> dict[str, str]:
    """Return the blocks of ``text`` by name: each starts at a ``-- name: x`` line. A line
    ``-- include: y`` in a block stands for the text of block ``y``, defined before it."""
    queries: dict[str, str] = {}
    matches = list(_NAME.finditer(text))
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        lines = []
        for line in text[match.end() : end].splitlines():
            included = _INCLUDE.match(line)
            if included is not None:
                if included.group(1) not in queries:
                    raise ValueError(f"query {match.group(1)!r} includes {included.group(1)!r}, not defined before it")
                lines.append(queries[included.group(1)])
            elif line.strip() and not line.lstrip().startswith("--"):
                lines.append(line)
        body = "\n".join(lines)
        name = match.group(1)
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice in queries.sql")
        queries[name] = body.strip().rstrip(";")
    return queries


#: Every named query, by name.
QUERIES: dict[str, str] = parse_queries(
    resources.files(__package__).joinpath("sql").joinpath("queries.sql").read_text(encoding="utf-8")
)
