"""How the ``neoq`` command fails: its exit statuses, and the error it reports as one line."""

from __future__ import annotations

__all__ = ["EXIT_ERROR", "EXIT_OK", "EXIT_USAGE", "CommandError"]

#: Exit status of a command that succeeded.
EXIT_OK = 0
#: Exit status of any error but a usage error.
EXIT_ERROR = 1
#: Exit status of a usage error (argparse's).
EXIT_USAGE = 2


class CommandError(Exception):
    """A failure to report as one line on stderr, exiting 1."""
