"""A neoq worker process for the fault suite: ``python chaos_worker.py '<json spec>'``.

The spec: ``{"url": ..., "app": application_name, "queues": {name: {"concurrency": n, "timeout": s,
"max_retries": n, "backoff": seconds}}, "options": {...}}``. It prints ``ready`` once its handlers
run, and on SIGTERM shuts down and exits 0. What a job does is in its payload's ``mode``:

- ``effect`` (default): sleep ``payload["sleep"]`` seconds, then insert one row into
  ``chaos_effects`` through the job's own transaction, so the row exists iff the job's
  ``PROCESSED`` status was committed with it; on a store without handler transactions (SQLite),
  into the ``chaos_effects`` table of the SQLite file ``spec["effects_file"]`` (at least once);
- ``raise``: raise every time; ``hang``: never return (ignores cancellation);
- ``kill``: SIGKILL its own process.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time

EFFECTS_TABLE = """
CREATE TABLE IF NOT EXISTS chaos_effects (
    job_id  bigint NOT NULL,
    queue   text NOT NULL,
    pid     integer NOT NULL,
    attempt integer NOT NULL,
    sent    double precision,
    started double precision NOT NULL
)
"""


def main(spec_text: str) -> None:  # pragma: no cover - runs in a child process
    import neoq

    spec = json.loads(spec_text)
    logging.basicConfig(level=logging.CRITICAL)  # the faults are meant to log errors

    def handle(job: neoq.Job) -> None:
        started = time.time()
        payload = job.payload
        mode = payload.get("mode", "effect")
        if mode == "raise":
            raise RuntimeError("poison: this handler raises every time")
        if mode == "hang":
            threading.Event().wait()  # never returns, deaf to cancellation
        if mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if payload.get("sleep"):
            time.sleep(payload["sleep"])
        context = neoq.job_context()
        assert context is not None
        if context.transaction is None:
            _file_effect(spec["effects_file"], job, payload, started)
            return
        context.transaction.execute(
            "INSERT INTO chaos_effects VALUES (%s, %s, %s, %s, %s, %s)",
            [int(job.id or 0), job.queue, os.getpid(), job.attempts, payload.get("sent"), started],
        )

    named = {"application_name": spec["app"]} if spec["url"].startswith("postgres") else {}
    client = neoq.new(spec["url"], **named, **spec.get("options", {}))
    for queue, settings in spec["queues"].items():
        settings = dict(settings)
        delay = settings.pop("backoff", None)
        if delay is not None:
            settings["backoff"] = lambda retries, delay=delay: delay
        client.start(queue, neoq.Handler(handle, **settings))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    print("ready", flush=True)
    stop.wait()
    client.shutdown(timeout=5)
    # A hung handler's thread never ends; do not let it keep the process alive.
    sys.stdout.flush()
    os._exit(0)


_effects = threading.local()


def _file_effect(path: str, job: object, payload: dict[str, object], started: float) -> None:  # pragma: no cover
    """One effect row in a SQLite file of the test's (one connection per handler thread)."""
    import sqlite3

    conn = getattr(_effects, "conn", None)
    if conn is None:
        conn = _effects.conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    conn.execute(
        "INSERT INTO chaos_effects VALUES (?, ?, ?, ?, ?, ?)",
        [int(job.id or 0), job.queue, os.getpid(), job.attempts, payload.get("sent"), started],  # type: ignore[attr-defined]
    )


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1])
