"""A queue with a global limit beside the same queue without one, at the same concurrency.

``python -m benchmarks.glimit [--quick] [--backend NAME] [--modes lease,transaction] [--limit N] [--sleep MS]``
(``make bench-glimit``). Each round processes the harness's ``process`` workload (``n`` no-op jobs
already queued, concurrency 10, until the last one is recorded as done) four ways, interleaved in
one process and one throw-away database: {lease, transaction} x {no limit, ``global_limit=10``}
(``--limit``); ``--sleep`` gives each handler that many milliseconds of sleep. It prints each
figure (the median of the rounds) and each mode's ratio limited / unlimited, which issue 18 wants
at 0.8 or more. ``--backend memory``, ``sqlite`` or ``redis``
measures those stores instead (their one mode).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Any

from .harness import CONCURRENCY, QUEUE, Countdown, fresh_database, sizes_from
from .subjects_memory import TIMEOUT

#: The global limit of the limited runs: the concurrency, so the limit itself holds no loop back.
LIMIT = CONCURRENCY


class Subject:
    """neoq on ``url`` in ``mode``; ``round(n, limit)`` processes ``n`` queued no-op jobs."""

    def __init__(self, url: str, mode: str | None, reset: Any, sleep: float = 0.0) -> None:
        import neoq

        self._neoq = neoq
        self._sleep = sleep
        self._url = url
        self._mode = mode
        self._reset = reset

    def round(self, n: int, limit: int | None) -> float:
        neoq = self._neoq
        self._reset()
        options: dict[str, Any] = {"retention_processed": None, "retention_failed": None}
        if self._mode is not None:
            options["mode"] = self._mode
        with neoq.new(self._url, **options) as client:
            client.enqueue_many([neoq.Job(queue=QUEUE, payload={"i": i}) for i in range(n)])
            done = Countdown(n)
            sleep = self._sleep

            def handler(job: Any) -> None:
                if sleep:
                    time.sleep(sleep)
                done.tick()

            settings: dict[str, Any] = {"concurrency": CONCURRENCY}
            if limit is not None:
                settings["global_limit"] = limit
            start = time.perf_counter()
            client.start(QUEUE, handler, **settings)
            done.wait(TIMEOUT)
            end = time.monotonic() + TIMEOUT
            while client.stats().get(QUEUE, {}).get("processed", 0) < n:  # the outcomes written
                if time.monotonic() > end:
                    raise TimeoutError("jobs ran but were not all recorded as processed")
                time.sleep(0.002)
            return n / (time.perf_counter() - start)


def _postgres(dsn: str) -> Any:
    from .subjects_postgres import _truncate_tables

    def reset() -> None:
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as conn:
            exists = conn.execute("SELECT to_regclass('neoq_jobs') IS NOT NULL").fetchone()
        if exists and exists[0]:
            _truncate_tables(dsn, "neoq_", keep=("neoq_migrations",))

    return reset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.glimit")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--backend", default="postgres", help="postgres (default), memory, sqlite or redis")
    parser.add_argument("--modes", default="lease,transaction", help="PostgreSQL's modes to measure")
    parser.add_argument("--limit", type=int, default=LIMIT)
    parser.add_argument("--sleep", type=float, default=0.0, help="each handler sleeps this many ms (default: no-op)")
    args = parser.parse_args(argv)
    sizes = sizes_from(args.quick)
    limits: list[int | None] = [None, args.limit]
    work = f"{args.sleep:g} ms" if args.sleep else "no-op"
    print(
        f"process {sizes.jobs} queued {work} jobs, concurrency {CONCURRENCY}, no limit vs global_limit={args.limit}, "
        f"median of {sizes.rounds} alternated rounds"
    )
    with _store(args.backend) as (url, reset):
        modes = args.modes.split(",") if args.backend == "postgres" else [None]
        subjects = {mode: Subject(url, mode, reset, args.sleep / 1000) for mode in modes}
        rates: dict[tuple[str | None, int | None], list[float]] = {}
        for _ in range(sizes.rounds):
            for mode, subject in subjects.items():
                for limit in limits:
                    rates.setdefault((mode, limit), []).append(subject.round(sizes.jobs, limit))
        for mode in modes:
            figures = [statistics.median(rates[mode, limit]) for limit in limits]
            for limit, figure in zip(limits, figures, strict=True):
                rounds = ", ".join(f"{r:.0f}" for r in rates[mode, limit])
                name = f"{mode or args.backend}, {'no limit' if limit is None else f'global_limit={limit}'}"
                print(f"  {name:36} {figure:8.0f} jobs/s   (rounds: {rounds})")
            print(f"  {mode or args.backend}: limited / unlimited = {figures[1] / figures[0]:.2f}")
    return 0


class _store:
    """The store to measure: (url, reset) of a throw-away PostgreSQL database, SQLite file or Redis prefix."""

    def __init__(self, backend: str) -> None:
        self._backend = backend
        self._exit: Any = None

    def __enter__(self) -> tuple[str, Any]:
        if self._backend == "postgres":
            self._exit = fresh_database("glimit")
            dsn = self._exit.__enter__()
            return dsn, _postgres(dsn)
        if self._backend == "memory":
            return "memory://", lambda: None
        if self._backend == "sqlite":
            folder = tempfile.mkdtemp(prefix="neoq-glimit-")
            path = os.path.join(folder, "bench.db")

            def reset_sqlite() -> None:
                for suffix in ("", "-wal", "-shm"):
                    if os.path.exists(path + suffix):
                        os.remove(path + suffix)

            return f"sqlite:///{path}", reset_sqlite
        if self._backend == "redis":
            import redis

            from .subjects_redis import redis_url

            client = redis.Redis.from_url(redis_url())
            return f"{redis_url()}?prefix=neoq-bench:", client.flushdb  # the benchmarks' database only
        raise SystemExit(f"unknown backend {self._backend!r}")

    def __exit__(self, *exc: object) -> None:
        if self._exit is not None:
            self._exit.__exit__(*exc)


if __name__ == "__main__":
    sys.exit(main())
