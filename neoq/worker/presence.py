"""``Presence``: this process's entry in the store's worker registry (capability ``"workers"``).

Announced when the first queue starts, beaten every few seconds (with the queues served and the
jobs running), forgotten at stop. A process that dies stops beating, and readers forget it after
``WORKER_TTL``. A store error is logged and tried again at the next beat: the registry is
information for people, never a reason to stop working.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Sized
from typing import cast

from ..backends.base import Backend
from ..backends.search import WorkerInfo, WorkerRegistry
from ..clock import Clock
from ..defaults import DEFAULT_WORKER_HEARTBEAT
from ..errors import NeoqError

__all__ = ["Presence"]


class Presence:
    """Announces one worker process in its backend's registry while any of its queues runs."""

    def __init__(
        self,
        backend: Backend,
        running: Sized,
        clock: Clock,
        log: logging.Logger,
        interval: float = DEFAULT_WORKER_HEARTBEAT,
    ) -> None:
        self._registry = cast(WorkerRegistry, backend) if "workers" in backend.capabilities else None
        self._running = running
        self._clock = clock
        self._log = log
        self._interval = interval
        self._lock = threading.Lock()
        self._queues: dict[str, int] = {}
        self._schedules: dict[str, list[str]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._id = ""
        self._pid = 0
        self._started_at = clock.now()

    def add(self, queue: str, concurrency: int) -> None:
        """Serve ``queue`` too: announce now, and beat from now on."""
        if self._registry is None:
            return
        with self._lock:
            self._queues[queue] = concurrency
            if self._thread is None:
                self._pid = os.getpid()
                self._id = f"{socket.gethostname()}:{self._pid}:{secrets.token_hex(4)}"
                self._started_at = self._clock.now()
                self._stop.clear()
                self._thread = threading.Thread(target=self._beat, name="neoq-presence", daemon=True)
                start = self._thread
            else:
                start = None
        self._announce()
        if start is not None:
            start.start()

    def add_schedule(self, queue: str, spec: str, timezone: str) -> None:
        """Say that ``queue`` is a cron schedule's (``start_cron``), with its spec and timezone."""
        with self._lock:
            self._schedules[queue] = [spec, timezone]
        self._announce()

    def _info(self) -> WorkerInfo:
        with self._lock:
            queues = dict(self._queues)
            schedules = {queue: list(value) for queue, value in self._schedules.items()}
        host, pid, _ = self._id.rsplit(":", 2)
        return WorkerInfo(self._id, host, int(pid), queues, len(self._running), self._started_at, schedules=schedules)

    def _announce(self) -> None:
        registry = self._registry
        if registry is None or not self._id:
            return
        try:
            registry.announce_worker(self._info())
        except NeoqError as exc:
            self._log.warning("neoq: could not announce this worker in the store's registry: %s", exc)

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            self._announce()

    def stop(self) -> None:
        """Stop beating and forget this process in the registry. Safe to call twice."""
        with self._lock:
            thread, self._thread = self._thread, None
            worker_id = self._id
            self._queues.clear()
            self._schedules.clear()
        if thread is None:
            return
        if self._pid != os.getpid():
            return  # a forked child: the beating thread and the entry are the parent's
        self._stop.set()
        thread.join()
        if self._registry is not None:
            try:
                self._registry.forget_worker(worker_id)
            except NeoqError as exc:
                self._log.warning("neoq: could not remove this worker from the store's registry: %s", exc)
