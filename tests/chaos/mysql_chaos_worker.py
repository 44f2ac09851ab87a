"""A neoq worker process on MySQL/MariaDB for the fault suite: ``python mysql_chaos_worker.py '<json spec>'``.

The spec is chaos_worker.py's (``url``, ``queues``, ``options``; ``app`` is ignored). Each job
sleeps ``payload["sleep"]`` seconds, then inserts one row into ``chaos_effects``: through the job's
own transaction when the handler has one (transaction mode: the row exists iff the job's
``PROCESSED`` status was committed with it), else through a connection of its own (lease mode:
at least once). It prints ``ready`` once its handlers run, and on SIGTERM shuts down and exits 0.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from urllib.parse import urlsplit

EFFECTS_TABLE = """
CREATE TABLE IF NOT EXISTS chaos_effects (
    job_id  BIGINT NOT NULL,
    queue   VARBINARY(512) NOT NULL,
    pid     INT NOT NULL,
    attempt INT NOT NULL,
    started DOUBLE NOT NULL
) ENGINE = InnoDB
"""
INSERT = "INSERT INTO chaos_effects VALUES (%s, %s, %s, %s, %s)"


def main(spec_text: str) -> None:  # pragma: no cover - runs in a child process
    import pymysql

    import neoq

    spec = json.loads(spec_text)
    logging.basicConfig(level=logging.CRITICAL)  # the faults are meant to log errors
    parts = urlsplit(spec["url"])
    local = threading.local()

    def own_connection() -> pymysql.connections.Connection:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = pymysql.connect(
                host=parts.hostname,
                port=parts.port or 3306,
                user=parts.username or "root",
                password=parts.password or "",
                database=parts.path.lstrip("/"),
                autocommit=True,
            )
        return conn

    def handle(job: neoq.Job) -> None:
        started = time.time()
        if job.payload.get("sleep"):
            time.sleep(job.payload["sleep"])
        context = neoq.job_context()
        assert context is not None
        row = (int(job.id or 0), job.queue, os.getpid(), job.attempts, started)
        conn = context.transaction if context.transaction is not None else own_connection()
        with conn.cursor() as cur:
            cur.execute(INSERT, row)

    client = neoq.new(spec["url"], **spec.get("options", {}))
    for queue, settings in spec["queues"].items():
        client.start(queue, neoq.Handler(handle, **settings))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    print("ready", flush=True)
    stop.wait()
    client.shutdown(timeout=5)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1])
