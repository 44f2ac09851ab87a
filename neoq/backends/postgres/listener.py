"""The client's LISTEN connection and the thread that hands cancellations to the runtime."""

from __future__ import annotations

import collections
import logging
import os
import queue as queue_module
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import suppress

import psycopg
from psycopg import pq

from ...errors import BackendError
from .common import CHANNEL, Conn, _close_quietly, _parse_id
from .wire import _wait_fds

logger = logging.getLogger(__name__)


class _Canceller:
    """Calls the runtime's cancel callback from a thread of its own.

    The runtime settles the cancelled attempt inside the callback (a statement cancel and a
    round trip that may wait for the handler's statement to stop); doing that on the listener
    thread would hold up every other wake-up meanwhile.
    """

    def __init__(self, notify_cancel: Callable[[str], None]) -> None:
        self._notify_cancel = notify_cancel
        self._queue: queue_module.SimpleQueue[str | None] = queue_module.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="neoq-pg-cancel", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def deliver(self, job_id: str) -> None:
        self._queue.put(job_id)

    def stop(self) -> None:
        self._queue.put(None)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None:
                return
            try:
                self._notify_cancel(job_id)
            except BaseException:  # pragma: no cover - the runtime logs its own errors
                # Whatever it was, the next cancellation must still be delivered.
                logger.exception("neoq: delivering the cancellation of job %s failed", job_id)


# -- the listener ----------------------------------------------------------------------------


