"""The Django app of neoq: add ``"neoq.contrib.django"`` to ``INSTALLED_APPS``."""

from __future__ import annotations

from django.apps import AppConfig


class NeoqConfig(AppConfig):  # type: ignore[misc]  # Django ships no type hints
    """Registers the ``neoq_worker`` command and imports each installed app's ``neoq_jobs`` module."""

    name = "neoq.contrib.django"
    label = "neoq"
    verbose_name = "neoq"

    def ready(self) -> None:
        from .conf import load_settings

        module = load_settings().autodiscover
        if module:
            from django.utils.module_loading import autodiscover_modules

            # Like admin.py: each app's handlers register themselves when their module is imported.
            autodiscover_modules(module)
