"""Fixtures of the fault suite (tests/chaos): worker processes that a test may SIGKILL, and sizes.

``make chaos`` sets ``NEOQ_CHAOS=full`` for the full-size runs; ``make test`` runs shorter ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from chaos_worker import EFFECTS_TABLE
from pgfixtures import unique_name

#: True under ``make chaos``: the full-size versions of each fault.
FULL = os.environ.get("NEOQ_CHAOS") == "full"

WORKER_SCRIPT = Path(__file__).resolve().parent / "chaos_worker.py"


class WorkerStartError(RuntimeError):
    """A worker process that ended before it said ``ready`` (``returncode``: -9 when SIGKILLed)."""

    def __init__(self, message: str, returncode: int) -> None:
        super().__init__(message)
        self.returncode = returncode


class ChaosWorker:
    """One ``chaos_worker.py`` process; the constructor returns once its handlers run."""

    def __init__(
        self,
        url: str,
        queues: dict[str, dict[str, Any]],
        *,
        effects_file: str | None = None,
        script: Path = WORKER_SCRIPT,
        **options: Any,
    ) -> None:
        self.app = unique_name("neoq-chaos")
        spec = {"url": url, "app": self.app, "queues": queues, "options": options, "effects_file": effects_file}
        self.proc = subprocess.Popen(
            [sys.executable, str(script), json.dumps(spec)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=str(script.parent),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.proc.kill()
            code = self.proc.wait()
            raise WorkerStartError(f"chaos worker did not start: {line!r} (exit {code})", code)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, and reap the process."""
        if self.alive():
            self.proc.kill()
        self.proc.wait(30)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (a graceful shutdown); return the exit code."""
        if self.alive():
            self.proc.terminate()
        self.proc.communicate(timeout=timeout)
        return self.proc.returncode


@pytest.fixture
def chaos_workers() -> Iterator[Callable[..., ChaosWorker]]:
    """``chaos_workers(url, queues, **options)`` starts a worker process; all are killed after the test."""
    started: list[ChaosWorker] = []

    def start(url: str, queues: dict[str, dict[str, Any]], **options: Any) -> ChaosWorker:
        worker = ChaosWorker(url, queues, **options)  # effects_file=...: where a store without transactions writes
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()
        if worker.proc.stdout is not None:
            worker.proc.stdout.close()


def create_effects_table(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(4343)")
        try:
            conn.execute(EFFECTS_TABLE)
        finally:
            conn.execute("SELECT pg_advisory_unlock(4343)")


@pytest.fixture
def chaos_db(pg_url: str) -> str:
    """The test run's database with the ``chaos_effects`` table; returns its URL."""
    create_effects_table(pg_url)
    return pg_url


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def figures(title: str, **values: Any) -> None:
    """Print one line of figures (shown by ``make chaos``, which runs pytest with ``-s``)."""
    shown = ", ".join(f"{key.replace('_', ' ')}={value}" for key, value in values.items())
    print(f"\n[chaos] {title}: {shown}", flush=True)
