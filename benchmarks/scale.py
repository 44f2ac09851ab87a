"""Does neoq on PostgreSQL stay fast as the table grows? (``make bench-scale``)

    python -m benchmarks.scale [--quick]

1. Processing rate of the first 10,000 jobs with 10,000 queued, and with 100,000 queued
   (the target: within 20%).
2. One-at-a-time enqueue and processing on an empty table, then again with 1,000,000
   processed jobs kept in it (retention off; the target: flat).

Each figure is the median of the rounds; each ratio compares figures of this run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from .harness import CONCURRENCY, QUEUE, Countdown, fresh_database, median
from .run import RESULTS, machine

TIMEOUT = 900.0


def _client(dsn: str) -> Any:
    import neoq

    return neoq.new(dsn, retention_processed=None, retention_failed=None)


def _truncate(dsn: str) -> None:
    from .subjects_postgres import _truncate_tables

    _truncate_tables(dsn, "neoq_", keep=("neoq_migrations",))


def _process_first(dsn: str, queued: int, measured: int) -> float:
    """With ``queued`` jobs waiting, return the rate (jobs/s) of processing the first ``measured``."""
    import neoq

    _truncate(dsn)
    client = _client(dsn)
    try:
        for first in range(0, queued, 10_000):
            client.enqueue_many(
                [neoq.Job(queue=QUEUE, payload={"i": i}) for i in range(first, min(queued, first + 10_000))]
            )
        _analyze(dsn)
        done = Countdown(measured)
        start = time.perf_counter()
        client.start(QUEUE, lambda job: done.tick(), concurrency=CONCURRENCY)
        return measured / (done.wait(TIMEOUT) - start)
    finally:
        client.shutdown(timeout=5)


def _analyze(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def _enqueue_rate(dsn: str, n: int) -> float:
    import neoq

    client = _client(dsn)
    try:
        start = time.perf_counter()
        for i in range(n):
            client.enqueue(neoq.Job(queue=QUEUE, payload={"e": i, "at": start}))
        return n / (time.perf_counter() - start)
    finally:
        client.shutdown(timeout=5)


def _keep_processed(dsn: str, rows: int) -> float:
    """Insert ``rows`` finished jobs (with their attempt records) as a long-running system keeps them."""
    import psycopg

    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO neoq_jobs (queue, fingerprint, payload, status, created_at, finished_at) "
            "SELECT %s, md5(g::text), json_build_object('old', g), 'processed', now(), now() "
            "FROM generate_series(1, %s) AS g",
            (QUEUE, rows),
        )
        conn.execute(
            "INSERT INTO neoq_attempts (job_id, attempts, ran_at) "
            "SELECT id, 1, now() FROM neoq_jobs WHERE status = 'processed' ON CONFLICT DO NOTHING"
        )
        conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale")
    parser.add_argument("--quick", action="store_true", help="1 round, 10x smaller")
    args = parser.parse_args(argv)
    rounds = int(os.environ.get("BENCH_ROUNDS") or (1 if args.quick else 3))
    scale = 10 if args.quick else 1
    small, large, measured = 10_000 // scale, 100_000 // scale, 10_000 // scale
    kept, probe_enqueue, probe_process = 1_000_000 // scale, 2_000 // scale, 5_000 // scale
    info = machine()
    print(f"neoq scale benchmark, median of {rounds} round(s); {info['nproc']} cores, PostgreSQL {info['postgresql']}")
    print("(the two sides of each comparison alternate round by round, so load from elsewhere hits both alike)")
    results: dict[str, Any] = {}
    with fresh_database("scale") as plain, fresh_database("scale_kept") as history:
        _client(plain).shutdown()  # creates the schema
        _client(history).shutdown()
        small_rates, large_rates = [], []
        for _ in range(rounds):
            small_rates.append(_process_first(plain, small, measured))
            large_rates.append(_process_first(plain, large, measured))
        rate_small, rate_large = median(small_rates), median(large_rates)
        print(f"  processing the first {measured:,} of {small:,} queued: {rate_small:,.0f} jobs/s", flush=True)
        print(f"  processing the first {measured:,} of {large:,} queued: {rate_large:,.0f} jobs/s", flush=True)
        results["queued"] = {"small": rate_small, "large": rate_large, "ratio": rate_large / rate_small}

        seconds = _keep_processed(history, kept)
        print(f"  kept {kept:,} processed jobs in a second database ({seconds:.0f} s to insert)", flush=True)
        rates: dict[str, list[float]] = {
            "enqueue_empty": [],
            "enqueue_kept": [],
            "process_empty": [],
            "process_kept": [],
        }
        for _ in range(rounds):
            for name, dsn in (("empty", plain), ("kept", history)):
                _clear_new(dsn)
                rates[f"enqueue_{name}"].append(_enqueue_rate(dsn, probe_enqueue))
                _clear_new(dsn)
                rates[f"process_{name}"].append(_process_first_keep(dsn, probe_process))
        history_figures: dict[str, Any] = {key: median(values) for key, values in rates.items()}
        history_figures["kept"] = kept
        history_figures["enqueue_ratio"] = history_figures["enqueue_kept"] / history_figures["enqueue_empty"]
        history_figures["process_ratio"] = history_figures["process_kept"] / history_figures["process_empty"]
        results["history"] = history_figures
        print(
            f"  empty table: enqueue {history_figures['enqueue_empty']:,.0f} jobs/s, "
            f"processing {history_figures['process_empty']:,.0f} jobs/s\n"
            f"  {kept:,} processed kept: enqueue {history_figures['enqueue_kept']:,.0f} jobs/s, "
            f"processing {history_figures['process_kept']:,.0f} jobs/s",
            flush=True,
        )
    queued_ok = results["queued"]["ratio"] >= 0.8
    history_figures = results["history"]
    flat = history_figures["enqueue_ratio"] >= 0.8 and history_figures["process_ratio"] >= 0.8
    print("\ntargets (ratios from this run):")
    print(
        f"  {'MET' if queued_ok else 'NOT MET':<8} rate with {large:,} queued within 20% of {small:,}: "
        f"{results['queued']['ratio']:.2f}"
    )
    print(
        f"  {'MET' if flat else 'NOT MET':<8} flat with {kept:,} processed kept (within 20%): enqueue "
        f"{history_figures['enqueue_ratio']:.2f}, processing {history_figures['process_ratio']:.2f}"
    )
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"scale-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_text(json.dumps({"machine": info, "rounds": rounds, "results": results}, indent=2))
    print(f"\nwritten: {path}")
    return 0


def _clear_new(dsn: str) -> None:
    """Delete the jobs a probe left behind (waiting, or processed by an earlier probe); keep the history."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM neoq_jobs WHERE payload::text NOT LIKE '{\"old\"%%'")


def _process_first_keep(dsn: str, n: int) -> float:
    """Enqueue ``n`` jobs beside the kept history and return the rate of processing them."""
    import neoq

    client = _client(dsn)
    try:
        client.enqueue_many([neoq.Job(queue=QUEUE, payload={"i": i}) for i in range(n)])
        done = Countdown(n)
        start = time.perf_counter()
        client.start(QUEUE, lambda job: done.tick(), concurrency=CONCURRENCY)
        return n / (done.wait(TIMEOUT) - start)
    finally:
        client.shutdown(timeout=5)


if __name__ == "__main__":
    sys.exit(main())
