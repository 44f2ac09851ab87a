"""The neoq demo: a worker on the in-memory backend, printing what happens.

Run it with `make demo`. It enqueues a few jobs, one that fails once and is retried, and one
for the future, processes them in background threads, prints each event, and exits.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

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
    say("shut down cleanly")


if __name__ == "__main__":
    main()
