"""The PostgreSQL backend's options, validated once: what ``PostgresBackend(url, **options)`` means
for its connections, pools and waiting."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypedDict

from ...defaults import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_IDLE_TRANSACTION_TIMEOUT,
    DEFAULT_LEASE_DURATION,
    DEFAULT_POLL_INTERVAL,
)
from ...errors import ConfigurationError
from ...handler import HANDLER_MODES
from ...job import setting_seconds
from ...redact import HIDDEN, redact_url
from .urls import _parse_url, _secrets_of
from .wire import _HOT_PREPARED, _HOT_UNNAMED, _Hot

#: The TimeZone of every session neoq opens (``_utc_session``).
_UTC_OPTION = "-c TimeZone=UTC"

_SYNCHRONOUS_COMMIT = ("on", "off", "local", "remote_write", "remote_apply")


class PostgresOptions(TypedDict, total=False):
    """The options of ``PostgresBackend(url, **options)``, as ``parse_settings`` takes them."""

    idle_transaction_timeout: timedelta | float
    pool_min_size: int | None
    pool_max_size: int | None
    synchronous_commit: bool | str
    connect_timeout: timedelta | float | None
    poll_interval: timedelta | float
    application_name: str | None
    migrate: bool
    mode: str
    lease: timedelta | float
    listen: bool
    prepare_threshold: int | None


@dataclass(frozen=True)
class Settings:
    """A backend's validated options and the connection arguments they make."""

    url: str
    #: What messages and repr show of the URL (neoq.redact): never its password.
    safe_url: str
    #: The URL's passwords, kept out of every message (``scrub``).
    secrets: tuple[str, ...]
    idle_ms: int
    poll_interval: float
    connect_timeout: float
    synchronous_commit: str
    pool_min: int
    #: The worker pool's size as configured (None: it grows to the claiming threads), and its start.
    pool_max_fixed: int | None
    pool_max: int
    application_name: str
    migrate: bool
    default_mode: str
    lease_seconds: float
    listen: bool
    #: The hot path's statements: prepared unless prepared statements are off (PgBouncer).
    hot: _Hot
    #: psycopg.connect() arguments of the worker, aux (short autocommit work), attempt-counter and
    #: LISTEN connections.
    work_kwargs: dict[str, Any]
    aux_kwargs: dict[str, Any]
    counter_kwargs: dict[str, Any]
    listen_kwargs: dict[str, Any]

    def scrub(self, text: str) -> str:
        """``text`` without the URL's passwords."""
        # libpq's messages do not quote passwords, and _parse_url refuses the URLs it would misread
        # (a part of a password taken for the host or the port); this is the last line of defence.
        for secret in self.secrets:
            text = text.replace(secret, HIDDEN)
        return text


