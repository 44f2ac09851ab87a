"""neoq's schema from Django's ``migrate``, and neoq's entries in Django's system checks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from neoq.backends.registry import backend_from_url
from neoq.errors import NeoqError

__all__ = ["check_settings", "migrate_schema", "upgrade_after_migrate"]


def migrate_schema(using: str) -> list[int] | None:
    """Create or upgrade neoq's schema when neoq keeps its jobs in the Django database ``using``.

    Returns the migrations applied, or ``None`` when neoq's store is elsewhere (its own ``URL``:
    ``manage.py neoq migrate``) or keeps no schema. neoq's migrations take their own lock, so
    several processes migrating at once are safe.
    """
    from .conf import load_settings

    conf = load_settings()
    if conf.database != using:
        return None
    return backend_from_url(conf.url).migrate()


def upgrade_after_migrate(using: str = "default", **kwargs: Any) -> None:
    """``post_migrate`` receiver: every ``manage.py migrate`` brings neoq's schema up to date."""
    migrate_schema(using)


def check_settings(app_configs: Any = None, **kwargs: Any) -> Iterable[Any]:
    """Django system check (``manage.py check``): neoq's settings and its task backends can be built."""
    from django.core import checks

    from .conf import load_settings

    errors = []
    try:
        load_settings()
    except NeoqError as exc:
        errors.append(checks.Error(str(exc), hint="see neoq.contrib.django.conf", id="neoq.E001"))
    try:
        from .tasks import neoq_task_aliases, task_backend
    except ImportError:  # django.tasks is not installed: no task backend to check
        return errors
    for alias in neoq_task_aliases():
        try:
            task_backend(alias)
        except Exception as exc:  # whatever building it raises is the configuration error
            errors.append(checks.Error(f"TASKS[{alias!r}]: {exc}", id="neoq.E003"))
    return errors
