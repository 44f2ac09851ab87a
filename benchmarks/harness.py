"""The benchmark harness: workloads, rounds, a throw-away database, the table and the JSON.

Every subject (neoq on a backend, a peer library, a minimal hand-written loop) is a class with
the same four workloads, run in a fresh interpreter per (subject, workload) by ``run.py``:

- ``enqueue``:      enqueue ``n`` no-op jobs one call at a time from one thread (jobs/s)
- ``enqueue_many``: the same through the batch API (jobs/s)
- ``process``:      ``n`` jobs already queued, processed with concurrency 10 until the last one is
                    done (jobs/s)
- ``pickup``:       an idle running worker; jobs enqueued one by one at about 50/s; the latency
                    is the handler's start minus the moment just before the enqueue call (ms)

A subject lacks a workload by not defining its method (shown as "n/a"). Each job's payload is
``{"i": <index>}`` (plus ``"t"``, a ``time.perf_counter()`` reading, for pickup), so every job is
distinct for the libraries that deduplicate identical payloads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

#: The server the benchmarks use; each run creates its own databases there and drops them.
DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"

#: The worker concurrency of the ``process`` and ``pickup`` workloads.
CONCURRENCY = 10

#: The queue (or task) name every subject uses.
QUEUE = "bench"

#: How long a pickup worker sits idle before the first job is enqueued.
IDLE_BEFORE_PICKUP = 0.5


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much work one round does."""

    #: Jobs per enqueue / enqueue_many / process round.
    jobs: int = 10_000
    #: Jobs per pickup round.
    pickup_jobs: int = 300
    #: Enqueues per second during pickup.
    pickup_rate: float = 50.0
    #: Rounds per figure; the figure is their median.
    rounds: int = 3


FULL = Sizes()
QUICK = Sizes(jobs=2_000, pickup_jobs=100, rounds=1)


def sizes_from(quick: bool) -> Sizes:
    """Return the sizes to run, honouring ``BENCH_ROUNDS`` (and ``BENCH_JOBS``) from the environment."""
    sizes = QUICK if quick else FULL
    rounds = os.environ.get("BENCH_ROUNDS")
    jobs = os.environ.get("BENCH_JOBS")
    if rounds:
        sizes = dataclasses.replace(sizes, rounds=max(1, int(rounds)))
    if jobs:
        sizes = dataclasses.replace(sizes, jobs=max(10, int(jobs)))
    return sizes


# -- measuring -------------------------------------------------------------------------------


class Countdown:
    """Counts finished jobs; ``wait()`` returns when ``n`` were counted.

    ``tick()`` costs one ``next()`` on an ``itertools.count`` (atomic under the GIL) and one
    comparison, so the counter does not become the bottleneck it measures.
    """

    def __init__(self, n: int) -> None:
        import itertools

        self.n = n
        self._count = itertools.count(1)
        self.done = threading.Event()
        self.finished_at = 0.0

    def tick(self) -> None:
        if next(self._count) == self.n:
            self.finished_at = time.perf_counter()
            self.done.set()

    def wait(self, timeout: float) -> float:
        """Wait for the last job; return when it finished (``perf_counter``). Raises on timeout."""
        if not self.done.wait(timeout):
            raise TimeoutError(f"only some of {self.n} jobs finished within {timeout:.0f}s")
        return self.finished_at


class Latencies:
    """Collects pickup latencies (seconds) from handler threads or tasks."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.values: list[float] = []
        self._lock = threading.Lock()
        self.done = threading.Event()

    def record(self, enqueued_at: float) -> None:
        latency = time.perf_counter() - enqueued_at
        with self._lock:
            self.values.append(latency)
            if len(self.values) >= self.n:
                self.done.set()

    def wait(self, timeout: float) -> list[float]:
        if not self.done.wait(timeout):
            raise TimeoutError(f"only {len(self.values)} of {self.n} pickups within {timeout:.0f}s")
        return list(self.values)


def paced(n: int, rate: float) -> Iterator[int]:
    """Yield 0..n-1, the i-th not before ``start + i / rate`` (a steady rate, drift-free)."""
    start = time.perf_counter()
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        yield i


def percentile(values: list[float], pct: float) -> float:
    """Return the ``pct`` percentile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100.0 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median(values: list[float]) -> float:
    return statistics.median(values)


# -- databases -------------------------------------------------------------------------------


def admin_dsn() -> str:
    return os.environ.get("BENCH_DATABASE_URL", DEFAULT_ADMIN_DSN)


def _with_dbname(dsn: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


@contextlib.contextmanager
def fresh_database(label: str) -> Iterator[str]:
    """Create a database of its own for one subject; drop it afterwards. Yields its URL."""
    import psycopg

    name = f"neoq_bench_{label.replace('-', '_')}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = admin_dsn()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_dbname(admin, name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def server_version() -> str:
    try:
        import psycopg

        with psycopg.connect(admin_dsn(), autocommit=True, connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            return str(row[0]) if row else "?"
    except Exception as exc:  # the report says so instead of failing
        return f"unreachable ({type(exc).__name__})"


# -- running one workload ----------------------------------------------------------------------

#: The workloads, in table order, with their unit and whether bigger is better.
WORKLOADS: dict[str, tuple[str, str]] = {
    "enqueue": ("(a) enqueue, one call at a time", "jobs/s"),
    "enqueue_many": ("(b) enqueue, batch API", "jobs/s"),
    "process": ("(c) process queued jobs, concurrency 10", "jobs/s"),
    "pickup": ("(d) pickup latency at 50/s", "ms"),
}


def run_rounds(subject: Any, workload: str, sizes: Sizes) -> dict[str, Any]:
    """Run ``sizes.rounds`` rounds of ``workload`` on ``subject``; return raw and median figures."""
    method: Callable[..., Any] = getattr(subject, workload)
    rounds: list[Any] = []
    for _ in range(sizes.rounds):
        subject.reset()
        if workload == "pickup":
            latencies = method(sizes.pickup_jobs, sizes.pickup_rate)
            rounds.append(
                {"p50_ms": percentile(latencies, 50) * 1000, "p99_ms": percentile(latencies, 99) * 1000}
            )
        else:
            seconds = method(sizes.jobs)
            rounds.append({"rate": sizes.jobs / seconds, "seconds": seconds})
    if workload == "pickup":
        figure = {
            "p50_ms": median([r["p50_ms"] for r in rounds]),
            "p99_ms": median([r["p99_ms"] for r in rounds]),
        }
    else:
        figure = {"rate": median([r["rate"] for r in rounds])}
    return {"figure": figure, "rounds": rounds}
