"""What an idle worker costs PostgreSQL: transactions per second, by concurrency and mode.

    python -m benchmarks.idle [--seconds 30] [--concurrency 10 50] [--modes transaction lease]

Each case gets a database of its own (nothing else connects to it), starts one worker on one empty
queue, lets it settle for two seconds, then reads ``pg_stat_database`` (commits + rollbacks of that
database) before and after ``--seconds`` of idling. The figure counts every transaction of the
worker's connections, the listener's included. ``pg_stat_database`` is updated by each backend at
its transaction ends and flushed at most once a second, so short runs read a little low or high.
"""

from __future__ import annotations

import argparse
import time

import psycopg

from .harness import admin_dsn, fresh_database


def _transactions(name: str) -> int:
    with psycopg.connect(admin_dsn(), autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", (name,)
        ).fetchone()
    return int(row[0]) if row else 0


def idle_rate(concurrency: int, mode: str, seconds: float) -> float:
    """Transactions per second of one idle worker (``concurrency`` claim loops, ``mode``)."""
    import neoq

    with fresh_database(f"idle-{mode}-{concurrency}") as url:
        name = url.rsplit("/", 1)[-1].split("?", 1)[0]
        with neoq.new(url, mode=mode) as nq:
            nq.start("idle", neoq.Handler(lambda job: None, concurrency=concurrency))
            time.sleep(2.0)  # pools filled, listener up, first looks done
            time.sleep(1.1)  # the statistics of the start flushed
            before = _transactions(name)
            time.sleep(seconds)
            time.sleep(1.1)  # flushed again
            after = _transactions(name)
            nq.shutdown()
    return (after - before) / (seconds + 1.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.idle")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--modes", nargs="+", default=["transaction", "lease"])
    args = parser.parse_args(argv)
    print(f"idle worker, {args.seconds:g} s each: PostgreSQL transactions per second")
    for mode in args.modes:
        for concurrency in args.concurrency:
            rate = idle_rate(concurrency, mode, args.seconds)
            print(f"  {mode:<12} concurrency {concurrency:<3} {rate:5.2f} transactions/s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
