"""``serve``: run the dashboard in a Werkzeug server until SIGINT or SIGTERM (``neoq dashboard``)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from werkzeug.serving import make_server

from . import create_app
from .security import PasswordAuth, check_binding

if TYPE_CHECKING:
    from ..app import Neoq

__all__ = ["serve"]

logger = logging.getLogger(__name__)


def serve(
    nq: Neoq,
    *,
    host: str,
    port: int,
    read_only: bool = False,
    password: str | None = None,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the dashboard of ``nq`` on ``host:port`` until SIGINT/SIGTERM.

    Off loopback, ``password`` is required (else ``ConfigurationError``, before listening).
    ``ready(url)`` is called once the server listens.
    """
    auth = PasswordAuth(password) if password else None
    check_binding(host, auth)
    app = create_app(nq, read_only=read_only, auth=auth)
    server = make_server(host, port, app, threaded=True)
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{server.server_port}/"
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()
        threading.Thread(target=server.shutdown, name="neoq-dashboard-stop", daemon=True).start()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        logger.info("neoq dashboard on %s%s", url, " (read-only)" if read_only else "")
        if ready is not None:
            ready(url)
        server.serve_forever(poll_interval=0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.server_close()
