"""The MySQL/MariaDB backend's settings: its URL and options, checked once, before anything connects.

``mysql://user:password@host:3306/database`` (also ``mariadb://``); ``?unix_socket=/path``,
``?ssl_ca=/path`` and ``?connect_timeout=seconds`` are read from the query string. No message
shows more of the URL than ``neoq.redact.redact_url`` keeps (no password).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, TypedDict
from urllib.parse import parse_qsl, unquote, urlsplit

from ...errors import ConfigurationError
from ...redact import redact_url

__all__ = ["MySQLOptions", "MySQLSettings", "parse_settings"]

#: Seconds a connection attempt may take, unless the URL or the options say otherwise.
DEFAULT_CONNECT_TIMEOUT = 10.0
#: Seconds between looks at an idle queue: MySQL has no LISTEN/NOTIFY, so other processes' jobs
#: are found by polling (this process's own enqueues wake its claims at once).
DEFAULT_POLL_INTERVAL = 0.05
#: Seconds a lease lasts (lease mode); running jobs renew theirs while their process lives.
DEFAULT_LEASE = 30.0
#: The most connections of the worker pool (transaction mode: one per running job).
DEFAULT_POOL_MAX = 32

_QUERY_KEYS = ("unix_socket", "ssl_ca", "connect_timeout")
_MODES = ("lease", "transaction")


class MySQLOptions(TypedDict, total=False):
    """The keyword options of ``MySQLBackend(url, ...)`` and of ``neoq.new("mysql://...", ...)``."""

    mode: str
    lease: float
    poll_interval: float
    connect_timeout: float
    pool_max_size: int
    migrate: bool


@dataclass(frozen=True)
class MySQLSettings:
    """Everything the backend needs to connect, as parsed from the URL and the options."""

    #: The URL with its password hidden, for messages.
    safe_url: str
    database: str
    #: ``pymysql.connect`` keyword arguments (the password among them: never shown).
    connect_kwargs: dict[str, Any] = field(repr=False)
    default_mode: str = "lease"
    lease: float = DEFAULT_LEASE
    poll_interval: float = DEFAULT_POLL_INTERVAL
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    pool_max: int = DEFAULT_POOL_MAX
    migrate: bool = True

    def scrub(self, text: str) -> str:
        """``text`` without the URL's password, wherever a driver message may have put it."""
        password = self.connect_kwargs.get("password")
        if isinstance(password, bytes):
            password = password.decode("utf-8", "surrogateescape")
        return text.replace(password, "***") if password else text


def _seconds(name: str, value: object, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigurationError(f"MySQL option {name} must be a number of seconds; got {value!r}")
    if value < 0 or (positive and value == 0):
        raise ConfigurationError(f"MySQL option {name} must be above 0; got {value!r}")
    return float(value)


def parse_settings(url: str, **options: Any) -> MySQLSettings:
    """Check ``url`` and ``options``; raise ``ConfigurationError`` saying what to fix."""
    safe_url = redact_url(url)
    try:
        parts = urlsplit(url)
    except ValueError:  # its message may quote part of the URL: a password
        raise ConfigurationError(f"{safe_url} is not a usable MySQL URL: check its host (IPv6 in brackets)") from None
    if parts.scheme.lower() not in ("mysql", "mariadb"):
        raise ConfigurationError(f"not a MySQL URL: {safe_url} (expected mysql://user:password@host:3306/database)")
    try:
        port = parts.port or 3306
    except ValueError:
        # ``from None``: the ValueError quotes the text after the colon, which may be a password.
        raise ConfigurationError(f"the port of {safe_url} is not a number") from None
    database = unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise ConfigurationError(f"{safe_url} names no database: use mysql://user:password@host:3306/database")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(query) - set(_QUERY_KEYS))
    if unknown:
        raise ConfigurationError(
            f"{safe_url}: unknown URL parameter(s) {', '.join(unknown)}; accepted: {', '.join(_QUERY_KEYS)}"
        )
    connect_timeout = DEFAULT_CONNECT_TIMEOUT
    if "connect_timeout" in query:
        try:
            connect_timeout = float(query["connect_timeout"])
        except ValueError as exc:
            raise ConfigurationError(f"{safe_url}: connect_timeout must be a number of seconds") from exc
    connect_timeout = _seconds("connect_timeout", options.pop("connect_timeout", connect_timeout))
    kwargs: dict[str, Any] = {
        "host": parts.hostname or "127.0.0.1",
        "port": port,
        "user": unquote(parts.username) if parts.username else "root",
        # Bytes: PyMySQL would encode a str password as Latin-1 (and fail on any other character);
        # MySQL clients send it as UTF-8.
        "password": unquote(parts.password).encode("utf-8", "surrogateescape") if parts.password else b"",
        "database": database,
        "charset": "utf8mb4",
        "connect_timeout": max(1, math.ceil(connect_timeout)),
        "autocommit": True,
    }
    if "unix_socket" in query:
        kwargs["unix_socket"] = query["unix_socket"]
    if "ssl_ca" in query:
        kwargs["ssl"] = {"ca": query["ssl_ca"]}
    mode = options.pop("mode", "lease")
    if mode not in _MODES:
        raise ConfigurationError(f"MySQL option mode must be 'lease' or 'transaction'; got {mode!r}")
    lease = _seconds("lease", options.pop("lease", DEFAULT_LEASE))
    poll_interval = _seconds("poll_interval", options.pop("poll_interval", DEFAULT_POLL_INTERVAL))
    pool_max = options.pop("pool_max_size", DEFAULT_POOL_MAX)
    if isinstance(pool_max, bool) or not isinstance(pool_max, int) or pool_max < 2:
        raise ConfigurationError(f"MySQL option pool_max_size must be an int of at least 2; got {pool_max!r}")
    migrate = options.pop("migrate", True)
    if options:
        raise ConfigurationError(
            f"unknown MySQL option(s) {', '.join(sorted(options))}; accepted: {', '.join(MySQLOptions.__annotations__)}"
        )
    return MySQLSettings(
        safe_url=safe_url,
        database=database,
        connect_kwargs=kwargs,
        default_mode=mode,
        lease=lease,
        poll_interval=poll_interval,
        connect_timeout=connect_timeout,
        pool_max=pool_max,
        migrate=bool(migrate),
    )