def parse_settings(
    url: str,
    *,
    idle_transaction_timeout: timedelta | float = DEFAULT_IDLE_TRANSACTION_TIMEOUT,
    pool_min_size: int | None = None,
    pool_max_size: int | None = None,
    synchronous_commit: bool | str = True,
    connect_timeout: timedelta | float | None = None,
    poll_interval: timedelta | float = DEFAULT_POLL_INTERVAL,
    application_name: str | None = None,
    migrate: bool = True,
    mode: str = "transaction",
    lease: timedelta | float = DEFAULT_LEASE_DURATION,
    listen: bool = True,
    prepare_threshold: int | None = 5,
) -> Settings:
    """Validate ``PostgresBackend``'s options (``ConfigurationError``) and make its settings."""
    if not isinstance(url, str):
        raise ConfigurationError(f"the PostgreSQL url must be a str, not {type(url).__name__}")
    params = _parse_url(url)
    idle_ms = round(setting_seconds(idle_transaction_timeout, "idle_transaction_timeout") * 1000)
    poll = setting_seconds(poll_interval, "poll_interval") or DEFAULT_POLL_INTERVAL
    if connect_timeout is None:
        try:
            connect_timeout = float(params.get("connect_timeout") or DEFAULT_CONNECT_TIMEOUT)
        except ValueError:
            raise ConfigurationError("connect_timeout in the PostgreSQL url must be a number") from None
        if connect_timeout <= 0:
            connect_timeout = DEFAULT_CONNECT_TIMEOUT
    timeout = setting_seconds(connect_timeout, "connect_timeout") or DEFAULT_CONNECT_TIMEOUT
    if isinstance(synchronous_commit, bool):
        synchronous_commit = "on" if synchronous_commit else "off"
    if synchronous_commit not in _SYNCHRONOUS_COMMIT:
        raise ConfigurationError(
            f"synchronous_commit must be a bool or one of {', '.join(_SYNCHRONOUS_COMMIT)}; got {synchronous_commit!r}"
        )
    for name, value in (("pool_min_size", pool_min_size), ("pool_max_size", pool_max_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigurationError(f"{name} must be an int >= 1 or None, not {value!r}")
    if pool_min_size is not None and pool_max_size is not None and pool_min_size > pool_max_size:
        raise ConfigurationError("pool_min_size must not be larger than pool_max_size")
    pool_min = pool_min_size or 1
    if application_name is None:
        application_name = str(params.get("application_name") or "neoq")
    if mode not in HANDLER_MODES:
        raise ConfigurationError(f"mode must be one of {', '.join(map(repr, HANDLER_MODES))}, not {mode!r}")
    lease_seconds = setting_seconds(lease, "lease")
    if lease_seconds < 0.1:
        raise ConfigurationError(f"lease must be at least 0.1 seconds, got {lease_seconds:g}")
    if prepare_threshold is not None and (
        isinstance(prepare_threshold, bool) or not isinstance(prepare_threshold, int)
    ):
        raise ConfigurationError(f"prepare_threshold must be an int or None, not {prepare_threshold!r}")
    base_kwargs: dict[str, Any] = {
        "application_name": application_name,
        "connect_timeout": max(2, math.ceil(timeout)),
        "prepare_threshold": prepare_threshold,
    }
    # Every session of neoq's runs in UTC, after the URL's own options so that it wins over a
    # TimeZone there (see _utc_session for PGTZ): what is read back never depends on it.
    user_options = f"{params.get('options') or ''} {_UTC_OPTION}".strip()
    sc = f"-c synchronous_commit={synchronous_commit}"
    idle = f"-c idle_in_transaction_session_timeout={idle_ms}"
    # The listener sits idle for long stretches: TCP keepalives let it notice a vanished server.
    listen_kwargs = dict(base_kwargs, autocommit=True, options=user_options)
    for key, keepalive in (("keepalives", 1), ("keepalives_idle", 30), ("keepalives_interval", 10)):
        if key not in params:
            listen_kwargs[key] = keepalive
    return Settings(
        url=url,
        safe_url=redact_url(url),
        secrets=tuple(_secrets_of(url, params)),
        idle_ms=idle_ms,
        poll_interval=poll,
        connect_timeout=timeout,
        synchronous_commit=synchronous_commit,
        pool_min=pool_min,
        pool_max_fixed=pool_max_size,
        pool_max=pool_max_size or max(pool_min, 2),
        application_name=application_name,
        migrate=migrate,
        default_mode=mode,
        lease_seconds=lease_seconds,
        listen=bool(listen),
        hot=_HOT_PREPARED if prepare_threshold is not None else _HOT_UNNAMED,
        work_kwargs=dict(base_kwargs, autocommit=False, options=f"{user_options} {sc} {idle}"),
        aux_kwargs=dict(base_kwargs, autocommit=True, options=f"{user_options} {sc} {idle}"),
        # Attempt counters are committed without waiting for the WAL flush (see settles.Settles.send_count).
        counter_kwargs=dict(base_kwargs, autocommit=True, options=f"{user_options} -c synchronous_commit=off {idle}"),
        listen_kwargs=listen_kwargs,
    )
