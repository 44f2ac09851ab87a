"""Run the benchmark plan, print one table with ratios, check the targets, write JSON.

    python -m benchmarks.run [--peers] [--quick] [--only SUBJECT ...] [--ab REF]

Without ``--peers``: neoq on memory, PostgreSQL and Redis beside the minimal hand-written loops
(``make bench``). With ``--peers``: huey, procrastinate, pgqueuer, rq and Celery too (``make bench-peers``,
which runs this in the ``.venv-bench`` virtualenv that has them). Every round of every
(subject, workload) runs in a fresh interpreter (``benchmarks.one``), rounds interleaved across
subjects; every figure is the median of its rounds, and every ratio is neoq's figure divided by
the row's, from the same run.

``--ab REF`` (``make bench-ab``) adds, beside each neoq row, the same subject run on neoq as it was
at git revision ``REF``: that ``neoq/`` package is exported into a temporary folder beside this
checkout's ``benchmarks/``, so both sides run the same workload code, in the same rounds, interleaved.
Its ratio column reads "this checkout / REF".
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .harness import WORKLOADS, median, server_version, sizes_from

RESULTS = Path(__file__).parent / "results"


@dataclasses.dataclass(frozen=True)
class Row:
    """One figure of the table: ``subject``'s ``method`` shown as ``workload`` on ``backend``."""

    backend: str
    workload: str
    subject: str
    method: str
    label: str
    peer: bool = False
    #: A/B: the folder holding the baseline's ``neoq/`` (and a copy of ``benchmarks/``), else None.
    base: str | None = None

    @property
    def key(self) -> str:
        return f"{self.backend}/{self.workload}/{self.label}"