class _Listener:
    """The client's LISTEN connection and its thread; reconnects by itself.

    It waits on the connection's socket and on a pipe that ``stop()`` writes to, so closing
    never waits for a timeout. psycopg's own ``notifies()`` would hold the connection lock
    while waiting, which is fine here: nothing else uses this connection.

    A ``c:<id>`` notification is a hint to look: the listener reads this client's recorded
    cancellation requests on its own connection (``PostgresBackend._recorded_cancels``), once for
    all the hints that one wake-up brought.
    """

    def __init__(
        self,
        conn: Conn,
        *,
        connect: Callable[[], Conn],
        on_notify: Callable[[str], None],
        recorded_cancels: Callable[[Conn, Iterable[int]], None],
        redeliver_cancels: Callable[[], bool],
        signal_all: Callable[[], None],
        on_pause: Callable[[str], None] | None = None,
    ) -> None:
        #: The backend's side: a new LISTEN connection, a queue's wake-up, a look at the recorded
        #: cancellations (the hinted job ids), whether cancellations are still being re-delivered,
        #: every waiting claim's wake-up, a queue paused (``p:<queue>``) by some process.
        self._connect = connect
        self._on_notify = on_notify
        self._recorded_cancels = recorded_cancels
        self._redeliver_cancels = redeliver_cancels
        self._signal_all = signal_all
        self._on_pause = on_pause
        self._conn: Conn | None = conn
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        #: Notifications psycopg read while a statement of the listener ran (its notify handler
        #: hands them here; pgconn.notifies() no longer has them).
        self._backlog: collections.deque[str] = collections.deque()
        self._thread = threading.Thread(target=self._run, name="neoq-pg-listener", daemon=True)

    def start(self) -> None:
        """LISTEN, and wait for notifications in a thread of its own from now on."""
        conn = self._conn
        if conn is not None:
            try:
                self._listen(conn)
            except (psycopg.Error, OSError) as exc:
                # The thread connects again (and looks for pending cancellations) by itself.
                logger.debug("neoq: the PostgreSQL listener cannot listen yet: %s", exc)
                self._conn = None
                _close_quietly(conn)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
        conn, self._conn = self._conn, None
        if conn is not None:
            _close_quietly(conn)
        for fd in (self._wake_r, self._wake_w):
            with suppress(OSError):
                os.close(fd)

    def _listen(self, conn: Conn) -> None:
        conn.add_notify_handler(self._keep)
        conn.execute(f"LISTEN {CHANNEL}")

    def _keep(self, notify: psycopg.Notify) -> None:
        self._backlog.append(notify.payload)

    def _run(self) -> None:
        """Listen until stopped. Whatever escapes the loop is logged with its traceback, and the
        loop starts again on a new connection: without it, no claim of this client would be
        woken and no cancellation would reach it."""
        pause = 0.0
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self._loop()
                return
            except BaseException:
                if self._stop.is_set():
                    return
                logger.exception("neoq: the PostgreSQL listener failed; it starts again on a new connection")
                conn, self._conn = self._conn, None
                if conn is not None:
                    _close_quietly(conn)
                # A failure that repeats at once backs off; one after a good while does not.
                pause = 0.1 if time.monotonic() - started > 5.0 else min(5.0, max(0.1, pause * 2))
                if self._wait(pause):
                    return

    def _loop(self) -> None:
        pause = 0.0
        while not self._stop.is_set():
            conn = self._conn
            if conn is None or conn.closed:
                conn = self._reconnect(pause)
                if conn is None:
                    pause = min(5.0, max(0.1, pause * 2))
                    continue
                pause = 0.0
            try:
                if self._backlog:
                    self._deliver(conn)  # read by a statement of the listener's (_reconnect)
                timeout = 0.2 if self._redeliver_cancels() else 30.0
                ready = _wait_fds((conn.pgconn.socket, self._wake_r), timeout)
                if self._wake_r in ready or self._stop.is_set():
                    return
                if not ready:
                    continue
                conn.pgconn.consume_input()
                if conn.pgconn.status != pq.ConnStatus.OK:
                    raise psycopg.OperationalError("the listener's connection was lost")
                self._deliver(conn)
            except (psycopg.Error, OSError, ValueError) as exc:
                if self._stop.is_set():
                    return
                logger.warning("neoq: the PostgreSQL listener lost its connection (%s); reconnecting", exc)
                self._conn = None
                _close_quietly(conn)

    def _deliver(self, conn: Conn) -> None:
        """Act on the notifications that arrived: wake-ups at once, cancellation hints by one look."""
        hinted: set[int] = set()
        while True:
            notify = conn.pgconn.notifies()
            if notify is None:
                break
            self._dispatch(notify.extra.decode("utf-8", "replace"), hinted)
        while hinted or self._backlog:
            while self._backlog:
                self._dispatch(self._backlog.popleft(), hinted)
            if hinted:
                looking, hinted = hinted, set()
                self._recorded_cancels(conn, looking)  # may read more into the backlog

    def _dispatch(self, payload: str, hinted: set[int]) -> None:
        kind, _, value = payload.partition(":")
        if kind == "q":
            self._on_notify(value)
        elif kind == "c":
            job_id = _parse_id(value)
            if job_id is not None:
                hinted.add(job_id)
        elif kind == "p" and self._on_pause is not None:
            self._on_pause(value)

    def _reconnect(self, pause: float) -> Conn | None:
        if pause and self._wait(pause):
            return None
        try:
            conn = self._connect()
        except BackendError as exc:
            logger.debug("neoq: the PostgreSQL listener cannot reconnect yet: %s", exc)
            return None
        try:
            self._listen(conn)
            # Cancellations requested while it was away: their notifications are lost.
            self._recorded_cancels(conn, ())
        except psycopg.Error as exc:
            logger.debug("neoq: the PostgreSQL listener cannot listen yet: %s", exc)
            _close_quietly(conn)
            return None
        except BaseException:
            _close_quietly(conn)
            raise
        if self._stop.is_set():
            _close_quietly(conn)
            return None
        self._conn = conn
        logger.info("neoq: the PostgreSQL listener is connected again")
        # Notifications sent while it was away are lost: every waiting claim looks again.
        self._signal_all()
        return conn

    def _wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds`` unless stopped; True if stopped."""
        with suppress(OSError, ValueError):
            _wait_fds((self._wake_r,), seconds)
        return self._stop.is_set()
