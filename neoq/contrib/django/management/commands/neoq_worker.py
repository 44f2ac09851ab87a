"""``python manage.py neoq_worker [--queue Q ...] [--backend ALIAS]``: run neoq handlers until SIGTERM/SIGINT."""

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
        "Run the neoq handlers of this project (@neoq.contrib.django.handler and @cron functions, and the "
        "queues of the NeoqTaskBackend task backends) until SIGTERM/SIGINT; a second signal stops at once. "
        "Only worker processes tick the @cron schedules."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--queue",
            action="append",
            dest="queues",
            metavar="QUEUE",
            help="only this queue (repeatable): a Django task queue name (default, emails, ...) or a neoq queue",
        )
        parser.add_argument(
            "--backend", metavar="ALIAS", help="only the task queues of this TASKS alias (a NeoqTaskBackend)"
        )

    def handle(
        self,
        *args: Any,
        queues: list[str] | None = None,
        backend: str | None = None,
        verbosity: int = 1,
        **options: Any,
    ) -> None:
        root = logging.getLogger()
        if not root.handlers:
            # Django's default LOGGING leaves the root logger bare: show the job outcome lines.
            logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s %(message)s")
            root.setLevel(_LEVELS.get(verbosity, logging.INFO))
        try:
            client = get_client()
            served = _served(client, queues, backend)
            if not client.handlers:
                raise CommandError(
                    "no neoq handler is registered: define @neoq.contrib.django.handler functions in "
                    "<app>/neoq_jobs.py, or configure a NeoqTaskBackend in TASKS"
                )
            run_worker(client, served, name="django project")
        except (NeoqError, WorkerCommandError) as exc:
            raise CommandError(str(exc)) from None
        finally:
            shutdown_client()


def _served(client: Any, queues: list[str] | None, alias: str | None) -> list[str] | None:
    """The neoq queues to serve: ``--queue`` names are neoq queues or Django task queues."""
    from neoq.contrib.django.tasks import neoq_task_aliases, register_task_handlers, task_backend

    aliases = [alias] if alias is not None else neoq_task_aliases()
    backends = [task_backend(name) for name in aliases]
    # QUEUES: [] (any queue) serves the --queue names, else the ones the store has jobs of.
    registered = register_task_handlers(client, aliases=aliases, queue_names=queues or (), scan_store=True)
    if not queues:
        if alias is None:
            return None
        return sorted(queue for b in backends for queue in client.handlers if _of(b, queue))
    served = []
    for name in queues:
        if alias is None and name in client.handlers and name not in registered:
            served.append(name)
            continue
        task_queues = [b.neoq_queue(name) for b in backends if b.neoq_queue(name) in client.handlers]
        served.append(task_queues[0] if task_queues else name)  # unknown: run_worker says which exist
    return served


def _of(backend: Any, queue: str) -> bool:
    if not queue.startswith(backend.queue_prefix):
        return False
    return not backend.queues or queue[len(backend.queue_prefix) :] in backend.queues
