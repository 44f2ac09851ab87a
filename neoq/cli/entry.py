"""The entry point of ``neoq``: parse, run the command, turn what it raised into a line and an exit status."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from collections.abc import Sequence

from ..errors import NeoqError
from ..redact import mask_secrets
from .errors import EXIT_ERROR, EXIT_OK, CommandError
from .output import one_line
from .parser import build_parser

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``neoq`` command with ``argv`` (default ``sys.argv[1:]``); return the exit status.

    A usage error raises ``SystemExit(2)`` after printing the usage text, as argparse does.
    """
    args = build_parser().parse_args(argv)
    try:
        status: int = args.func(args)
        return status
    except KeyboardInterrupt:
        print("neoq: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except BrokenPipeError:
        # The reader went away (neoq jobs list | head): not an error worth a message.
        _silence_stdout()
        return EXIT_OK
    except (CommandError, NeoqError) as exc:
        return _fail(args, str(exc) or type(exc).__name__)
    except Exception as exc:
        return _fail(args, f"unexpected {type(exc).__name__}: {exc}")


def _fail(args: argparse.Namespace, message: str) -> int:
    if getattr(args, "traceback", False):
        print(mask_secrets(traceback.format_exc()), file=sys.stderr, end="")
    print(f"neoq: error: {one_line(message)}", file=sys.stderr)
    return EXIT_ERROR


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
