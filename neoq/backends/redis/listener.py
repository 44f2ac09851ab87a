"""The wake-ups of one client: one pub/sub connection, one thread, reconnecting with backoff.

Scripts that make jobs due publish ``q:<origin>:<queue>`` on the namespace's ``wake`` channel;
the listener signals that queue's waiting claim loops, except for the client's own messages
(its enqueues signal their own loops at once). ``p:<queue>`` (a pause) has the client give back
the jobs it leased ahead for that queue. Pub/sub delivers at most once: a message sent
while the connection is down is lost, so the listener signals every queue once it is subscribed
again, and the runtime's timed look (``poll_interval``) is the safety net for the rest. When the
server is away the thread logs it once, waits (50 ms, doubling up to 1 s) and tries again; it
never dies, and it ends only with ``stop()``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import redis

__all__ = ["Listener"]

logger = logging.getLogger("neoq.backends.redis")

#: How long one read of the subscription waits: how soon ``stop()`` is noticed.
_READ_TIMEOUT = 0.2
_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 1.0


class Listener:
    """The pub/sub thread of one open backend.

    ``signal(queue)`` is called for another client's wake-up of ``queue``, ``signal(None)`` after a
    reconnect; ``away(bool)`` tells the backend whether the server is reachable as far as the
    subscription knows.
    """

    def __init__(
        self,
        client: redis.Redis,
        channel: str,
        origin: str,
        *,
        signal: Callable[[str | None], None],
        paused: Callable[[str], None],
        safe_url: str,
    ) -> None:
        self._client = client
        self._channel = channel
        self._own = f"q:{origin}:"
        self._signal = signal
        self._paused = paused
        self._safe_url = safe_url
        self._stop = threading.Event()
        #: Set while the subscription is down (the server restarting, unreachable).
        self.away = threading.Event()
        self._thread = threading.Thread(target=self._run, name="neoq-redis-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and close its connection. Idempotent."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        backoff = _BACKOFF_FIRST
        lost = False
        while not self._stop.is_set():
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self._channel)
                if lost:
                    lost = False
                    self.away.clear()
                    logger.warning("neoq: Redis at %s is back; looking at every queue", self._safe_url)
                    self._signal(None)  # wake-ups sent meanwhile were lost
                backoff = _BACKOFF_FIRST
                self._listen(pubsub)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                if not lost:
                    lost = True
                    self.away.set()
                    logger.warning(
                        "neoq: lost the Redis wake-up connection to %s (%s); reconnecting",
                        self._safe_url,
                        type(exc).__name__,
                    )
                self._stop.wait(backoff)
                backoff = min(_BACKOFF_MAX, backoff * 2)
            except Exception:  # pragma: no cover - keep listening whatever happens
                logger.exception("neoq: the Redis wake-up listener failed; starting it again")
                self._stop.wait(_BACKOFF_MAX)
            finally:
                try:
                    pubsub.close()
                except Exception:  # pragma: no cover - closing a broken connection
                    logger.debug("neoq: closing the Redis wake-up connection failed", exc_info=True)

    def _listen(self, pubsub: redis.client.PubSub) -> None:
        own = self._own
        signal = self._signal
        while not self._stop.is_set():
            message = pubsub.get_message(timeout=_READ_TIMEOUT)
            if message is None or message.get("type") != "message":
                continue
            data = message["data"]
            if not isinstance(data, str) or data.startswith(own):
                continue
            if data.startswith("p:"):
                self._paused(data[2:])
                continue
            if not data.startswith("q:"):
                continue
            queue = data.split(":", 2)[2] if data.count(":") >= 2 else None
            if queue is not None:
                signal(queue)
