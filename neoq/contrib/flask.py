"""Flask integration: a ``Neoq`` extension in the ``init_app`` pattern, and ``flask neoq worker``.

::

    from flask import Flask
    from neoq import Job
    from neoq.contrib.flask import Neoq

    nq = Neoq()

    @nq.handler("emails", concurrency=4)
    def send_email(job):                  # runs inside an application context
        ...

    def create_app():
        app = Flask(__name__)
        app.config["NEOQ_URL"] = "postgresql://127.0.0.1/app"
        nq.init_app(app)

        @app.post("/signup")
        def signup():
            return {"job_id": nq.enqueue(Job(queue="emails", payload={"to": "a@example.com"}))}

        return app

Configuration comes from ``app.config``: ``NEOQ_URL`` is the backend URL (unset: ``neoq.new()``'s
default, the ``NEOQ_URL`` environment variable, else ``memory://``), and every other ``NEOQ_<NAME>``
key becomes the keyword ``<name>`` of ``neoq.new()`` (``NEOQ_SHUTDOWN_TIMEOUT``,
``NEOQ_POOL_MAX_SIZE``, ``NEOQ_IDLE_TRANSACTION_TIMEOUT``, ...).

The client of each app is created on first use (not in ``init_app``), so a process that forks
after creating the app (gunicorn ``--preload``) opens its connections in each worker process. It
is ``app.extensions["neoq"].client``, ``nq.client`` in an application context (or always, for an
extension built with ``Neoq(app)``), and ``current_neoq``, a proxy to the current app's client.

``@nq.cron("*/5 * * * *")`` declares a cron handler: its schedule ticks only in ``flask neoq
worker`` (never in the web processes that import the same module), each tick once across workers.

``flask neoq worker [--queue Q ...]`` runs the handlers registered with ``@nq.handler`` and
``@nq.cron`` until SIGTERM/SIGINT; each job runs inside an application context of the app. ``flask
neoq jobs|stats|migrate|enqueue`` is the ``neoq`` command line on the app's ``NEOQ_URL``.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from werkzeug.local import LocalProxy

import neoq
from neoq.errors import ConfigurationError
from neoq.handler import HandlerFunc
from neoq.job import Job

__all__ = ["EXTENSION_KEY", "Neoq", "NeoqState", "current_neoq"]

#: The key of the extension's state in ``app.extensions``.
EXTENSION_KEY = "neoq"

_PREFIX = "NEOQ_"


def _options_from_config(config: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """Split ``app.config`` into the URL and the keyword options of ``neoq.new()``."""
    url = config.get("NEOQ_URL")
    options = {
        key[len(_PREFIX) :].lower(): value
        for key, value in config.items()
        if key.startswith(_PREFIX) and key != "NEOQ_URL"
    }
    return url, options


class NeoqState:
    """What ``init_app`` stores in ``app.extensions["neoq"]``: the app's settings and its client."""

    def __init__(self, extension: Neoq, app: Flask, url: str | None, options: dict[str, Any]) -> None:
        #: The extension object this state belongs to.
        self.extension = extension
        #: The backend URL from ``NEOQ_URL`` (``None``: ``neoq.new()``'s default).
        self.url = url
        #: Keyword options of ``neoq.new()`` from the other ``NEOQ_*`` keys.
        self.options = options
        self._app = app
        self._lock = threading.Lock()
        self._client: neoq.Neoq | None = None

    @property
    def client(self) -> neoq.Neoq:
        """The app's client, created (and its handlers registered) on first use."""
        # Creation happens once per state even when several request threads ask at once.
        with self._lock:
            if self._client is None or self._client.closed:
                client = neoq.new(self.url, **self.options)
                for queue, func, settings in self.extension._registrations:
                    client.handler(queue, **settings)(_in_app_context(self._app, func))
                for queue, (func, (spec, options)) in self.extension._crons.items():
                    client.cron(spec, queue=queue, **options)(_in_app_context(self._app, func))
                # A web process only enqueues; close its pool at interpreter exit.
                atexit.register(client.shutdown)
                self._client = client
            return self._client

    @property
    def created(self) -> bool:
        """True once the client exists (and is not shut down)."""
        return self._client is not None and not self._client.closed

    def shutdown(self, timeout: float | None = None) -> None:
        """Shut the app's client down if it was created; the next use creates a new one."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            atexit.unregister(client.shutdown)
            client.shutdown(timeout)


def _in_app_context(app: Flask, func: HandlerFunc) -> HandlerFunc:
    @functools.wraps(func)
    def run_in_app_context(job: Job) -> Any:
        with app.app_context():
            return func(job)

    return run_in_app_context


class Neoq:
    """The Flask extension: ``Neoq(app)``, or ``Neoq()`` then ``init_app(app)`` in an app factory.

    ``options`` are defaults for ``neoq.new()``, overridden by the app's ``NEOQ_*`` config keys.
    """

    def __init__(self, app: Flask | None = None, **options: Any) -> None:
        self._options = options
        self._registrations: list[tuple[str, HandlerFunc, dict[str, Any]]] = []
        self._crons: dict[str, tuple[HandlerFunc, tuple[str, dict[str, Any]]]] = {}
        self._app: Flask | None = None
        if app is not None:
            self.init_app(app)
            self._app = app

    def init_app(self, app: Flask) -> None:
        """Read the app's ``NEOQ_*`` configuration and register the extension and its CLI on it."""
        url, options = _options_from_config(dict(app.config))
        app.extensions[EXTENSION_KEY] = NeoqState(self, app, url, {**self._options, **options})
        app.cli.add_command(neoq_group)

    def state(self, app: Flask | None = None) -> NeoqState:
        """The extension's state for ``app``, else the bound app, else the current app."""
        if app is None:
            app = self._app if self._app is not None else current_app
        try:
            state = app.extensions[EXTENSION_KEY]
        except KeyError:
            raise ConfigurationError(
                f"neoq is not set up on Flask app {app.name!r}: call Neoq.init_app(app) first"
            ) from None
        if not isinstance(state, NeoqState) or state.extension is not self:
            raise ConfigurationError(f"Flask app {app.name!r} was set up by another neoq extension object")
        return state

    @property
    def client(self) -> neoq.Neoq:
        """The ``neoq.Neoq`` client of the current app (of the bound app for ``Neoq(app)``)."""
        return self.state().client

    def handler(self, queue: str, **settings: Any) -> Callable[[HandlerFunc], HandlerFunc]:
        """Register the decorated function as ``queue``'s handler for every app of this extension.

        ``settings`` are ``neoq.Handler`` settings (``concurrency``, ``timeout``, ...). The handler
        runs inside an application context; ``flask neoq worker`` starts it.
        """

        def register(func: HandlerFunc) -> HandlerFunc:
            if queue in self._crons or any(existing == queue for existing, _, _ in self._registrations):
                raise ConfigurationError(f"queue {queue!r} already has a handler in this extension")
            neoq.Handler(func, **settings)  # validates the settings now, not in the worker
            self._registrations.append((queue, func, settings))
            return func

        return register

    def cron(self, spec: str, *, queue: str | None = None, **options: Any) -> Callable[[HandlerFunc], HandlerFunc]:
        """Declare the decorated function a cron handler, ticked only by ``flask neoq worker``.

        ``spec``, ``queue``, ``timezone``, ``catch_up`` as for ``Neoq.start_cron``; other
        ``options`` are ``neoq.Handler`` settings. The handler runs inside an application context.
        """
        from neoq.cron import cron_queue_name, parse_spec

        parse_spec(spec, options.get("timezone", "UTC"))  # a wrong spec fails at import, not in the worker

        def register(func: HandlerFunc) -> HandlerFunc:
            name = cron_queue_name(func) if queue is None else queue
            if name in self._crons or any(existing == name for existing, _, _ in self._registrations):
                raise ConfigurationError(f"queue {name!r} already has a handler in this extension")
            self._crons[name] = (func, (spec, options))
            return func

        return register

    def enqueue(self, job: Job, *, connection: Any = None) -> str:
        """``client.enqueue``: store ``job`` and return its id (``connection``: see ``Neoq.enqueue``)."""
        return self.client.enqueue(job, connection=connection)

    def enqueue_many(self, jobs: Iterable[Job], *, connection: Any = None) -> list[str]:
        """``client.enqueue_many``: store several jobs atomically and return their ids."""
        return self.client.enqueue_many(jobs, connection=connection)

    def shutdown(self, app: Flask | None = None, timeout: float | None = None) -> None:
        """Shut down the client of ``app`` (default: as for ``client``) if it was created."""
        self.state(app).shutdown(timeout)


