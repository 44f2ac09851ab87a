"""A neoq worker process on Redis for the fault suite: ``python redis_chaos_worker.py '<json spec>'``.

The spec: ``{"url": neoq's URL, "server": the bare server URL, "effects": the list key,
"queue": name, "concurrency": n, "options": {...}}``. It prints ``ready`` once its handler runs,
and on SIGTERM shuts down and exits 0. Each job sleeps ``payload["sleep"]`` seconds, then pushes
``"<job id> <attempt> <pid> <time.time()>"`` onto the effects list: with leases an attempt's
effect is at-least-once, so a job whose worker was killed after its push but before its outcome
was written has two.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time


def main(spec_text: str) -> None:  # pragma: no cover - runs in a child process
    import redis

    import neoq

    spec = json.loads(spec_text)
    logging.basicConfig(level=logging.CRITICAL)  # the faults are meant to log errors
    effects = redis.Redis.from_url(spec["server"])
    key = spec["effects"]

    def handle(job: neoq.Job) -> None:
        time.sleep(float(job.payload.get("sleep", 0)))
        effects.rpush(key, f"{job.id} {job.attempts} {os.getpid()} {time.time()!r}")

    client = neoq.new(spec["url"], **spec.get("options", {}))
    client.start(spec["queue"], neoq.Handler(handle, concurrency=spec["concurrency"]))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    print("ready", flush=True)
    stop.wait()
    client.shutdown(timeout=5)
    effects.close()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1])
