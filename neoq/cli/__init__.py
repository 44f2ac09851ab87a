"""The ``neoq`` command: run workers, enqueue jobs, migrate the schema, inspect and manage jobs.

Usage (``neoq --help``, ``neoq COMMAND --help``)::

    neoq [--url URL] [--json] COMMAND ...
    neoq worker MODULE:ATTR [--queue Q ...]
    neoq enqueue QUEUE JSON [--run-after ISO] [--deadline ISO] [--max-retries N] [--priority N]
    neoq migrate
    neoq jobs list [--queue Q] [--status S] [--limit N] | show ID | retry ID | cancel ID
    neoq queues list | pause Q | resume Q
    neoq stats

Exit status: 0 on success; 2 for a usage error (with the usage text); 1 for any other error,
reported as one line on stderr, never a traceback (``--traceback`` shows it). ``neoq worker``
exits 0 after a graceful shutdown, and ``128 + signal`` (130 for SIGINT, 143 for SIGTERM) when
a second signal stops it at once (the policy is ``neoq.signals``'s).

The package, in the order a command runs: ``entry`` (``main``), ``parser``, ``commands``,
``runner`` (``neoq worker``'s process: ``load_client``, ``run_worker``), ``output``, ``errors``.
"""

from __future__ import annotations

from ..redact import mask_secrets
from .entry import main
from .errors import CommandError
from .output import format_table, job_to_dict
from .parser import build_parser
from .runner import load_client, run_worker

__all__ = [
    "CommandError",
    "build_parser",
    "format_table",
    "job_to_dict",
    "load_client",
    "main",
    "mask_secrets",
    "run_worker",
]
