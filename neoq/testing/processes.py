"""The parent's side of the shared-store suite's worker processes, and what both sides share.

``WorkerPool`` starts each child as ``python -m neoq.testing.worker SPEC_JSON`` (the spec, the
actions a job's payload chooses and the files a child writes are described there) and reads what
the children wrote. This module must not import ``neoq.testing.worker``: ``python -m`` runs that
module, and it would warn had the package already imported it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..flow import RateLimit
from ..handler import Handler
from ..job import Job
from .helpers import wait_for

__all__ = ["WorkerPool", "WorkerProcess", "job_key", "make_handler", "wait_until", "write_atomically"]

#: The module each worker process runs (``python -m``).
WORKER_MODULE = "neoq.testing.worker"

#: How long a child may take to start (import, connect, start its handlers) on a busy machine.
START_SECONDS = 60.0

#: The graceful shutdown a child gets on SIGTERM, and how long its parent waits for it.
STOP_SECONDS = 10.0


def job_key(job_id: str) -> str:
    """The job id as a file-name-safe key."""
    return job_id.encode().hex()


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader never sees it half written."""
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    partial.write_text(text)
    os.replace(partial, path)


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.01, pool: WorkerPool | None = None
) -> Any:
    """Poll ``predicate`` until it returns something truthy and return that.

    After ``timeout`` seconds, fail naming ``what``, with the state and output of ``pool``'s processes.
    """
    try:
        return wait_for(predicate, timeout, interval)
    except AssertionError:
        raise AssertionError(f"not within {timeout:g}s: {what}" + ("" if pool is None else pool.report())) from None


def make_handler(func: Callable[[Job], None], settings: dict[str, Any]) -> Handler:
    """``Handler(func, **settings)``, where ``settings["backoff"]``, if given, is a number of seconds,
    and ``settings["rate_limit"]`` a ``RateLimit``'s ``{"count": n, "per": seconds}``."""
    settings = dict(settings)
    delay = settings.pop("backoff", None)
    if delay is not None:
        settings["backoff"] = lambda retries: float(delay)
    rate = settings.pop("rate_limit", None)
    if rate is not None:
        settings["rate_limit"] = RateLimit(int(rate["count"]), float(rate["per"]))
    return Handler(func, **settings)


# -- the parent --------------------------------------------------------------------------------


class WorkerProcess:
    """One child process; its output goes to ``log`` (shown when it misbehaves)."""

    def __init__(self, spec: dict[str, Any], name: str) -> None:
        directory = Path(spec["dir"])
        self.name = name
        self.log = directory / f"{name}.log"
        self.ready_path = directory / f"{name}.ready"
        self.terminated = False
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", WORKER_MODULE, json.dumps({**spec, "ready": str(self.ready_path)})],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def __repr__(self) -> str:
        return f"<WorkerProcess {self.name} pid={self.pid} returncode={self.proc.poll()}>"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        """The tail of the child's output."""
        return self.log.read_text(errors="replace")[-4000:]

    def ready(self) -> bool:
        """True once the child serves its queues; fails if it exited before that."""
        if self.ready_path.exists():
            return True
        if self.proc.poll() is not None:
            raise AssertionError(f"{self!r} exited before it was ready:\n{self.output()}")
        return False

    def terminate(self) -> None:
        """SIGTERM, once: begin a graceful shutdown."""
        # Once only: a second SIGTERM could reach the child while the interpreter finalises, when
        # its handler is gone, and kill it (exit -15) after a clean shutdown.
        if self.alive() and not self.terminated:
            self.terminated = True
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> int:
        """SIGTERM, wait for the graceful shutdown, and return the exit code."""
        self.terminate()
        try:
            return self.proc.wait(STOP_SECONDS + 20)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self!r} did not stop after SIGTERM:\n{self.output()}") from None

    def kill(self) -> None:
        """SIGKILL and reap (nothing if it has exited)."""
        if self.alive():
            self.proc.kill()
        self.proc.wait(30)


class WorkerPool:
    """The worker processes of one test, on one store; ``close()`` kills whatever is left.

    ``handler_options`` are merged into the settings of every queue and schedule it starts.
    """

    def __init__(
        self, url: str, directory: Path, client_options: dict[str, Any], handler_options: dict[str, Any]
    ) -> None:
        self.url = url
        self.directory = directory
        self.client_options = client_options
        self.handler_options = handler_options
        self.processes: list[WorkerProcess] = []

    def start(
        self,
        queues: dict[str, dict[str, Any]] | None = None,
        cron: list[dict[str, Any]] | None = None,
        *,
        wait: bool = True,
    ) -> WorkerProcess:
        """Start one process serving ``queues`` and ``cron``; with ``wait``, return once it is ready."""
        spec = {
            "url": self.url,
            "client": self.client_options,
            "queues": {queue: {**self.handler_options, **settings} for queue, settings in (queues or {}).items()},
            "cron": [{**self.handler_options, **entry} for entry in cron or []],
            "dir": str(self.directory),
        }
        process = WorkerProcess(spec, f"worker-{len(self.processes)}")
        self.processes.append(process)
        if wait:
            self.wait_ready([process])
        return process

    def wait_ready(self, processes: list[WorkerProcess]) -> None:
        """Return once every one of ``processes`` is ready (each gets ``START_SECONDS``)."""
        for process in processes:
            wait_until(process.ready, START_SECONDS, f"{process!r} is ready")

    def wait(self, predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.01) -> Any:
        """``wait_until`` that shows these processes when it fails."""
        return wait_until(predicate, timeout, what, interval, self)

    def stop(self, processes: list[WorkerProcess]) -> None:
        """Stop ``processes`` gracefully, all at once; fail unless each exits 0."""
        for process in processes:
            process.terminate()
        for process in processes:
            assert process.stop() == 0, f"{process!r} did not exit cleanly:\n{process.output()}"

    def report(self) -> str:
        """Each process's state and the tail of its output, for a failure message."""
        return "".join(f"\n--- {process!r}:\n{process.output()[-1500:]}" for process in self.processes)

    def flag(self, job_id: str, name: str) -> Path:
        """The path of flag ``name`` (``running``, ``cancelled``, ``killed``) of job ``job_id``."""
        return self.directory / f"{job_key(job_id)}.{name}"

    def effects(self, job_id: str | None = None) -> list[dict[str, Any]]:
        """The effect records of job ``job_id`` (of every job when ``None``), in start order."""
        pattern = "*.json" if job_id is None else f"{job_key(job_id)}.*.json"
        found = [json.loads(path.read_text()) for path in self.directory.glob(pattern)]
        return sorted(found, key=lambda effect: float(effect["started"]))

    def close(self) -> None:
        for process in self.processes:
            process.kill()
