"""How the PostgreSQL backend reads its URL: libpq's parameters, refused when libpq would misread a
password, and the passwords to keep out of error messages."""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from ...errors import ConfigurationError
from ...redact import url_scheme

_NUMERIC_PORTS = re.compile(r"[0-9]*(?:,[0-9]*)*")


def _parse_url(url: str) -> dict[str, Any]:
    """libpq's reading of ``url``. ``ConfigurationError``, showing none of the URL, when libpq
    cannot read it, or would take a part of a password for a host, a port or a database name,
    which its error messages quote."""
    try:
        params: dict[str, Any] | None = conninfo_to_dict(url)
    except psycopg.Error:
        params = None  # raised below, outside this handler: the driver's error quotes the URL
    if params is None:
        raise ConfigurationError(
            "the PostgreSQL url cannot be parsed; expected a postgresql:// URL (special characters "
            "percent-encoded) or libpq's 'host=... dbname=...'; the URL is not shown, as it may hold a password"
        )
    if url_scheme(url) in ("postgresql", "postgres"):
        # libpq ends the user info at the first "@" before any "/"; any other "@" means a part of the
        # password was read as the host or the database (u:p@ss@host, u:pa/ss@host).
        rest = url.split("://", 1)[1]
        at = rest.find("@")
        if rest.count("@") > 1 or (at >= 0 and "/" in rest[:at]):
            raise ConfigurationError(
                "the PostgreSQL url has an '@' besides the one before the host: write '@' as %40 in the "
                "password (and anywhere else in the URL); the URL is not shown, as it may hold a password"
            )
    if not _NUMERIC_PORTS.fullmatch(str(params.get("port") or "")):
        raise ConfigurationError(
            "the port in the PostgreSQL url is not a number (is a password missing its '@host'?); "
            "the URL is not shown, as it may hold a password"
        )
    return params


def _secrets_of(url: str, params: dict[str, Any]) -> list[str]:
    """The passwords of ``url`` as libpq reads them and as written (percent-encoded), longest first."""
    secrets = {str(value) for key, value in params.items() if "password" in key and value}
    if url_scheme(url) is not None:
        credentials = url.split("://", 1)[1].partition("@")
        if credentials[1]:
            secrets.add(credentials[0].partition(":")[2])
    return sorted((secret for secret in secrets if secret), key=len, reverse=True)
