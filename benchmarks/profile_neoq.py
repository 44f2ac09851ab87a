"""Where neoq's time goes, per job: ``python -m benchmarks.profile_neoq [memory|postgres] [N]``.

memory:   the claim loop (claim, run, settle) and enqueue under cProfile, in one thread, so
          every call is seen; prints the top functions by own time.
postgres: enqueue one at a time, then the claim loop of 1 thread and of 10, with the backend's
          steps timed and the transactions committed per job (``pg_stat_database.xact_commit``).
          The backend talks to libpq directly on its hot path, so count round trips from outside:
          ``strace -f -e trace=sendto,recvfrom python -m benchmarks.profile_neoq postgres 500``
          (each round trip is one ``recvfrom``).
"""

from __future__ import annotations

import collections
import cProfile
import functools
import pstats
import sys
import time
from concurrent.futures import wait as wait_futures
from typing import Any

from .harness import CONCURRENCY, QUEUE, fresh_database


def _burst(client: Any, concurrency: int) -> int:
    """Run the worker's own claim loops in burst mode until the queue is empty; return jobs run."""
    from neoq.handler import as_handler
    from neoq.worker.loops import QueueRunner

    worker = client._worker  # the runtime itself, so nothing but the claim loop is measured
    runner = QueueRunner(QUEUE, as_handler(lambda job: None, concurrency=concurrency), burst=True)
    worker._launch(runner)
    wait_futures(runner.futures)
    assert runner.executor is not None
    runner.executor.shutdown()
    return runner.ran


def profile_memory(n: int) -> None:
    import neoq

    client = neoq.new("memory://", retention_processed=None, retention_failed=None)
    jobs = [neoq.Job(queue=QUEUE, payload={"i": i}) for i in range(n)]
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    for job in jobs:
        client.enqueue(job)
    profiler.disable()
    print(f"enqueue, one at a time (profiled): {n / (time.perf_counter() - started):,.0f} jobs/s")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(12)

    from neoq.handler import as_handler
    from neoq.worker.loops import QueueRunner

    runner = QueueRunner(QUEUE, as_handler(lambda job: None), burst=True)
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    client._worker._loop(runner)  # in this thread, so cProfile sees every call
    profiler.disable()
    print(f"claim loop, one thread (profiled): {runner.ran / (time.perf_counter() - started):,.0f} jobs/s")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
    client.shutdown()


class _Steps:
    """Wall time of the backend's steps, summed over every thread."""

    def __init__(self) -> None:
        self.seconds: collections.Counter[str] = collections.Counter()
        self.calls: collections.Counter[str] = collections.Counter()

    def wrap(self, cls: type, name: str) -> None:
        original = getattr(cls, name)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - started
                self.calls[name] += 1

        setattr(cls, name, timed)


def _commits(dsn: str) -> int:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").fetchone()
        time.sleep(0.6)  # the statistics collector lags; one more read after a pause
        row = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").fetchone()
        return int(row[0]) if row else 0


def profile_postgres(n: int) -> None:
    import psycopg

    import neoq
    from neoq.backends.postgres import backend as pg

    print(f"psycopg implementation: {psycopg.pq.__impl__}")
    steps = _Steps()
    for name in ("enqueue", "_probe", "_count_attempt", "settle", "release"):
        steps.wrap(pg.PostgresBackend, name)
    with fresh_database("profile") as dsn:
        client = neoq.new(dsn, retention_processed=None, retention_failed=None)
        plan = (("enqueue, one at a time", 0), ("1 thread", 1), (f"{CONCURRENCY} threads", CONCURRENCY))
        for label, concurrency in plan:
            jobs = [neoq.Job(queue=QUEUE, payload={"i": i, "c": concurrency}) for i in range(n)]
            if concurrency:
                client.enqueue_many(jobs)
            before_commits = _commits(dsn)
            steps.seconds.clear()
            steps.calls.clear()
            started = time.perf_counter()
            if concurrency:
                ran = _burst(client, concurrency)
            else:
                for job in jobs:
                    client.enqueue(job)
                ran = n
            elapsed = time.perf_counter() - started
            commits = _commits(dsn) - before_commits - 2  # the two reads of _commits itself
            print(f"\n{label}: {ran / elapsed:,.0f} jobs/s over {ran:,} jobs")
            print(f"  per job: {commits / ran:.2f} commits (the statistics collector lags: a floor)")
            threads = max(1, concurrency)
            for name, seconds in steps.seconds.most_common():
                print(
                    f"  {name:<15} {seconds / steps.calls[name] * 1000:7.3f} ms a call, "
                    f"{steps.calls[name] / ran:.2f} calls a job, "
                    f"{seconds / (elapsed * threads) * 100:3.0f}% of thread time"
                )
            if concurrency == 0:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute("DELETE FROM neoq_jobs")
        client.shutdown()
    print("\n(_probe includes _count_attempt)")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    what = args[0] if args else "memory"
    n = int(args[1]) if len(args) > 1 else (20_000 if what == "memory" else 3_000)
    if what == "memory":
        profile_memory(n)
    elif what == "postgres":
        profile_postgres(n)
    else:
        print("usage: python -m benchmarks.profile_neoq [memory|postgres] [N]", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
