"""The Redis backend's scripts (``lua/*.lua``): every state change is one of them, atomic on the
server and timed by the server's clock (``TIME``).

Each script is ``common.lua`` followed by its own file, run by its SHA (``EVALSHA``) and loaded
with ``SCRIPT LOAD`` when the server answers ``NOSCRIPT``: at its first use, and after a server
restart (or ``SCRIPT FLUSH``). ``KEYS[1]`` is the
namespace's ``seq`` key, so a Cluster client sends the call to the namespace's slot;
``ARGV[1]`` is the namespace (the prefix and hash tag of every key).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from importlib import resources
from typing import Any

import redis

from ...errors import BackendConnectionError, BackendError
from .settings import RedisSettings

__all__ = ["SCRIPT_NAMES", "Scripts", "wrap_error"]

SCRIPT_NAMES = (
    "enqueue",
    "tick",
    "fetch",
    "settle",
    "renew",
    "give_back",
    "cancel",
    "retry",
    "read",
    "stats",
    "prune",
    "progress",
    "pause",
    "rate",
)


def _source(name: str) -> str:
    return resources.files(__package__).joinpath("lua").joinpath(f"{name}.lua").read_text(encoding="utf-8")


_COMMON = _source("common")
_SOURCES = {name: _COMMON + "\n" + _source(name) for name in SCRIPT_NAMES}


def wrap_error(settings: RedisSettings, exc: BaseException, doing: str) -> BackendError:
    """A redis-py error as neoq's: ``BackendConnectionError`` when the server cannot be reached."""
    detail = settings.scrub(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return BackendConnectionError(f"Redis at {settings.safe_url} cannot be reached while {doing} ({detail})")
    return BackendError(f"Redis at {settings.safe_url} failed while {doing} ({detail})")


class Scripts:
    """The scripts of one client; ``run`` calls one by its SHA and wraps the driver's errors.

    ``EVALSHA`` is sent with ``execute_command`` (redis-py's ``Script`` wrapper costs 10-20 µs a
    call, a fifth of an enqueue); a ``NOSCRIPT`` answer loads the script and sends it again.
    """

    def __init__(self, client: redis.Redis, settings: RedisSettings) -> None:
        self.settings = settings
        self._client = client
        self._execute: Callable[..., Any] = client.execute_command
        self._key = settings.key("seq")
        self._namespace = settings.namespace
        self._shas = {name: hashlib.sha1(source.encode("utf-8")).hexdigest() for name, source in _SOURCES.items()}

    def run(self, name: str, args: list[Any], doing: str) -> Any:
        """Run script ``name`` with ``args`` after the namespace; its reply, or a ``BackendError``."""
        try:
            try:
                return self._execute("EVALSHA", self._shas[name], 1, self._key, self._namespace, *args)
            except redis.exceptions.NoScriptError:
                # Not loaded yet, or the server restarted (or ran SCRIPT FLUSH) since: load it again.
                self._client.script_load(_SOURCES[name])
                return self._execute("EVALSHA", self._shas[name], 1, self._key, self._namespace, *args)
        except redis.RedisError as exc:
            raise wrap_error(self.settings, exc, doing) from exc
