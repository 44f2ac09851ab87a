"""``python -m neoq``: the ``neoq`` command (see ``neoq.cli``)."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
