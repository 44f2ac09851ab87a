"""Is every dashboard page fast on a large store? (``make bench-dashboard``)

    python -m benchmarks.dashboard [--finished 1000000] [--waiting 100000] [--rounds 7]

Builds the data set in a database of its own (dropped at the end): ``--finished`` finished jobs
over the last 7 days in 5 queues (95% processed, 4% failed with an error, 1% cancelled, each with
its attempt record), ``--waiting`` due waiting jobs, and a few running ones (a live worker). Then
it times each page through the WSGI application (no network; what the server adds is small) and
prints the median and the slowest of ``--rounds``; the target is 200 ms for every page.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from typing import Any

from .harness import fresh_database

TARGET_MS = 200.0
QUEUES = ("emails", "reports", "billing", "exports", "webhooks")


def build(dsn: str, finished: int, waiting: int) -> float:
    """Fill the store; return how long it took (seconds)."""
    import psycopg

    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO neoq_jobs (queue, fingerprint, payload, status, error, run_after, created_at, finished_at) "
            "SELECT (%(queues)s::text[])[1 + g %% 5], md5(g::text), "
            "       json_build_object('order', g, 'customer', 'customer-' || (g %% 9973)), "
            "       CASE WHEN g %% 100 < 95 THEN 'processed' WHEN g %% 100 < 99 THEN 'failed' ELSE 'cancelled' END, "
            "       CASE WHEN g %% 100 BETWEEN 95 AND 98 "
            "            THEN 'myapp.errors.PaymentError: card ' || g || ' declined' END, "
            "       t, t, t + interval '2 seconds' "
            "FROM generate_series(1, %(n)s) AS g, "
            "     LATERAL (SELECT now() - interval '7 days' + (g::float8 / %(n)s) * interval '7 days' AS t) AS at",
            {"queues": list(QUEUES), "n": finished},
        )
        conn.execute(
            "INSERT INTO neoq_attempts (job_id, attempts, ran_at) SELECT id, 1, finished_at FROM neoq_jobs "
            "WHERE status <> 'new' ON CONFLICT DO NOTHING"
        )
        conn.execute(
            "INSERT INTO neoq_jobs (queue, fingerprint, payload, run_after, created_at) "
            "SELECT (%(queues)s::text[])[1 + g %% 5], 'w' || md5(g::text), json_build_object('order', g), "
            "       now() - (g %% 3600) * interval '1 second', now() - (g %% 3600) * interval '1 second' "
            "FROM generate_series(1, %(n)s) AS g",
            {"queues": list(QUEUES), "n": waiting},
        )
        conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - started


def pages(client: Any, sample_id: str, failed_next: str | None) -> dict[str, str]:
    """The pages to time, by label."""
    found = {
        "overview": "/",
        "overview (live JSON)": "/api/overview",
        "jobs: all": "/jobs",
        "jobs: failed": "/jobs?status=failed",
        "jobs: failed, page 2": f"/jobs?status=failed&before={failed_next}",
        "jobs: one queue": "/jobs?queue=billing",
        "jobs: one queue, failed": "/jobs?queue=billing&status=failed",
        "jobs: cancelled": "/jobs?status=cancelled",
        "jobs: waiting": "/jobs?status=new",
        "jobs: running": "/jobs?status=running",
        "jobs: last hour": "/jobs?range=1h",
        "jobs: text in payload": "/jobs?q=customer-42",
        "jobs: text in error": "/jobs?q=declined&status=failed",
        "job page": f"/jobs/{sample_id}",
        "job (live JSON)": f"/api/jobs/{sample_id}",
        "workers": "/workers",
    }
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--finished", type=int, default=1_000_000)
    parser.add_argument("--waiting", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)

    from werkzeug.test import Client

    import neoq
    from neoq.backends.search import JobQuery
    from neoq.dashboard import create_app

    with fresh_database("dashboard") as dsn:
        nq = neoq.new(dsn, retention_processed=None, retention_failed=None)
        release = threading.Event()
        try:
            seconds = build(dsn, args.finished, args.waiting)
            print(f"data set: {args.finished:,} finished + {args.waiting:,} waiting jobs, built in {seconds:.0f} s")
            nq.enqueue_many([neoq.Job(queue="slow", payload={"n": n}) for n in range(4)])
            nq.start("slow", lambda job: release.wait(120), concurrency=4, timeout=300)
            while nq.stats().get("slow", {}).get("running", 0) < 4:
                time.sleep(0.05)
            search: Any = nq.backend
            failed = search.search_jobs(JobQuery(status=neoq.JobStatus.FAILED, limit=50))
            sample = failed.jobs[0].id
            http = Client(create_app(nq))
            rows = []
            for label, path in pages(http, sample, failed.next).items():
                timings = []
                for _ in range(args.rounds):
                    start = time.perf_counter()
                    response = http.get(path)
                    timings.append((time.perf_counter() - start) * 1000)
                    if response.status_code != 200:
                        raise SystemExit(f"{path}: HTTP {response.status_code}")
                rows.append((label, path, statistics.median(timings), max(timings)))
        finally:
            release.set()
            nq.shutdown(timeout=10)
    width = max(len(label) for label, *_ in rows)
    print(f"{'page':<{width}}  {'median':>8}  {'slowest':>8}")
    slow = 0
    for label, _path, median, worst in rows:
        mark = "" if median <= TARGET_MS else "  over the 200 ms target"
        slow += median > TARGET_MS
        print(f"{label:<{width}}  {median:>6.1f}ms  {worst:>6.1f}ms{mark}")
    print("every page within 200 ms (median)" if not slow else f"{slow} page(s) over 200 ms")
    return 0 if not slow else 1


if __name__ == "__main__":
    sys.exit(main())
