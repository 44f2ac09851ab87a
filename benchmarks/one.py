"""Run one workload of one subject in this interpreter and print its figures as JSON.

``python -m benchmarks.one SUBJECT WORKLOAD [--quick]``; ``run.py`` starts one of these per
(subject, workload), so every measurement starts from a fresh process: no threads, pools or
garbage left by the subject before.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import signal
import sys
from typing import Any

from .harness import fresh_database, run_rounds, sizes_from

#: subject name -> (module, class, needs a database: True for PostgreSQL, "mysql" for MySQL/MariaDB)
SUBJECTS: dict[str, tuple[str, str, bool | str]] = {
    "neoq-memory": ("benchmarks.subjects_memory", "NeoqMemory", False),
    "min-queue": ("benchmarks.subjects_memory", "MinQueue", False),
    "min-executor": ("benchmarks.subjects_memory", "MinExecutor", False),
    "huey-memory": ("benchmarks.subjects_memory", "HueyMemory", False),
    "neoq-postgres": ("benchmarks.subjects_postgres", "NeoqPostgres", True),
    "min-postgres": ("benchmarks.subjects_postgres", "MinPostgres", True),
    "procrastinate": ("benchmarks.subjects_peers", "Procrastinate", True),
    "pgqueuer": ("benchmarks.subjects_peers", "PgQueuer", True),
    "neoq-sqlite": ("benchmarks.subjects_sqlite", "NeoqSqlite", False),
    "huey-sqlite": ("benchmarks.subjects_sqlite", "HueySqlite", False),
    "min-sqlite": ("benchmarks.subjects_sqlite", "MinSqlite", False),
    "min-sqlite-settle": ("benchmarks.subjects_sqlite", "MinSqliteSettle", False),
    "neoq-mysql": ("benchmarks.subjects_mysql", "NeoqMySQL", "mysql"),
    "neoq-mysql-tx": ("benchmarks.subjects_mysql", "NeoqMySQLTransaction", "mysql"),
    "min-mysql": ("benchmarks.subjects_mysql", "MinMySQL", "mysql"),
    "rq-fork": ("benchmarks.subjects_redis", "RqFork", False),
    "rq-simple": ("benchmarks.subjects_redis", "RqSimple", False),
    "rq-pool": ("benchmarks.subjects_redis", "RqPool", False),
    "celery": ("benchmarks.subjects_redis", "Celery", False),
    "neoq-redis": ("benchmarks.subjects_redis", "NeoqRedis", False),
    "huey-redis": ("benchmarks.subjects_redis", "HueyRedis", False),
    "min-redis": ("benchmarks.subjects_redis", "MinRedis", False),
}


def make(name: str, dsn: str | None) -> Any:
    module_name, class_name, _ = SUBJECTS[name]
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(dsn) if dsn is not None else cls()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.one")
    parser.add_argument("subject", choices=sorted(SUBJECTS))
    parser.add_argument("workload")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    # A terminated run still drops its database (the finally clauses run on SystemExit).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    sizes = sizes_from(args.quick)
    _, _, needs_db = SUBJECTS[args.subject]
    if needs_db:
        fresh = fresh_database
        if needs_db == "mysql":
            from .subjects_mysql import fresh_database as fresh
        with fresh(args.subject) as dsn:
            subject = make(args.subject, dsn)
            try:
                result = run_rounds(subject, args.workload, sizes)
            finally:
                subject.close()
    else:
        subject = make(args.subject, None)
        try:
            result = run_rounds(subject, args.workload, sizes)
        finally:
            subject.close()
    result["sizes"] = sizes.__dict__
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
