"""The web dashboard: see the queues, the jobs and the workers, and retry or cancel jobs.

``create_app(nq)`` returns a WSGI application (Werkzeug and Jinja2, every asset in the package,
no CDN) that ``neoq dashboard`` serves and that a Flask or Django application mounts under a
prefix behind its own authentication (docs/dashboard.md). It needs ``pip install "neoq[dashboard]"``
and a backend with the ``"dashboard"`` capability (the workers page also reads ``"workers"``).

Safe by default: ``neoq dashboard`` listens on 127.0.0.1, and refuses any other address unless
``NEOQ_DASHBOARD_PASSWORD`` is set; every action is a confirmed POST with a CSRF token; every value
is escaped, and the page runs no inline script; no connection URL or password is shown.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigurationError

try:
    import jinja2  # noqa: F401
    import werkzeug  # noqa: F401
except ImportError as exc:  # pragma: no cover - the extra is installed in the tests
    raise ConfigurationError(
        f"the neoq dashboard needs Werkzeug and Jinja2 ({exc.name} is missing): pip install 'neoq[dashboard]'"
    ) from None

from .app import DashboardApp
from .security import PASSWORD_ENV, Auth, PasswordAuth, check_binding, is_loopback

if TYPE_CHECKING:
    from ..app import Neoq

__all__ = ["PASSWORD_ENV", "DashboardApp", "PasswordAuth", "check_binding", "create_app", "is_loopback"]


def create_app(
    nq: Neoq, *, read_only: bool = False, auth: Auth = None, secret: bytes | str | None = None
) -> DashboardApp:
    """Return the dashboard over ``nq`` as a WSGI application.

    ``read_only``: no retry or cancel anywhere (the action URLs do not exist). ``auth``: a
    ``PasswordAuth`` (HTTP Basic), a callable ``auth(request) -> bool`` given the Werkzeug request,
    or ``None`` when the host application already authenticates every request that reaches it.
    ``secret``: the key of the CSRF tokens (by default random per process; give the host
    application's secret key when several processes serve the dashboard). Raises
    ``ConfigurationError`` when the client's backend lacks the ``"dashboard"`` capability.
    """
    if "dashboard" not in nq.backend.capabilities:
        raise ConfigurationError(
            f"{type(nq.backend).__name__} does not offer the 'dashboard' capability "
            "(neoq.backends.search.JobSearch); the dashboard cannot read it"
        )
    if auth is not None and not callable(auth):
        raise ConfigurationError(
            "auth must be a neoq.dashboard.PasswordAuth, a callable auth(request) -> bool, or None"
        )
    return DashboardApp(nq, read_only=read_only, auth=auth, secret=secret)
