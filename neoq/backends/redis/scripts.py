"""The Redis backend's scripts (``lua/*.lua``): every state change is one of them, atomic on the
server and timed by the server's clock (``TIME``).

Each script is ``common.lua`` followed by its own file, loaded once per connection pool with
``SCRIPT LOAD`` and run with ``EVALSHA``; after a server restart (or ``SCRIPT FLUSH``) the first
call finds ``NOSCRIPT`` and loads it again (redis-py's ``Script`` does both). ``KEYS[1]`` is the
namespace's ``seq`` key, so a Cluster client sends the call to the namespace's slot;
``ARGV[1]`` is the namespace (the prefix and hash tag of every key).
"""

from __future__ import annotations

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
    """The scripts, registered on one client; ``run`` calls one and wraps the driver's errors."""

    def __init__(self, client: redis.Redis, settings: RedisSettings) -> None:
        self.settings = settings
        self._keys = [settings.key("seq")]
        self._namespace = settings.namespace
        self._scripts = {name: client.register_script(source) for name, source in _SOURCES.items()}

    def run(self, name: str, args: list[Any], doing: str) -> Any:
        """Run script ``name`` with ``args`` after the namespace; its reply, or a ``BackendError``."""
        try:
            return self._scripts[name](keys=self._keys, args=[self._namespace, *args])
        except redis.RedisError as exc:
            raise wrap_error(self.settings, exc, doing) from exc