def _rows() -> list[Row]:
    mem, pg, rd, sq = "memory", "postgresql", "redis", "sqlite"
    my, mytx = "mysql", "mysql-tx"
    return [
        Row(mem, "enqueue", "neoq-memory", "enqueue", "neoq"),
        Row(mem, "enqueue", "huey-memory", "enqueue", "huey (MemoryHuey)", peer=True),
        Row(mem, "enqueue", "min-queue", "enqueue", "min: queue.Queue.put"),
        Row(mem, "enqueue_many", "neoq-memory", "enqueue_many", "neoq"),
        Row(mem, "enqueue_many", "huey-memory", "enqueue_many", "huey (Task.map)", peer=True),
        Row(mem, "process", "neoq-memory", "process", "neoq"),
        Row(mem, "process", "huey-memory", "process", "huey (MemoryHuey, 10 threads)", peer=True),
        Row(mem, "process", "min-queue", "process", "min: queue.Queue, 10 threads"),
        Row(mem, "process", "min-executor", "process", "min: ThreadPoolExecutor.submit"),
        Row(mem, "pickup", "neoq-memory", "pickup", "neoq"),
        Row(mem, "pickup", "huey-memory", "pickup", "huey (MemoryHuey, 10 threads)", peer=True),
        Row(mem, "pickup", "min-queue", "pickup", "min: queue.Queue, 10 threads"),
        Row(mem, "pickup", "min-executor", "pickup", "min: ThreadPoolExecutor.submit"),
        Row(pg, "enqueue", "neoq-postgres", "enqueue", "neoq"),
        Row(pg, "enqueue", "procrastinate", "enqueue", "procrastinate (defer)", peer=True),
        Row(pg, "enqueue", "pgqueuer", "enqueue", "pgqueuer (enqueue)", peer=True),
        Row(pg, "enqueue", "min-postgres", "enqueue", "min: single-row INSERT"),
        Row(pg, "enqueue", "min-postgres", "enqueue_unique", "min: INSERT + unique fingerprint"),
        Row(pg, "enqueue_many", "neoq-postgres", "enqueue_many", "neoq"),
        Row(pg, "enqueue_many", "procrastinate", "enqueue_many", "procrastinate (batch_defer)", peer=True),
        Row(pg, "enqueue_many", "pgqueuer", "enqueue_many", "pgqueuer (enqueue lists)", peer=True),
        Row(pg, "enqueue_many", "min-postgres", "enqueue_many", "min: multi-row INSERT"),
        Row(pg, "enqueue_many", "min-postgres", "enqueue_copy", "min: COPY"),
        Row(pg, "enqueue_many", "min-postgres", "enqueue_copy_unique", "min: COPY + unique fingerprint"),
        Row(pg, "process", "neoq-postgres", "process", "neoq"),
        Row(pg, "process", "procrastinate", "process", "procrastinate", peer=True),
        Row(pg, "process", "pgqueuer", "process", "pgqueuer", peer=True),
        Row(pg, "process", "min-postgres", "process", "min: 10 threads SKIP LOCKED"),
        Row(pg, "pickup", "neoq-postgres", "pickup", "neoq"),
        Row(pg, "pickup", "procrastinate", "pickup", "procrastinate", peer=True),
        Row(pg, "pickup", "pgqueuer", "pickup", "pgqueuer", peer=True),
        Row(pg, "pickup", "min-postgres", "pickup", "min: LISTEN/NOTIFY"),
        Row(sq, "enqueue", "neoq-sqlite", "enqueue", "neoq"),
        Row(sq, "enqueue", "huey-sqlite", "enqueue", "huey (SqliteHuey)", peer=True),
        Row(sq, "enqueue", "min-sqlite", "enqueue", "min: single-row INSERT"),
        Row(sq, "enqueue_many", "neoq-sqlite", "enqueue_many", "neoq"),
        Row(sq, "enqueue_many", "huey-sqlite", "enqueue_many", "huey (Task.map)", peer=True),
        Row(sq, "process", "neoq-sqlite", "process", "neoq"),
        Row(sq, "process", "huey-sqlite", "process", "huey (SqliteHuey, 10 threads)", peer=True),
        Row(sq, "process", "min-sqlite", "process", "min: 10 threads BEGIN IMMEDIATE claim"),
        Row(sq, "process", "min-sqlite-settle", "process", "min: 10 threads claim, then mark done"),
        Row(sq, "pickup", "neoq-sqlite", "pickup", "neoq"),
        Row(sq, "pickup", "huey-sqlite", "pickup", "huey (SqliteHuey, 10 threads)", peer=True),
        # MySQL/MariaDB: neoq in lease mode (the default) on "mysql", in transaction mode on "mysql-tx".
        Row(my, "enqueue", "neoq-mysql", "enqueue", "neoq"),
        Row(my, "enqueue", "min-mysql", "enqueue", "min: single-row INSERT"),
        Row(my, "enqueue_many", "neoq-mysql", "enqueue_many", "neoq"),
        Row(my, "enqueue_many", "min-mysql", "enqueue_many", "min: multi-row INSERT"),
        Row(my, "process", "neoq-mysql", "process", "neoq"),
        Row(my, "process", "min-mysql", "process", "min: 10 threads SKIP LOCKED"),
        Row(mytx, "process", "neoq-mysql-tx", "process", "neoq"),
        Row(mytx, "process", "min-mysql", "process", "min: 10 threads SKIP LOCKED"),
        # Redis: neoq, huey, the minimal redis-py loops, rq and Celery on one server.
        Row(rd, "enqueue", "neoq-redis", "enqueue", "neoq"),
        Row(rd, "enqueue", "huey-redis", "enqueue", "huey (RedisHuey)", peer=True),
        Row(rd, "enqueue", "min-redis", "enqueue", "min: LPUSH"),
        Row(rd, "enqueue_many", "neoq-redis", "enqueue_many", "neoq"),
        Row(rd, "enqueue_many", "huey-redis", "enqueue_many", "huey (Task.map)", peer=True),
        Row(rd, "enqueue_many", "min-redis", "enqueue_many", "min: one LPUSH of all"),
        Row(rd, "enqueue", "rq-simple", "enqueue", "rq (Queue.enqueue)", peer=True),
        Row(rd, "enqueue", "celery", "enqueue", "Celery (delay)", peer=True),
        Row(rd, "process", "neoq-redis", "process", "neoq"),
        Row(rd, "process", "huey-redis", "process", "huey (RedisHuey, 10 threads)", peer=True),
        Row(rd, "process", "min-redis", "process", "min: 10 threads LMOVE + LREM"),
        Row(rd, "process", "rq-fork", "process", "rq Worker: fork per job, 1 at a time", peer=True),
        Row(rd, "process", "rq-simple", "process", "rq SimpleWorker: 1 at a time", peer=True),
        Row(rd, "process", "rq-pool", "process", "rq worker-pool -n 10 (fork per job)", peer=True),
        Row(rd, "process", "celery", "process", "Celery -P threads -c 10", peer=True),
        Row(rd, "pickup", "neoq-redis", "pickup", "neoq"),
        Row(rd, "pickup", "huey-redis", "pickup", "huey (RedisHuey, 10 threads)", peer=True),
        Row(rd, "pickup", "min-redis", "pickup", "min: 10 threads BLMOVE"),
        Row(rd, "pickup", "rq-fork", "pickup", "rq Worker: fork per job, 1 at a time", peer=True),
        Row(rd, "pickup", "rq-simple", "pickup", "rq SimpleWorker: 1 at a time", peer=True),
        Row(rd, "pickup", "celery", "pickup", "Celery -P threads -c 10", peer=True),
    ]


