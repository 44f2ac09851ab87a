"""A worker process of the shared-store suite: ``python -m neoq.testing.worker SPEC_JSON``.

``SharedStoreSuite`` (``neoq.testing.shared``) runs real processes against one store through
``WorkerPool`` (``neoq.testing.processes``). A child reads a JSON spec::

    {"url": "...", "client": {options for neoq.new()},
     "queues": {"queue": {handler settings}},
     "cron": [{"spec": "*/1 * * * * *", "queue": "...", ...handler settings}],
     "dir": "/tmp/...", "ready": "/tmp/.../worker-0.ready"}

Handler settings are ``Handler``'s keyword arguments (``concurrency``, ``timeout``, ``max_retries``,
``mode``), with ``backoff`` as a number of seconds. Once every handler and schedule has started,
the child writes its pid to ``ready``; SIGTERM shuts it down gracefully (exit 0).

What a job does is chosen by its payload's ``"action"``, so no user module is needed:

- ``"record"`` (the default): write an effect file (below) and return.
- ``"sleep"``: sleep ``payload["seconds"]``, then record.
- ``"sigkill-first"``: the first attempt writes the ``killed`` flag (the time) and SIGKILLs its own
  process; later attempts record.
- ``"sigkill"``: every attempt SIGKILLs its own process (a poison job).
- ``"wait-cancel"``: write the ``running`` flag, wait up to ``payload["seconds"]`` for
  ``job_context().cancelled``, and once it is set write the ``cancelled`` flag (the time).
- ``"progress"``: report ``payload["fraction"]`` with ``payload["note"]``, write the ``reported``
  flag (the time), then wait as ``"wait-cancel"`` does.
- ``"return"``: record, then return ``payload["value"]`` (the job's result).

Effect files are ``<key>.<attempt>.<pid>.<random>.json`` in ``dir``, holding the job id, queue,
attempt, pid, start and end time (``time.time()``; the parent compares it with its own clock: one host);
``<key>`` is the job id in hex, so any id makes a file name. Every file is written to a temporary
name and renamed, so a reader sees it whole or not at all.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..app import new
from ..context import job_context
from ..job import Job
from .processes import STOP_SECONDS, job_key, make_handler, write_atomically

__all__ = ["main"]


def _handler(directory: Path) -> Callable[[Job], Any]:
    def handle(job: Job) -> Any:
        started = time.time()
        payload, key = job.payload, job_key(str(job.id))
        action = payload.get("action", "record")
        if action == "sigkill" or (action == "sigkill-first" and job.attempts == 1):
            if action == "sigkill-first":
                write_atomically(directory / f"{key}.killed", repr(time.time()))
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == "sleep":
            time.sleep(float(payload["seconds"]))
        elif action in ("wait-cancel", "progress"):
            context = job_context()
            assert context is not None
            if action == "progress":
                context.progress(payload["fraction"], payload.get("note"))
                write_atomically(directory / f"{key}.reported", repr(time.time()))
            write_atomically(directory / f"{key}.running", repr(started))
            if context.cancelled.wait(float(payload.get("seconds", 30))):
                write_atomically(directory / f"{key}.cancelled", repr(time.time()))
            return
        effect = {"job": job.id, "queue": job.queue, "attempt": job.attempts, "pid": os.getpid(), "started": started}
        effect["ended"] = time.time()
        name = f"{key}.{job.attempts}.{os.getpid()}.{uuid.uuid4().hex[:8]}.json"
        write_atomically(directory / name, json.dumps(effect))
        return payload.get("value") if action == "return" else None

    return handle


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - runs in a child process
    """Serve the spec's queues and schedules until SIGTERM."""
    spec = json.loads((sys.argv[1:] if argv is None else argv)[0])
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(process)d %(name)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    client = new(spec["url"], **spec.get("client", {}))
    handle = _handler(Path(spec["dir"]))
    for queue, settings in spec.get("queues", {}).items():
        client.start(queue, make_handler(handle, settings))
    for entry in spec.get("cron", []):
        settings = dict(entry)
        cron_spec, queue = settings.pop("spec"), settings.pop("queue")
        client.start_cron(cron_spec, make_handler(handle, settings), queue=queue)
    write_atomically(Path(spec["ready"]), str(os.getpid()))
    while not stop.wait(0.5):
        pass
    client.shutdown(timeout=STOP_SECONDS)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
