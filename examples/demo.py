"""The neoq demo: a worker on the in-memory backend, printing what happens; then the durable next step.

Run it with `make demo`. It enqueues a few jobs, one that fails once and is retried, and one
for the future, processes them in background threads, prints each event. Then it does the same
kind of thing on a SQLite file (stdlib only, in a temporary folder): a job stored by one client
that shut down is found and run by the next one, as a worker process would after a restart.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import neoq
from neoq import Handler, Job

log = logging.getLogger("demo")


def say(message: str) -> None:
    log.info("%s", message)


def greet(job: Job) -> None:
    say(f"greetings: hello, {job.payload['name']}! (job {job.id}, thread {threading.current_thread().name})")


def charge(job: Job) -> None:
    if job.retries == 0:
        say(f"payments: charging order {job.payload['order']} failed: the card service timed out")
        raise ConnectionError("card service timed out")
    say(f"payments: charged order {job.payload['order']} on retry {job.retries}")


def remind(job: Job) -> None:
    say(f"reminders: {job.payload['text']} (asked for {job.run_after:%H:%M:%S.%f}"[:-3] + ")")


def main() -> None:
    # neoq logs one line per job outcome: INFO processed/cancelled, WARNING retry, ERROR failed.
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="[%(relativeCreated)6.0fms] %(message)s")
    with neoq.new("memory://") as nq:
        nq.on("enqueued", lambda event: say(f"neoq: enqueued job {event.job.id} on {event.job.queue!r}"))

        nq.start("greetings", greet, concurrency=2)
        nq.start("payments", Handler(charge, max_retries=3, backoff=lambda retries: 0.5))
        nq.start("reminders", remind)

        for name in ("Ada", "Grace", "Linus"):
            nq.enqueue(Job(queue="greetings", payload={"name": name}))
        nq.enqueue(Job(queue="payments", payload={"order": 1042}))
        when = datetime.now(timezone.utc) + timedelta(seconds=1)
        nq.enqueue(Job(queue="reminders", payload={"text": "one second later"}, run_after=when))
        try:
            nq.enqueue(Job(queue="greetings", payload={"name": "Ada"}))
        except neoq.DuplicateJobError as exc:
            say(f"neoq: refused a duplicate of job {exc.job_id} while it is still new")

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            stats = nq.stats()
            if all(counts["new"] == 0 for counts in stats.values()):
                break
            time.sleep(0.05)
        for queue, counts in sorted(nq.stats().items()):
            say(f"stats {queue:<10} {counts}")
    say("shut down cleanly: memory:// jobs end with the process")
    durable_next_step()


def durable_next_step() -> None:
    """The same jobs in a SQLite file: they outlive the client that stored them."""
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'jobs.db'}"
        with neoq.new(url) as nq:
            job_id = nq.enqueue(Job(queue="greetings", payload={"name": "Margaret"}))
            say(f"sqlite: stored job {job_id} in jobs.db, then shut down before running it")
        with neoq.new(url) as nq:  # a restart, or another process on this host
            say(f"sqlite: a new client opened jobs.db and found {nq.stats()['greetings']['new']} job waiting")
            nq.start("greetings", greet)
            deadline = time.monotonic() + 10
            while nq.get_job(job_id).status is not neoq.JobStatus.PROCESSED and time.monotonic() < deadline:
                time.sleep(0.02)
            say(f"sqlite: job {job_id} is {nq.get_job(job_id).status.value}; use sqlite:///jobs.db to keep jobs")


if __name__ == "__main__":
    main()
