"""The Redis backend (``pip install neoq[redis]``): see ``docs/redis.md``.

``neoq.new("redis://...")`` (also ``rediss://``, ``unix://``) picks it. redis-py is imported here
and only here; without it, constructing ``RedisBackend`` raises ``ConfigurationError`` saying which
extra to install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...errors import ConfigurationError
from ..base import Backend

__all__ = ["RedisBackend"]

if TYPE_CHECKING:
    from .backend import RedisBackend
else:
    try:
        from .backend import RedisBackend
    except ImportError as exc:  # redis-py is not installed
        if exc.name != "redis" and not str(exc.name or "").startswith("redis."):
            raise
        _missing = str(exc.name)

        def _not_installed() -> ConfigurationError:
            return ConfigurationError(
                f"the Redis backend needs {_missing} (redis-py), which is not installed: pip install neoq[redis]"
            )

        class RedisBackend(Backend):
            """Stand-in that explains how to install the Redis driver."""

            def __new__(cls, *args: Any, **kwargs: Any) -> Any:
                raise _not_installed()

            @classmethod
            def from_url(cls, url: str, **options: Any) -> Any:
                raise _not_installed()
