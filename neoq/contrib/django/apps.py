"""The Django app of neoq: add ``"neoq.contrib.django"`` to ``INSTALLED_APPS``."""

from __future__ import annotations

from django.apps import AppConfig


class NeoqConfig(AppConfig):  # type: ignore[misc]  # Django ships no type hints
    """Registers neoq's commands, system checks and schema upgrade; imports each app's ``neoq_jobs`` module."""

    name = "neoq.contrib.django"
    label = "neoq"
    verbose_name = "neoq"

    def ready(self) -> None:
        from django.core import checks
        from django.db.models.signals import post_migrate

        from neoq.errors import NeoqError

        from .conf import DEFAULT_AUTODISCOVER, load_settings
        from .schema import check_settings, upgrade_after_migrate

        checks.register(check_settings)
        post_migrate.connect(upgrade_after_migrate, sender=self)

        try:
            module = load_settings().autodiscover
        except NeoqError:  # reported by manage.py check (check_settings); the handlers still register
            module = DEFAULT_AUTODISCOVER
        if module:
            from django.utils.module_loading import autodiscover_modules

            # Like admin.py: each app's handlers register themselves when their module is imported.
            autodiscover_modules(module)
