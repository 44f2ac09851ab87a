"""A lease-mode worker process for the fault tests: ``python tests/lease_worker.py SPEC_JSON``.

Handlers record what they did in ``neoq_lease_effects`` through a connection of their own (a
lease-mode attempt has no job transaction). What a job does is in its payload ``mode``:
``effect`` (record and return), ``kill`` (SIGKILL its own process), ``block_once`` (attempt 1
writes ``flag`` and blocks for ever; later attempts record and return), ``late_once`` (attempt 1
writes ``flag``, waits ``sleep`` seconds, records ``late`` and returns; later attempts record and
raise). Prints ``ready`` once connected, and a JSON report after SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

EFFECTS_TABLE = """
CREATE TABLE IF NOT EXISTS neoq_lease_effects (
    job_id  bigint NOT NULL,
    pid     integer NOT NULL,
    attempt integer NOT NULL,
    what    text NOT NULL,
    at      timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


def write_flag(path: str, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader never sees the file half written.

    Tests wait for the flag to exist and then read it; ``Path.write_text`` creates the file empty
    before it writes, so a reader could see ``''``.
    """
    partial = Path(path + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def main(spec_text: str) -> None:  # pragma: no cover - runs in a child process
    import logging

    import psycopg

    import neoq

    spec = json.loads(spec_text)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    lock = threading.Lock()

    def record(job: neoq.Job, what: str) -> None:
        with lock, psycopg.connect(spec["url"], autocommit=True) as conn:
            conn.execute(
                "INSERT INTO neoq_lease_effects (job_id, pid, attempt, what) VALUES (%s, %s, %s, %s)",
                [int(job.id or 0), os.getpid(), job.attempts, what],
            )

    def handle(job: neoq.Job) -> None:
        payload = job.payload
        mode = payload.get("mode", "effect")
        if mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if mode == "block_once" and job.attempts == 1:
            write_flag(payload["flag"], str(os.getpid()))
            threading.Event().wait()
        if mode == "late_once":
            if job.attempts == 1:
                write_flag(payload["flag"], str(os.getpid()))
                time.sleep(payload["sleep"])
                record(job, "late")
                return
            record(job, "rerun")
            raise RuntimeError(f"attempt {job.attempts} fails")
        record(job, "done")

    client = neoq.new(spec["url"], application_name=spec["app"], **spec.get("options", {}))
    print("ready", flush=True)
    for queue, settings in spec["queues"].items():
        client.start(queue, neoq.Handler(handle, mode="lease", **settings))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    stop.wait()
    client.shutdown(timeout=10)
    print(json.dumps({"pid": os.getpid()}), flush=True)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1])
