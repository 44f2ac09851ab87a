"""``python manage.py neoq jobs|stats|migrate|enqueue ...``: the ``neoq`` command line on the project's settings.

The backend is the one the project's settings give neoq (``settings.NEOQ`` / ``NEOQ_URL`` / the
``default`` database), so nothing is configured twice. The arguments are ``neoq``'s (``neoq
--help``); ``--json`` goes first: ``manage.py neoq --json stats``. The worker is ``manage.py
neoq_worker``.
"""

from __future__ import annotations

import argparse
import sys
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from neoq.errors import NeoqError

#: neoq's options that go before its command; here they may come anywhere.
_GLOBAL_FLAGS = ("--json", "--traceback")


class Command(BaseCommand):  # type: ignore[misc]  # Django ships no type hints
    help = (
        "neoq's command line with the project's neoq settings: jobs list|show|retry|cancel, stats, migrate, "
        "enqueue (see `neoq --help`). The worker is `manage.py neoq_worker`."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("arguments", nargs=argparse.REMAINDER, metavar="COMMAND ...", help="neoq's arguments")

    def handle(self, *args: Any, arguments: list[str], **options: Any) -> None:
        from neoq.cli import main

        from ...conf import load_settings

        words = [word for word in arguments if not word.startswith("-")]
        if not words or words[0] == "worker":
            raise CommandError(
                "give a neoq command: jobs, stats, migrate or enqueue (the worker is manage.py neoq_worker)"
            )
        if "--url" in arguments:
            raise CommandError("the backend comes from the project's settings (NEOQ, NEOQ_URL): no --url here")
        try:
            url = load_settings().url
        except NeoqError as exc:
            raise CommandError(str(exc)) from None
        flags = [word for word in arguments if word in _GLOBAL_FLAGS]
        rest = [word for word in arguments if word not in _GLOBAL_FLAGS]
        status = main(["--url", url, *flags, *rest])
        if status:
            sys.exit(status)  # neoq has printed its one-line error
