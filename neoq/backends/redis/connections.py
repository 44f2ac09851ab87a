"""The client of one open backend: a connection pool on one server, or redis-py's Cluster client.

Neither retries a command by itself: a script whose reply was lost may have run, and running it
again is not harmless (an enqueue would find its own job a duplicate); the lease engine and the
claim loops try again where that is safe. Every connection is named ``neoq-<origin>`` (``CLIENT
LIST`` shows a client's connections, its wake-up one included).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ...errors import ConfigurationError
from .settings import RedisSettings

__all__ = ["open_client"]


def open_client(settings: RedisSettings, origin: str) -> tuple[Any, Callable[[], None]]:
    """A client (not yet connected) and the call that closes all its connections."""
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_connect_timeout": settings.connect_timeout,
        "socket_timeout": settings.socket_timeout,
        "socket_keepalive": True,
        "health_check_interval": 30,
        "retry": Retry(NoBackoff(), 0),
        "client_name": f"neoq-{origin}",
    }
    try:
        if settings.cluster:
            from redis.cluster import RedisCluster

            cluster = RedisCluster.from_url(settings.url, **options)
            return cluster, cluster.close
        pool = redis.ConnectionPool.from_url(settings.url, **options)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"the Redis url {settings.safe_url} cannot be used ({settings.scrub(str(exc))})"
        ) from None
    except redis.RedisError:
        raise  # the Cluster client connects at once: the caller wraps it
    return redis.Redis(connection_pool=pool), pool.disconnect
