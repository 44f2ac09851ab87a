"""``neoq dashboard``: serve the web dashboard over the store the workers use."""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import ConfigurationError
from .errors import EXIT_OK

__all__ = ["dashboard", "port"]


def port(text: str) -> int:
    """A TCP port number (0: any free port)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)")
    return value


def dashboard(args: argparse.Namespace) -> int:
    """Serve the dashboard until SIGINT/SIGTERM; refuse an address off loopback without a password."""
    try:
        from ..dashboard import PASSWORD_ENV, check_binding
        from ..dashboard.security import PasswordAuth
        from ..dashboard.serve import serve
    except ImportError as exc:  # pragma: no cover - the extra is installed in the tests
        raise ConfigurationError(f"the dashboard needs pip install 'neoq[dashboard]' ({exc})") from None
    from .commands import _client

    password = os.environ.get(PASSWORD_ENV) or None
    # Before anything connects: an unsafe address fails fast, with the way to fix it.
    check_binding(args.host, PasswordAuth(password) if password else None)
    if args.dashboard_url:
        args.url = args.dashboard_url
    with _client(args, shared=True) as nq:

        def ready(url: str) -> None:
            mode = " (read-only)" if args.read_only else ""
            print(f"neoq dashboard on {url}{mode}; Ctrl-C stops it", file=sys.stderr, flush=True)

        serve(nq, host=args.host, port=args.port, read_only=args.read_only, password=password, ready=ready)
    return EXIT_OK