def _measure(row: Row, quick: bool) -> dict[str, Any]:
    """Run one round of ``row`` in a fresh interpreter."""
    command = [sys.executable, "-m", "benchmarks.one", row.subject, row.method] + (["--quick"] if quick else [])
    started = time.monotonic()
    proc = subprocess.run(
        command,
        capture_output=True,
        text=True,
        # ``-m`` puts the working folder first on sys.path: the baseline's neoq/ wins there.
        cwd=row.base or Path(__file__).parent.parent,
        timeout=1800,
        env={**os.environ, "BENCH_ROUNDS": "1"},
    )
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        return {"error": lines[-1] if lines else f"exit {proc.returncode}", "elapsed": elapsed}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["elapsed"] = elapsed
    return result


def export_baseline(ref: str) -> tuple[str, str]:
    """Export ``neoq/`` at git revision ``ref`` beside a copy of today's ``benchmarks/``; return (folder, sha)."""
    root = Path(__file__).parent.parent
    sha = subprocess.run(
        ["git", "rev-parse", "--short", ref], cwd=root, check=True, capture_output=True, text=True
    ).stdout.strip()
    folder = Path(tempfile.mkdtemp(prefix=f"neoq-ab-{sha}-"))
    archive = subprocess.run(["git", "archive", ref, "neoq"], cwd=root, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    shutil.copytree(root / "benchmarks", folder / "benchmarks", ignore=shutil.ignore_patterns("results", "__pycache__"))
    return str(folder), sha


def with_baseline(rows: list[Row], folder: str, sha: str) -> list[Row]:
    """Each neoq row followed by the same subject on the baseline's neoq."""
    out = []
    for row in rows:
        out.append(row)
        if row.label == "neoq":
            out.append(dataclasses.replace(row, label=f"neoq @{sha}", base=folder))
    return out


def _fmt(workload: str, figure: dict[str, float] | None) -> str:
    if figure is None:
        return "n/a"
    if workload == "pickup":
        return f"p50 {figure['p50_ms']:.2f} ms, p99 {figure['p99_ms']:.2f} ms"
    return f"{figure['rate']:,.0f} jobs/s"


def _ratio(workload: str, neoq: dict[str, float] | None, other: dict[str, float] | None) -> str:
    if neoq is None or other is None:
        return ""
    if workload == "pickup":
        return f"p50 {neoq['p50_ms'] / other['p50_ms']:.2f}x, p99 {neoq['p99_ms'] / other['p99_ms']:.2f}x"
    return f"{neoq['rate'] / other['rate']:.2f}x"


@dataclasses.dataclass(frozen=True)
class Target:
    text: str
    backend: str
    workload: str
    other: str | None  # a row label; None: an absolute bound on neoq's own figure
    field: str
    op: str  # how the ratio (or value) must compare with bound: ">=", "<=" or "<"
    bound: float
    #: The other row's workload, when it is not ``workload`` (neoq's enqueue_many against its enqueue).
    other_workload: str | None = None


TARGETS = [
    Target("memory processing >= 2x huey", "memory", "process", "huey (MemoryHuey, 10 threads)", "rate", ">=", 2.0),
    Target(
        "memory processing >= 1.0x ThreadPoolExecutor.submit",
        "memory", "process", "min: ThreadPoolExecutor.submit", "rate", ">=", 1.0,
    ),
    Target("memory pickup p50 < 0.5 ms", "memory", "pickup", None, "p50_ms", "<", 0.5),
    Target("memory pickup p99 < 5 ms", "memory", "pickup", None, "p99_ms", "<", 5.0),
    Target("postgres processing >= 3x procrastinate", "postgresql", "process", "procrastinate", "rate", ">=", 3.0),
    Target(
        "postgres processing >= 1.0x minimal SKIP LOCKED loop",
        "postgresql", "process", "min: 10 threads SKIP LOCKED", "rate", ">=", 1.0,
    ),
    Target(
        "postgres enqueue >= 0.9x minimal single-row INSERT",
        "postgresql", "enqueue", "min: single-row INSERT", "rate", ">=", 0.9,
    ),
    Target(
        "postgres enqueue_many >= 1.5x pgqueuer batch",
        "postgresql", "enqueue_many", "pgqueuer (enqueue lists)", "rate", ">=", 1.5,
    ),
    Target("postgres enqueue_many >= 0.6x minimal COPY", "postgresql", "enqueue_many", "min: COPY", "rate", ">=", 0.6),
    Target(
        "postgres pickup p50 <= 1.2x minimal LISTEN/NOTIFY",
        "postgresql", "pickup", "min: LISTEN/NOTIFY", "p50_ms", "<=", 1.2,
    ),
    Target("postgres pickup p50 below pgqueuer's", "postgresql", "pickup", "pgqueuer", "p50_ms", "<", 1.0),
    Target(
        "mysql (lease) processing >= 1.5x minimal SKIP LOCKED loop",
        "mysql", "process", "min: 10 threads SKIP LOCKED", "rate", ">=", 1.5,
    ),
    Target(
        "mysql (transaction) processing >= 1.0x minimal loop",
        "mysql-tx", "process", "min: 10 threads SKIP LOCKED", "rate", ">=", 1.0,
    ),
    Target(
        "mysql enqueue >= 0.9x minimal single-row INSERT",
        "mysql", "enqueue", "min: single-row INSERT", "rate", ">=", 0.9,
    ),
    Target(
        "mysql enqueue_many >= 0.5x minimal multi-row INSERT",
        "mysql", "enqueue_many", "min: multi-row INSERT", "rate", ">=", 0.5,
    ),
    Target("postgres pickup p99 < 15 ms", "postgresql", "pickup", None, "p99_ms", "<", 15.0),
    Target("redis processing >= 2x huey", "redis", "process", "huey (RedisHuey, 10 threads)", "rate", ">=", 2.0),
    Target("redis processing >= 3x rq", "redis", "process", "rq worker-pool -n 10 (fork per job)", "rate", ">=", 3.0),
    Target("redis processing >= 1.0x Celery", "redis", "process", "Celery -P threads -c 10", "rate", ">=", 1.0),
    Target(
        "redis processing >= 0.5x minimal LMOVE loop",
        "redis", "process", "min: 10 threads LMOVE + LREM", "rate", ">=", 0.5,
    ),
    Target("redis enqueue >= 1.0x huey", "redis", "enqueue", "huey (RedisHuey)", "rate", ">=", 1.0),
    Target(
        "redis enqueue_many >= 10x its own enqueue",
        "redis", "enqueue_many", "neoq", "rate", ">=", 10.0, other_workload="enqueue",
    ),
    Target("redis pickup p50 <= huey's", "redis", "pickup", "huey (RedisHuey, 10 threads)", "p50_ms", "<=", 1.0),
    Target("sqlite processing >= 2x huey", "sqlite", "process", "huey (SqliteHuey, 10 threads)", "rate", ">=", 2.0),
    Target(
        "sqlite processing >= 0.8x minimal BEGIN IMMEDIATE loop",
        "sqlite", "process", "min: 10 threads BEGIN IMMEDIATE claim", "rate", ">=", 0.8,
    ),
    Target("sqlite enqueue >= 1.0x huey", "sqlite", "enqueue", "huey (SqliteHuey)", "rate", ">=", 1.0),
    Target(
        "sqlite enqueue_many >= 10x its own enqueue",
        "sqlite", "enqueue_many", "neoq", "rate", ">=", 10.0, other_workload="enqueue",
    ),
    Target("sqlite pickup p50 < 5 ms", "sqlite", "pickup", None, "p50_ms", "<", 5.0),
]


def check_targets(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """Return each target with its measured value and whether it is met (None: not measured)."""
    checks = []
    for target in TARGETS:
        neoq = figures.get(f"{target.backend}/{target.workload}/neoq")
        value: float | None = None
        if neoq is not None:
            if target.other is None:
                value = neoq[target.field]
            else:
                workload = target.other_workload or target.workload
                other = figures.get(f"{target.backend}/{workload}/{target.other}")
                if other is not None:
                    value = neoq[target.field] / other[target.field]
        met = None
        if value is not None:
            met = {">=": value >= target.bound, "<=": value <= target.bound, "<": value < target.bound}[target.op]
        checks.append({"target": target.text, "value": value, "met": met})
    return checks


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in ("neoq", "psycopg", "huey", "procrastinate", "pgqueuer", "rq", "celery", "kombu", "redis"):
        try:
            from importlib.metadata import version

            versions[name] = version(name)
        except Exception:
            continue
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "postgresql": server_version(),
        "redis": redis_version(),
        "versions": versions,
    }


def redis_version() -> str:
    try:
        import redis

        from .subjects_redis import redis_url

        return str(redis.Redis.from_url(redis_url(), socket_timeout=5).info("server")["redis_version"])
    except Exception as exc:  # not installed (make bench) or not running
        return f"unavailable ({type(exc).__name__})"


def print_table(rows: list[Row], results: dict[str, Any], out: Any = sys.stdout) -> None:
    header = ("backend", "workload", "subject", "figure (median)", "neoq / this")
    lines = []
    for row in rows:
        result = results.get(row.key, {})
        figure = result.get("figure")
        neoq = results.get(f"{row.backend}/{row.workload}/neoq", {}).get("figure")
        shown = _fmt(row.workload, figure) if figure else f"n/a ({result.get('error', 'not run')})"[:70]
        ratio = "" if row.label == "neoq" else _ratio(row.workload, neoq, figure)
        lines.append((row.backend, WORKLOADS[row.workload][0], row.label, shown, ratio))
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{width}}}" for width in widths)
    print(fmt.format(*header), file=out)
    print(fmt.format(*("-" * width for width in widths)), file=out)
    previous = None
    for line in lines:
        if previous is not None and line[:2] != previous[:2]:
            print(file=out)
        print(fmt.format(*line), file=out)
        previous = line


