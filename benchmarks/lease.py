"""The lease mode's throughput beside pgqueuer and a minimal 10-rows-per-transaction loop, in one run.

``python -m benchmarks.lease [--quick]`` (``make bench-lease``; pgqueuer comes from ``.venv-bench``).
Each subject processes the harness's ``process`` workload (``n`` no-op jobs already queued,
concurrency 10, until the last one is recorded as done) in a fresh interpreter and a database of
its own; the figure is the median of the rounds. It prints the rates and the two ratios issue 9
asks for: neoq lease / pgqueuer >= 1.5 and neoq lease / min 10-per-transaction >= 0.6.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from .harness import CONCURRENCY, QUEUE, Countdown, fresh_database, run_rounds, sizes_from
from .subjects_postgres import MinPostgres, NeoqPostgres

#: name -> (module, class)
SUBJECTS: dict[str, tuple[str, str]] = {
    "neoq-lease": ("benchmarks.lease", "NeoqLease"),
    "neoq-transaction": ("benchmarks.subjects_postgres", "NeoqPostgres"),
    "pgqueuer": ("benchmarks.subjects_peers", "PgQueuer"),
    "min-batch10": ("benchmarks.lease", "MinBatch10"),
}

#: Rows a minimal loop claims per transaction.
BATCH = 10


class NeoqLease(NeoqPostgres):
    """neoq on PostgreSQL in lease mode (``mode="lease"``), every other setting the default."""

    label = "neoq postgres, lease mode"

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn)
        self._options = {"mode": "lease"}


class MinBatch10(MinPostgres):
    """The floor of a batching queue: 10 threads, each BEGIN / SELECT 10 rows FOR UPDATE SKIP LOCKED /
    UPDATE them / COMMIT (durable), the no-op handler run for each row in between."""

    label = "min: 10 threads, 10 rows per transaction"

    def process(self, n: int) -> float:
        self.enqueue_copy(n)
        done = Countdown(n)
        connections = [self._connect(autocommit=False) for _ in range(CONCURRENCY)]
        claim = (
            "SELECT id, payload FROM bench_jobs WHERE queue = %s AND status = 'new' AND run_after <= now() "
            "ORDER BY run_after, id FOR UPDATE SKIP LOCKED LIMIT %s"
        )
        finish = "UPDATE bench_jobs SET status = 'processed' WHERE id = ANY(%s)"

        def loop(conn: Any) -> None:
            while True:
                rows = conn.execute(claim, (QUEUE, BATCH)).fetchall()
                if not rows:
                    conn.rollback()
                    return
                for _ in rows:
                    done.tick()
                conn.execute(finish, ([row[0] for row in rows],))
                conn.commit()

        return self._time_loops(loop, connections, done)


def _one(name: str, quick: bool) -> dict[str, Any]:
    """Measure one subject here (in the child interpreter)."""
    import importlib

    module_name, class_name = SUBJECTS[name]
    cls = getattr(importlib.import_module(module_name), class_name)
    sizes = sizes_from(quick)
    with fresh_database(name) as dsn:
        subject = cls(dsn)
        try:
            return run_rounds(subject, "process", sizes)
        finally:
            subject.close()


def _measure(name: str, quick: bool) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.lease", "--one", name] + (["--quick"] if quick else [])
    proc = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).parent.parent, timeout=1800)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        return {"error": lines[-1] if lines else f"exit {proc.returncode}"}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lease")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--one", choices=sorted(SUBJECTS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        json.dump(_one(args.one, args.quick), sys.stdout)
        sys.stdout.write("\n")
        return 0
    sizes = sizes_from(args.quick)
    print(f"process {sizes.jobs} queued no-op jobs, concurrency {CONCURRENCY}, median of {sizes.rounds} rounds")
    rates: dict[str, float] = {}
    for name in SUBJECTS:
        result = _measure(name, args.quick)
        if "error" in result:
            print(f"  {name:18} error: {result['error']}")
            continue
        rates[name] = result["figure"]["rate"]
        rounds = ", ".join(f"{r['rate']:.0f}" for r in result["rounds"])
        print(f"  {name:18} {rates[name]:8.0f} jobs/s   (rounds: {rounds})")
    lease = rates.get("neoq-lease")
    ok = True
    for other, target in (("pgqueuer", 1.5), ("min-batch10", 0.6)):
        if lease is None or other not in rates:
            print(f"  neoq-lease / {other}: n/a")
            ok = False
            continue
        ratio = lease / rates[other]
        met = ratio >= target
        ok = ok and met
        print(f"  neoq-lease / {other}: {ratio:.2f}x (target >= {target}x: {'met' if met else 'NOT met'})")
    if "neoq-transaction" in rates and lease is not None:
        print(f"  neoq-lease / neoq-transaction: {lease / rates['neoq-transaction']:.2f}x")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