def _current_client() -> neoq.Neoq:
    state = current_app.extensions.get(EXTENSION_KEY)
    if not isinstance(state, NeoqState):
        raise ConfigurationError(f"neoq is not set up on Flask app {current_app.name!r}: call Neoq.init_app(app)")
    return state.client


#: The current app's ``neoq.Neoq`` client (a proxy; needs an application context).
current_neoq: neoq.Neoq = LocalProxy(_current_client)  # type: ignore[assignment]


@click.group("neoq")
def neoq_group() -> None:
    """neoq background jobs."""


@neoq_group.command("worker")
@click.option("--queue", "queues", multiple=True, help="only this queue (repeatable); default: every handler")
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default=None,
    help="root log level (default INFO when the app has not set logging up)",
)
@with_appcontext
def worker_command(queues: tuple[str, ...], log_level: str | None) -> None:
    """Run the app's neoq handlers until SIGTERM/SIGINT (a second signal stops at once)."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s %(message)s")
        root.setLevel(log_level.upper() if log_level else logging.INFO)
    elif log_level:
        root.setLevel(log_level.upper())
    client = _current_client()
    if not client.handlers:
        raise click.ClickException("no neoq handler is registered on this app (use @nq.handler(queue))")
    from neoq.cli import CommandError, run_worker

    try:
        run_worker(client, queues or None, name=f"flask app {current_app.name!r}")
    except (CommandError, ConfigurationError) as exc:
        raise click.ClickException(str(exc)) from None


def _forward(name: str) -> None:
    """``flask neoq NAME ...``: ``neoq NAME ...`` on the current app's ``NEOQ_URL``."""

    @neoq_group.command(
        name,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        add_help_option=False,
        help=f"neoq {name} with the app's NEOQ_URL (the arguments of `neoq {name} --help`).",
    )
    @click.argument("arguments", nargs=-1, type=click.UNPROCESSED)
    @with_appcontext
    def forward(arguments: tuple[str, ...]) -> None:
        from neoq.cli import main

        state = current_app.extensions.get(EXTENSION_KEY)
        if not isinstance(state, NeoqState):
            raise click.ClickException(f"neoq is not set up on Flask app {current_app.name!r}")
        if "--url" in arguments:
            raise click.ClickException("the backend comes from the app's NEOQ_URL: no --url here")
        url = state.url or os.environ.get("NEOQ_URL")
        flags = [word for word in arguments if word in ("--json", "--traceback")]
        rest = [word for word in arguments if word not in flags]
        status = main([*(["--url", url] if url else []), *flags, name, *rest])
        if status:
            raise SystemExit(status)  # neoq has printed its one-line error


for _name in ("jobs", "stats", "migrate", "enqueue"):
    _forward(_name)
