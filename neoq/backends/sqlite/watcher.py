"""The wake-up of a client's waiting claim loops when another connection commits to the file.

SQLite cannot notify. ``PRAGMA data_version`` on a connection of its own changes whenever
another connection (of any process) committed to the file since the last call; reading it costs
a few microseconds and takes no lock. One thread per open client that claims reads it every
``watch_interval`` and, when it changed, signals every queue of the client's waiting
(``Waiting.signal(None)``): one waiting loop per queue looks once (a read while nothing is due).
So jobs enqueued or retried by another process start within about ``watch_interval``, and an
idle client costs one pragma per interval, not one look per loop. This process's own enqueues
signal their queue at once, without the watcher.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable

from .connections import connect, describe
from .settings import SqliteSettings

__all__ = ["Watcher"]

logger = logging.getLogger(__name__)


class Watcher:
    """The thread that reads ``PRAGMA data_version``; ``stop`` joins it and closes its connection."""

    def __init__(self, settings: SqliteSettings, signal: Callable[[], None]) -> None:
        self._settings = settings
        self._signal = signal
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="neoq-sqlite-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and close its connection. Idempotent."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        interval = self._settings.watch_interval
        conn: sqlite3.Connection | None = None
        seen = None
        try:
            while not self._stop.wait(interval):
                try:
                    if conn is None:
                        conn = connect(self._settings)
                    version = conn.execute("PRAGMA data_version").fetchone()[0]
                except sqlite3.Error as exc:
                    logger.warning("neoq: %s; watching again in 1s", describe(exc, self._settings.path, "watching"))
                    if conn is not None:
                        conn.close()
                        conn = None
                    seen = None
                    self._stop.wait(1.0)
                    continue
                if version != seen:
                    if seen is not None:
                        self._signal()
                    seen = version
        except Exception:  # pragma: no cover - a bug: log it; the loops' safety-net poll goes on
            logger.exception("neoq: the SQLite watcher failed")
        finally:
            if conn is not None:
                conn.close()
