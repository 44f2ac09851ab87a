"""A worker application for the ``neoq worker`` tests, driven by environment variables.

``neoq worker cli_app:nq`` (or ``cli_app:make`` for a fresh client per call):

- ``CLI_APP_SHUTDOWN``: the client's ``shutdown_timeout`` in seconds (default 5).
- ``CLI_APP_JOBS``: a JSON list of payloads enqueued on queue ``work`` at import (the memory
  store is private to the worker process, so its jobs must come from inside it).

The ``work`` handler prints ``started ID``, then waits ``payload["sleep"]`` seconds, ending early
when the attempt is cancelled (``cancelled ID`` is printed then) unless ``payload["stubborn"]``;
then it prints ``finished ID``. Lines are flushed at once so a test can follow them.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import neoq

_out = threading.Lock()


def _say(*words: object) -> None:
    # One write per line under a lock: handler threads must not interleave their lines.
    with _out:
        sys.stdout.write(" ".join(map(str, words)) + "\n")
        sys.stdout.flush()


def work(job: neoq.Job) -> None:
    """Sleep as the payload says, reporting progress on stdout."""
    _say("started", job.id)
    seconds = float(job.payload.get("sleep", 0))
    context = neoq.job_context()
    assert context is not None
    if job.payload.get("stubborn"):
        time.sleep(seconds)
    elif context.cancelled.wait(seconds):
        _say("cancelled", job.id)
        return
    if job.payload.get("fail"):
        raise RuntimeError("asked to fail")
    _say("finished", job.id)


clients: list[neoq.Neoq] = []


def make() -> neoq.Neoq:
    """Return a new client with the ``work`` handler, enqueuing ``CLI_APP_JOBS``."""
    client = neoq.new(shutdown_timeout=float(os.environ.get("CLI_APP_SHUTDOWN", "5")))
    client.handler("work", concurrency=2, timeout=60)(work)
    client.handler("other")(work)
    for payload in json.loads(os.environ.get("CLI_APP_JOBS", "[]")):
        client.enqueue(neoq.Job(queue="work", payload=payload))
    clients.append(client)
    return client


#: A client made at import only when running as a worker subprocess (``CLI_APP_EAGER=1``).
nq = make() if os.environ.get("CLI_APP_EAGER") == "1" else None