def print_targets(checks: list[dict[str, Any]], out: Any = sys.stdout) -> None:
    print("\ntargets (ratios from this run):", file=out)
    for check in checks:
        value = check["value"]
        shown = "not measured" if value is None else f"{value:.2f}"
        verdict = {True: "MET", False: "NOT MET", None: "-"}[check["met"]]
        print(f"  {verdict:<8} {check['target']:<55} {shown}", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run")
    parser.add_argument("--peers", action="store_true", help="also run huey, procrastinate, pgqueuer, rq and Celery")
    parser.add_argument("--quick", action="store_true", help="1 round, 2,000 jobs, 100 pickups")
    parser.add_argument("--only", nargs="*", help="run only these subjects (e.g. neoq-memory min-queue)")
    parser.add_argument("--ab", metavar="REF", help="also run neoq as it was at git revision REF, interleaved")
    parser.add_argument("--workloads", nargs="*", help="run only these workloads (e.g. process pickup)")
    args = parser.parse_args(argv)
    rows = [row for row in _rows() if args.peers or not row.peer]
    if args.only:
        rows = [row for row in rows if row.subject in args.only]
    if args.workloads:
        rows = [row for row in rows if row.workload in args.workloads]
    baseline = None
    if args.ab:
        baseline = export_baseline(args.ab)
        rows = with_baseline(rows, *baseline)
    sizes = sizes_from(args.quick)
    info = machine()
    print(
        f"neoq benchmarks: {sizes.jobs:,} jobs, {sizes.pickup_jobs} pickups at {sizes.pickup_rate:g}/s, "
        f"median of {sizes.rounds} round(s); {info['nproc']} cores ({info['cpu']}), "
        f"PostgreSQL {info['postgresql']}, Python {info['python']}",
        flush=True,
    )
    started = time.monotonic()
    results: dict[str, Any] = {}
    # Rounds are the outer loop: load from elsewhere on a shared machine comes and goes over
    # minutes, and interleaving spreads it over every subject instead of a few.
    rounds: dict[str, list[dict[str, Any]]] = {row.key: [] for row in rows}
    for number in range(1, sizes.rounds + 1):
        print(f"round {number} of {sizes.rounds}", flush=True)
        for row in rows:
            print(f"  {row.backend:<10} {row.workload:<12} {row.label} ...", end=" ", flush=True)
            result = _measure(row, args.quick)
            figure = result.get("figure")
            print(_fmt(row.workload, figure) if figure else f"failed: {result['error']}", flush=True)
            if figure is not None:
                rounds[row.key].append(figure)
            elif row.key not in results:
                results[row.key] = result  # the error, unless a later round succeeds
    for row in rows:
        figures = rounds[row.key]
        if figures:
            keys = figures[0].keys()
            results[row.key] = {
                "figure": {key: median([figure[key] for figure in figures]) for key in keys},
                "rounds": figures,
            }
    print(f"\n({time.monotonic() - started:.0f} s)\n")
    print_table(rows, results)
    figures = {key: value["figure"] for key, value in results.items() if "figure" in value}
    checks = check_targets(figures)
    print_targets(checks)
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"{'peers' if args.peers else 'bench'}-{stamp}.json"
    path.write_text(
        json.dumps(
            {"machine": info, "sizes": dataclasses.asdict(sizes), "results": results, "targets": checks},
            indent=2,
        )
    )
    print(f"\nwritten: {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    if baseline is not None:
        shutil.rmtree(baseline[0], ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
