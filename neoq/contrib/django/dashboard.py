"""The neoq dashboard in a Django project, for staff users.

Include its URLs under any prefix::

    # urls.py
    path("admin/neoq/", include("neoq.contrib.django.dashboard")),

Every request needs a logged-in active staff user (``request.user.is_staff``; else 403), so
``django.contrib.auth`` and its middleware must be installed. The dashboard's forms carry its own
CSRF token (Django's middleware is told to let them through). Settings, in ``NEOQ``:
``"DASHBOARD_READ_ONLY": True`` hides every action.
"""

from __future__ import annotations

import threading
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.urls import re_path

from ...dashboard import DashboardApp, create_app
from ...errors import ConfigurationError
from . import get_client

__all__ = ["dashboard", "urlpatterns"]

_lock = threading.Lock()
_apps: dict[int, DashboardApp] = {}


def _app() -> DashboardApp:
    client = get_client()
    with _lock:
        app = _apps.get(id(client))
        if app is None or app.nq is not client:
            read_only = (getattr(settings, "NEOQ", None) or {}).get("DASHBOARD_READ_ONLY", False)
            if not isinstance(read_only, bool):
                raise ConfigurationError("settings.NEOQ['DASHBOARD_READ_ONLY'] must be True or False")
            app = create_app(client, read_only=read_only, secret=str(settings.SECRET_KEY))
            _apps.clear()
            _apps[id(client)] = app
    return app


def dashboard(request: HttpRequest, path: str = "") -> HttpResponse:
    """The dashboard's every page and action, for active staff users only."""
    user: Any = getattr(request, "user", None)
    if user is None or not (user.is_active and user.is_staff):
        raise PermissionDenied("the neoq dashboard is for staff users")
    prefix = request.path[: len(request.path) - len(path)] if path else request.path
    answer = _app().mounted(request.META, prefix, path, body=request.body)
    response = HttpResponse(answer.get_data(), status=answer.status_code)
    for name, value in answer.headers.items():
        response[name] = value
    return response


# What django.views.decorators.csrf.csrf_exempt sets: the dashboard checks a CSRF token of its own on every POST.
dashboard.csrf_exempt = True  # type: ignore[attr-defined]

urlpatterns = [re_path(r"^(?P<path>.*)$", dashboard, name="neoq-dashboard")]
