"""In-process subjects: neoq on memory://, huey's MemoryHuey, and the minimal loops.

Every ``process`` and ``pickup`` starts its workers inside the timed or measured span the same
way: workers are started after the jobs are queued (process) or before (pickup, then left idle
for ``IDLE_BEFORE_PICKUP``).
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .harness import CONCURRENCY, IDLE_BEFORE_PICKUP, QUEUE, Countdown, Latencies, paced

TIMEOUT = 600.0


class NeoqMemory:
    """neoq on the in-memory backend, through the public API only."""

    label = "neoq memory"

    def __init__(self, url: str = "memory://", **options: Any) -> None:
        import neoq

        self._neoq = neoq
        self._url = url
        self._options = options
        self._client: Any = None

    def reset(self) -> None:
        self.close()
        # retention off: nothing prunes while it is measured
        self._client = self._neoq.new(
            self._url, retention_processed=None, retention_failed=None, **self._options
        )

    def close(self) -> None:
        if self._client is not None:
            self._client.shutdown()
            self._client = None

    def enqueue(self, n: int) -> float:
        Job, enqueue = self._neoq.Job, self._client.enqueue
        start = time.perf_counter()
        for i in range(n):
            enqueue(Job(queue=QUEUE, payload={"i": i}))
        return time.perf_counter() - start

    def enqueue_many(self, n: int) -> float:
        Job = self._neoq.Job
        start = time.perf_counter()
        self._client.enqueue_many([Job(queue=QUEUE, payload={"i": i}) for i in range(n)])
        return time.perf_counter() - start

    def process(self, n: int) -> float:
        Job = self._neoq.Job
        self._client.enqueue_many([Job(queue=QUEUE, payload={"i": i}) for i in range(n)])
        done = Countdown(n)

        def handler(job: Any) -> None:
            done.tick()

        start = time.perf_counter()
        self._client.start(QUEUE, handler, concurrency=CONCURRENCY)
        return self.wait_all_done(done, n) - start

    def wait_all_done(self, done: Countdown, n: int) -> float:
        return done.wait(TIMEOUT)

    def pickup(self, n: int, rate: float) -> list[float]:
        Job = self._neoq.Job
        latencies = Latencies(n)

        def handler(job: Any) -> None:
            latencies.record(job.payload["t"])

        self._client.start(QUEUE, handler, concurrency=CONCURRENCY)
        time.sleep(IDLE_BEFORE_PICKUP)
        enqueue = self._client.enqueue
        for i in paced(n, rate):
            enqueue(Job(queue=QUEUE, payload={"i": i, "t": time.perf_counter()}))
        return latencies.wait(TIMEOUT)


class MinQueue:
    """A ``queue.Queue`` read by 10 threads: the floor of in-process job passing."""

    label = "min queue.Queue"

    def reset(self) -> None:
        self._queue: queue.Queue[Any] = queue.Queue()

    def close(self) -> None:
        pass

    def _start_readers(self, handle: Any) -> list[threading.Thread]:
        def read() -> None:
            get = self._queue.get
            while True:
                item = get()
                if item is None:
                    return
                handle(item)

        threads = [threading.Thread(target=read, daemon=True) for _ in range(CONCURRENCY)]
        for thread in threads:
            thread.start()
        return threads

    def _stop_readers(self, threads: list[threading.Thread]) -> None:
        for _ in threads:
            self._queue.put(None)
        for thread in threads:
            thread.join()

    def enqueue(self, n: int) -> float:
        put = self._queue.put
        start = time.perf_counter()
        for i in range(n):
            put({"i": i})
        return time.perf_counter() - start

    def process(self, n: int) -> float:
        for i in range(n):
            self._queue.put({"i": i})
        done = Countdown(n)
        start = time.perf_counter()
        threads = self._start_readers(lambda item: done.tick())
        finished = done.wait(TIMEOUT)
        self._stop_readers(threads)
        return finished - start

    def pickup(self, n: int, rate: float) -> list[float]:
        latencies = Latencies(n)
        threads = self._start_readers(lambda item: latencies.record(item["t"]))
        time.sleep(IDLE_BEFORE_PICKUP)
        for i in paced(n, rate):
            self._queue.put({"i": i, "t": time.perf_counter()})
        result = latencies.wait(TIMEOUT)
        self._stop_readers(threads)
        return result


class MinExecutor:
    """Each job submitted on its own to a ``ThreadPoolExecutor`` of 10 threads."""

    label = "min ThreadPoolExecutor.submit"

    def reset(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=CONCURRENCY)
        # start its threads before anything is measured
        for future in [self._pool.submit(time.sleep, 0.01) for _ in range(CONCURRENCY)]:
            future.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def process(self, n: int) -> float:
        jobs = [{"i": i} for i in range(n)]
        done = Countdown(n)

        def handle(item: Any) -> None:
            done.tick()

        submit = self._pool.submit
        start = time.perf_counter()
        for item in jobs:
            submit(handle, item)
        finished = done.wait(TIMEOUT)
        self.close()
        return finished - start

    def pickup(self, n: int, rate: float) -> list[float]:
        latencies = Latencies(n)

        def handle(item: Any) -> None:
            latencies.record(item["t"])

        time.sleep(IDLE_BEFORE_PICKUP)
        for i in paced(n, rate):
            self._pool.submit(handle, {"i": i, "t": time.perf_counter()})
        result = latencies.wait(TIMEOUT)
        self.close()
        return result


class HueyMemory:
    """huey 2/3 with its in-memory storage (``MemoryHuey``) and a consumer of 10 worker threads.

    Results are off (``results=False``), so huey stores nothing per task beyond the queue.
    The consumer keeps huey's defaults otherwise (polling from 0.1 s with 1.15x backoff).
    """

    label = "huey MemoryHuey"

    def reset(self) -> None:
        from huey import MemoryHuey

        self._huey = MemoryHuey("bench", results=False, utc=True)
        self._handle: Any = lambda i, t: None

        @self._huey.task(name="noop")
        def noop(i: int, t: float | None = None) -> None:
            self._handle(i, t)

        self._task = noop
        self._consumer: Any = None

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.stop(graceful=True)
            self._consumer = None

    def _start_consumer(self) -> None:
        import logging

        logging.getLogger("huey").setLevel(logging.WARNING)
        self._consumer = self._huey.create_consumer(workers=CONCURRENCY, worker_type="thread")
        self._consumer.start()

    def enqueue(self, n: int) -> float:
        task = self._task
        start = time.perf_counter()
        for i in range(n):
            task(i)
        return time.perf_counter() - start

    def enqueue_many(self, n: int) -> float:
        # huey's batch call: Task.map enqueues each argument (one storage write per task).
        start = time.perf_counter()
        self._task.map(range(n))
        return time.perf_counter() - start

    def process(self, n: int) -> float:
        self._task.map(range(n))
        done = Countdown(n)
        self._handle = lambda i, t: done.tick()
        start = time.perf_counter()
        self._start_consumer()
        finished = done.wait(TIMEOUT)
        self.close()
        return finished - start

    def pickup(self, n: int, rate: float) -> list[float]:
        latencies = Latencies(n)
        self._handle = lambda i, t: latencies.record(t)
        self._start_consumer()
        time.sleep(IDLE_BEFORE_PICKUP)
        task = self._task
        for i in paced(n, rate):
            task(i, t=time.perf_counter())
        result = latencies.wait(TIMEOUT)
        self.close()
        return result
