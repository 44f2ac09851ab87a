"""The Redis backend's options, validated once: the URL, the key prefix and its hash tag, leases.

URLs: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS) and
``unix://[[user]:password@]/path/to/socket[?db=N]``, as redis-py reads them, with two parameters
of neoq's own: ``?cluster=true`` (the URL names a node of a Redis Cluster) and ``?prefix=P``.
Every key neoq writes starts with ``P`` exactly; right after it comes the namespace's hash tag
(``{...}``), so that all of one namespace's keys share a Redis Cluster slot and its scripts run
there: ``prefix=app:`` makes keys ``app:{app}:job:1``; a prefix that holds a hash tag of its own
(``prefix={app}:``) is used as it is (``{app}:job:1``). The default prefix is ``neoq:``
(``neoq:{neoq}:job:1``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import TypedDict
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from ...defaults import DEFAULT_CONNECT_TIMEOUT, DEFAULT_LEASE_DURATION
from ...errors import ConfigurationError
from ...job import setting_seconds
from ...redact import HIDDEN, mask_secrets, redact_url, url_scheme

__all__ = ["RedisOptions", "RedisSettings", "parse_settings"]

#: The schemes this backend serves.
SCHEMES = ("redis", "rediss", "unix")

#: The default key prefix.
DEFAULT_PREFIX = "neoq:"

#: How long one command may wait for its answer (a server that vanished without closing the
#: connection, a network partition): longer than any one script takes (a batch of 100,000 jobs
#: takes a second or two).
DEFAULT_SOCKET_TIMEOUT = 30.0

#: Seconds between looks at an idle queue when no wake-up comes (the safety net of pub/sub).
DEFAULT_REDIS_POLL_INTERVAL = 1.0

_HASH_TAG = re.compile(r"\{[^{}]+\}")


class RedisOptions(TypedDict, total=False):
    """The options of ``RedisBackend(url, **options)``."""

    prefix: str
    lease: timedelta | float
    poll_interval: timedelta | float
    connect_timeout: timedelta | float
    check_config: bool
    cluster: bool
    socket_timeout: timedelta | float


@dataclass(frozen=True)
class RedisSettings:
    """A backend's validated options."""

    #: The URL redis-py connects to (neoq's own parameters removed).
    url: str
    #: What messages and repr show of the URL: never its password.
    safe_url: str
    #: The URL's passwords, kept out of every message.
    secrets: tuple[str, ...]
    #: The prefix of every key, its hash tag included (``neoq:{neoq}:``).
    namespace: str
    lease_seconds: float
    poll_interval: float
    connect_timeout: float
    check_config: bool
    #: The URL names a node of a Redis Cluster (redis-py's Cluster client).
    cluster: bool
    #: How long one command may wait for its answer before the server counts as unreachable.
    socket_timeout: float

    def scrub(self, text: str) -> str:
        """``text`` without the URL's passwords."""
        for secret in self.secrets:
            text = text.replace(secret, HIDDEN)
        return mask_secrets(text)

    def key(self, name: str) -> str:
        """The full name of one of the namespace's keys."""
        return self.namespace + name


def namespace_of(prefix: str) -> str:
    """The prefix of every key: ``prefix`` then its hash tag, unless ``prefix`` holds one."""
    if _HASH_TAG.search(prefix):
        return prefix
    tag = prefix.strip(":") or "neoq"
    return f"{prefix}{{{tag}}}:"


def parse_settings(
    url: str,
    *,
    prefix: str | None = None,
    lease: timedelta | float = DEFAULT_LEASE_DURATION,
    poll_interval: timedelta | float = DEFAULT_REDIS_POLL_INTERVAL,
    connect_timeout: timedelta | float = DEFAULT_CONNECT_TIMEOUT,
    check_config: bool = True,
    cluster: bool | None = None,
    socket_timeout: timedelta | float = DEFAULT_SOCKET_TIMEOUT,
) -> RedisSettings:
    """Validate ``url`` and the options; ``ConfigurationError`` naming what to fix (never the password)."""
    if not isinstance(url, str) or url_scheme(url) not in SCHEMES:
        raise ConfigurationError(f"a Redis url starts with redis://, rediss:// or unix://, not {redact_url(url)!r}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsed here, so that its error (which may quote a password) is ours
    except ValueError:
        raise ConfigurationError(
            f"{redact_url(url)} is not a usable Redis url: check its host (an IPv6 address in brackets) and port"
        ) from None
    query = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(name, value) for name, value in query if name not in ("prefix", "cluster")]
    for name, value in query:
        if name == "cluster":
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ConfigurationError(f"cluster= in the url must be true or false, not {value!r}")
            in_url = value.lower() in ("true", "1", "yes")
            if cluster is not None and cluster != in_url:
                raise ConfigurationError("cluster is given twice (in the url and as cluster=), with different values")
            cluster = in_url
    given = [value for name, value in query if name == "prefix"]
    if given:
        if prefix is not None and prefix != given[-1]:
            raise ConfigurationError("the prefix is given twice (in the url and as prefix=), with different values")
        prefix = given[-1]
    if prefix is None:
        prefix = DEFAULT_PREFIX
    if not isinstance(prefix, str) or len(prefix) > 200 or "\x00" in prefix:
        raise ConfigurationError("prefix must be a string of at most 200 characters without NUL")
    lease_seconds = setting_seconds(lease, "lease")
    if lease_seconds < 0.1:
        raise ConfigurationError(f"lease must be at least 0.1 seconds, got {lease_seconds:g}")
    poll = setting_seconds(poll_interval, "poll_interval")
    if not 0.01 <= poll <= 3600:
        raise ConfigurationError(f"poll_interval must be between 0.01 and 3600 seconds, got {poll:g}")
    timeout = setting_seconds(connect_timeout, "connect_timeout")
    if not 0 < timeout <= 3600 or math.isnan(timeout):
        raise ConfigurationError(f"connect_timeout must be above 0 and at most 3600 seconds, got {timeout:g}")
    answer = setting_seconds(socket_timeout, "socket_timeout")
    if not 0 < answer <= 3600 or math.isnan(answer):
        raise ConfigurationError(f"socket_timeout must be above 0 and at most 3600 seconds, got {answer:g}")
    if not isinstance(check_config, bool):
        raise ConfigurationError(f"check_config must be True or False, not {check_config!r}")
    if cluster is not None and not isinstance(cluster, bool):
        raise ConfigurationError(f"cluster must be True or False, not {cluster!r}")
    secrets: set[str] = set()
    try:
        password = parts.password
    except ValueError:
        password = None
    if password:
        secrets.update({password, unquote(password)})
    for name, value in query:
        if "password" in name.lower() and value:
            secrets.update({value, unquote(value)})
    # urlunsplit would drop the empty host of unix:///path: keep what precedes the query as written.
    clean = url.split("?", 1)[0] + (f"?{urlencode(kept)}" if kept else "")
    return RedisSettings(
        url=clean,
        safe_url=redact_url(url),
        secrets=tuple(sorted(secrets, key=len, reverse=True)),
        namespace=namespace_of(prefix),
        lease_seconds=lease_seconds,
        poll_interval=poll,
        connect_timeout=timeout,
        check_config=check_config,
        cluster=bool(cluster),
        socket_timeout=answer,
    )
