"""Settings of the Django integration: ``NEOQ = {...}`` or ``NEOQ_URL`` in the Django settings.

::

    NEOQ = {
        "URL": None,             # default: the database of "DATABASE", which must be PostgreSQL
        "DATABASE": "default",   # the Django database whose connection (and transaction) enqueue() uses;
                                 # default "default" without a URL, None (neoq's own connections) with one
        "OPTIONS": {},           # keyword options of neoq.new(): shutdown_timeout, pool_max_size, ...
        "AUTODISCOVER": "neoq_jobs",   # module imported from every installed app at startup ("" : none)
    }

``NEOQ_URL = "postgresql://..."`` alone is short for ``NEOQ = {"URL": ...}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from neoq.errors import ConfigurationError
from neoq.redact import redact_url

__all__ = ["NeoqSettings", "database_url", "load_settings"]

#: The module each installed app may define to register its handlers.
DEFAULT_AUTODISCOVER = "neoq_jobs"

# DASHBOARD_READ_ONLY is read by neoq.contrib.django.dashboard.
_KEYS = frozenset({"URL", "DATABASE", "OPTIONS", "AUTODISCOVER", "DASHBOARD_READ_ONLY"})

# Django database OPTIONS that are libpq connection parameters too; the others are Django's own.
_LIBPQ_OPTIONS = (
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslpassword",
    "application_name",
    "connect_timeout",
    "options",
    "target_session_attrs",
    "passfile",
    "service",
    "gssencmode",
)


@dataclass(frozen=True)
class NeoqSettings:
    """The resolved settings."""

    #: The backend URL given to ``neoq.new()`` (the repr shows it redacted: it may hold a password).
    url: str
    #: The Django database alias whose connection ``enqueue()`` writes through, or ``None``.
    database: str | None
    #: Keyword options of ``neoq.new()``.
    options: dict[str, Any] = field(default_factory=dict)
    #: The module name imported from each installed app at startup (empty: none).
    autodiscover: str = DEFAULT_AUTODISCOVER

    def __repr__(self) -> str:
        return (
            f"NeoqSettings(url={redact_url(self.url)!r}, database={self.database!r}, "
            f"options={self.options!r}, autodiscover={self.autodiscover!r})"
        )


def database_url(alias: str, database: Mapping[str, Any]) -> str:
    """Build a ``postgresql://`` URL from a Django ``DATABASES`` entry."""
    engine = str(database.get("ENGINE", ""))
    if not (engine.endswith(".postgresql") or engine.endswith(".postgis")):
        raise ConfigurationError(
            f"NEOQ: Django database {alias!r} is not PostgreSQL ({engine or 'no ENGINE'}); "
            'set NEOQ = {"URL": "postgresql://..."} (or "memory://")'
        )
    user = quote(str(database.get("USER") or ""), safe="")
    password = quote(str(database.get("PASSWORD") or ""), safe="")
    host = str(database.get("HOST") or "")
    port = str(database.get("PORT") or "")
    query: dict[str, str] = {}
    if host.startswith("/"):  # a Unix socket directory
        query["host"], host = host, ""
    netloc = user + (f":{password}" if password else "") + ("@" if user else "") + host + (f":{port}" if port else "")
    options = database.get("OPTIONS") or {}
    query.update({key: str(options[key]) for key in _LIBPQ_OPTIONS if options.get(key) is not None})
    name = quote(str(database.get("NAME") or ""), safe="")
    return f"postgresql://{netloc}/{name}" + (f"?{urlencode(query)}" if query else "")


def load_settings() -> NeoqSettings:
    """Read ``settings.NEOQ`` / ``settings.NEOQ_URL``; raise ``ConfigurationError`` if they are wrong."""
    from django.conf import settings
    from django.db import DEFAULT_DB_ALIAS

    raw = getattr(settings, "NEOQ", None) or {}
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"settings.NEOQ must be a dict, not {type(raw).__name__}")
    unknown = set(raw) - _KEYS
    if unknown:
        raise ConfigurationError(
            f"settings.NEOQ: unknown key(s) {', '.join(sorted(unknown))}; accepted: {', '.join(sorted(_KEYS))}"
        )
    url = raw.get("URL") or getattr(settings, "NEOQ_URL", None)
    database = raw.get("DATABASE", None if url else DEFAULT_DB_ALIAS)
    if database is not None and database not in settings.DATABASES:
        raise ConfigurationError(f"settings.NEOQ['DATABASE']: no Django database {database!r}")
    if url is None:
        url = database_url(database, settings.DATABASES[database])
    options = raw.get("OPTIONS") or {}
    if not isinstance(options, Mapping):
        raise ConfigurationError("settings.NEOQ['OPTIONS'] must be a dict of neoq.new() keyword options")
    autodiscover = raw.get("AUTODISCOVER", DEFAULT_AUTODISCOVER)
    return NeoqSettings(url=str(url), database=database, options=dict(options), autodiscover=autodiscover or "")
