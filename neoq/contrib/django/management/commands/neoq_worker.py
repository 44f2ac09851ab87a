"""``python manage.py neoq_worker [--queue Q ...]``: run neoq handlers until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from neoq.cli import CommandError as WorkerCommandError
from neoq.cli import run_worker
from neoq.contrib.django import get_client, shutdown_client
from neoq.errors import NeoqError

_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG, 3: logging.DEBUG}


class Command(BaseCommand):  # type: ignore[misc]  # Django ships no type hints
    help = (
        "Run the neoq handlers of this project (@neoq.contrib.django.handler functions and the queues "
        "of the NeoqTaskBackend task backends) until SIGTERM/SIGINT; a second signal stops at once."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--queue", action="append", dest="queues", metavar="QUEUE", help="only this queue (repeatable)"
        )

    def handle(self, *args: Any, queues: list[str] | None = None, verbosity: int = 1, **options: Any) -> None:
        root = logging.getLogger()
        if not root.handlers:
            # Django's default LOGGING leaves the root logger bare: show the job outcome lines.
            logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s %(message)s")
            root.setLevel(_LEVELS.get(verbosity, logging.INFO))
        try:
            client = get_client()
            if not client.handlers:
                raise CommandError(
                    "no neoq handler is registered: define @neoq.contrib.django.handler functions in "
                    "<app>/neoq_jobs.py, or configure a NeoqTaskBackend in TASKS"
                )
            run_worker(client, queues, name="django project")
        except (NeoqError, WorkerCommandError) as exc:
            raise CommandError(str(exc)) from None
        finally:
            shutdown_client()
