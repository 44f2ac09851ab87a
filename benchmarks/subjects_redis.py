"""The Redis subjects: neoq on redis://, huey's RedisHuey and a minimal redis-py loop (the floor),
in process; and rq and Celery, each run the way its documentation shows, on one Redis database.

Both run their workers as separate processes started from their own command line (``rq worker``,
``rq worker-pool``, ``celery worker``), so a job cannot tick an in-process counter when it ends;
instead each handler reports back through Redis, one pipelined round trip per job inside the
figure: ``INCR`` of a counter (and the time of the first start and of the last end, as
``time.perf_counter()`` readings: CLOCK_MONOTONIC, the same clock in every process on Linux), or
for pickup an ``RPUSH`` of its latency.

``process`` is timed from the first job's handler start to the last job's end, so the worker
process's own start (a fresh interpreter importing rq or Celery, about a second) is left out; the
in-process subjects start their threads inside the timed span, which costs them microseconds.

Everything uses ``redis://127.0.0.1:6379/11`` (``BENCH_REDIS_URL`` to change it); ``reset()``
empties that database only (``FLUSHDB``). Installed only in the ``make bench-peers`` virtualenv.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .harness import CONCURRENCY, IDLE_BEFORE_PICKUP, QUEUE, Countdown, Latencies, paced
from .subjects_memory import TIMEOUT, HueyMemory, NeoqMemory

#: A database of its own on the local Redis: the benchmarks flush this one and no other.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/11"

ROOT = Path(__file__).parent.parent
DONE, FIRST, LAST, LATENCIES = "neoq-bench:done", "neoq-bench:first", "neoq-bench:last", "neoq-bench:latencies"


def redis_url() -> str:
    return os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL)


def _report(conn: Any, started: float, n: int | None, t: float | None) -> None:
    """Called by every handler: record the pickup latency, or count the job and the span."""
    if t is not None:
        conn.rpush(LATENCIES, started - t)
        return
    pipe = conn.pipeline(transaction=False)
    pipe.setnx(FIRST, repr(started))
    pipe.incr(DONE)
    count = pipe.execute()[1]
    if n is not None and count >= n:
        conn.set(LAST, repr(time.perf_counter()))


# -- rq ----------------------------------------------------------------------------------------


def rq_noop(i: int, n: int | None = None, t: float | None = None) -> None:
    """The rq job: a no-op that reports through the connection rq's worker already has."""
    started = time.perf_counter()
    from rq import get_current_job

    job = get_current_job()
    assert job is not None
    _report(job.connection, started, n, t)


# -- Celery ------------------------------------------------------------------------------------


def _celery_app() -> Any:
    from celery import Celery

    app = Celery("neoq_bench", broker=redis_url(), set_as_current=False)
    # no result backend: results are neither stored nor waited for
    app.conf.update(task_ignore_result=True, result_backend=None, worker_hijack_root_logger=False)
    return app


celery_app: Any = None
celery_noop: Any = None
_celery_redis: Any = None

try:  # only in the .venv-bench virtualenv; the worker imports this module by name
    celery_app = _celery_app()

    @celery_app.task(name="noop", queue=QUEUE)  # type: ignore[untyped-decorator]
    def celery_noop(i: int, n: int | None = None, t: float | None = None) -> None:
        global _celery_redis
        started = time.perf_counter()
        if _celery_redis is None:  # one client (a thread-safe pool) per worker process
            import redis

            _celery_redis = redis.Redis.from_url(redis_url())
        _report(_celery_redis, started, n, t)

except ImportError:
    pass


# -- the subjects ------------------------------------------------------------------------------


class _RedisSubject:
    """What rq and Celery share: the database, the worker process, the reports."""

    label = "redis"
    #: the worker's command line, without the Python interpreter
    worker_command: list[str] = []

    def __init__(self) -> None:
        import redis

        self._redis = redis.Redis.from_url(redis_url())
        self._redis.ping()
        self._worker: subprocess.Popen[bytes] | None = None

    def reset(self) -> None:
        self._stop_worker()
        self._redis.flushdb()  # this database only

    def close(self) -> None:
        self._stop_worker()
        self._redis.flushdb()

    def _start_worker(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_REDIS_URL": redis_url()}
        self._worker = subprocess.Popen(
            [sys.executable, "-m", *self.worker_command],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: the pool's children stop with it
        )

    def _stop_worker(self) -> None:
        worker, self._worker = self._worker, None
        if worker is None:
            return
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)  # the group this subject started
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
        if worker.stderr is not None:
            worker.stderr.close()

    def _check_worker(self) -> None:
        if self._worker is not None and self._worker.poll() is not None:
            err = self._worker.stderr.read().decode(errors="replace") if self._worker.stderr else ""
            raise RuntimeError(f"the worker exited ({self._worker.returncode}): {err.strip()[-500:]}")

    def _submit(self, i: int, n: int | None = None, t: float | None = None) -> None:
        raise NotImplementedError

    def _submit_all(self, n: int) -> None:
        for i in range(n):
            self._submit(i, n=n)

    def enqueue(self, n: int) -> float:
        submit = self._submit
        start = time.perf_counter()
        for i in range(n):
            submit(i)
        return time.perf_counter() - start

    def process(self, n: int) -> float:
        self._submit_all(n)
        self._start_worker()
        end = time.monotonic() + TIMEOUT
        while True:
            last = self._redis.get(LAST)
            if last is not None:
                first = self._redis.get(FIRST)
                assert first is not None
                return float(last) - float(first)
            self._check_worker()
            if time.monotonic() > end:
                raise TimeoutError(f"only {self._redis.get(DONE)} of {n} jobs finished")
            time.sleep(0.005)

    def pickup(self, n: int, rate: float) -> list[float]:
        self._start_worker()
        self._wait_ready()
        time.sleep(IDLE_BEFORE_PICKUP)
        submit = self._submit
        for i in paced(n, rate):
            submit(i, t=time.perf_counter())
        end = time.monotonic() + TIMEOUT
        while self._redis.llen(LATENCIES) < n:
            self._check_worker()
            if time.monotonic() > end:
                raise TimeoutError(f"only {self._redis.llen(LATENCIES)} of {n} pickups")
            time.sleep(0.01)
        return [float(v) for v in self._redis.lrange(LATENCIES, 0, -1)]

    def _wait_ready(self) -> None:
        """Wait until the worker took a first job: it is started and listening."""
        self._submit(-1)
        end = time.monotonic() + 120
        while self._redis.get(DONE) is None:
            self._check_worker()
            if time.monotonic() > end:
                raise TimeoutError("the worker did not start")
            time.sleep(0.01)


class _Rq(_RedisSubject):
    def __init__(self) -> None:
        super().__init__()
        from rq import Queue

        self._queue = Queue(QUEUE, connection=self._redis)
        self._enqueue = self._queue.enqueue

    def _submit(self, i: int, n: int | None = None, t: float | None = None) -> None:
        self._enqueue(rq_noop, i, n=n, t=t)

    @property
    def worker_command(self) -> list[str]:  # type: ignore[override]
        return ["rq.cli", *self.rq_args, "--url", redis_url(), QUEUE]

    rq_args: list[str] = []


class RqFork(_Rq):
    """rq's default ``Worker``: one process, a forked work-horse per job (one job at a time)."""

    rq_args = ["worker", "--quiet", "--logging_level", "WARNING"]


class RqSimple(_Rq):
    """rq's ``SimpleWorker``: one process, each job run in the worker itself (one at a time)."""

    rq_args = ["worker", "--quiet", "--logging_level", "WARNING", "--worker-class", "rq.worker.SimpleWorker"]


class RqPool(_Rq):
    """``rq worker-pool -n 10``: ten of rq's default fork-per-job workers (concurrency 10)."""

    rq_args = ["worker-pool", "--quiet", "--logging-level", "WARNING", "--num-workers", str(CONCURRENCY)]


class Celery(_RedisSubject):
    """Celery with the Redis transport, no result backend; ``celery worker -P threads -c 10``."""

    worker_command = [
        "celery",
        "-A",
        "benchmarks.subjects_redis:celery_app",
        "worker",
        "--pool",
        "threads",
        "--concurrency",
        str(CONCURRENCY),
        "--queues",
        QUEUE,
        "--loglevel",
        "WARNING",
    ]

    def __init__(self) -> None:
        super().__init__()
        assert celery_noop is not None, "celery is not installed"
        self._delay = celery_noop.delay

    def _submit(self, i: int, n: int | None = None, t: float | None = None) -> None:
        self._delay(i, n=n, t=t)


# -- neoq on Redis, huey on Redis, and the floor ------------------------------------------------


class NeoqRedis(NeoqMemory):
    """neoq on its Redis backend, default settings (30 s leases, pub/sub wake-ups), in process."""

    label = "neoq redis"

    def __init__(self) -> None:
        super().__init__(f"{redis_url()}?prefix=neoq-bench:", check_config=False)
        import redis

        self._redis = redis.Redis.from_url(redis_url())

    def reset(self) -> None:
        self.close()
        self._redis.flushdb()  # this database only
        super().reset()

    def close(self) -> None:
        super().close()

    def wait_all_done(self, done: Countdown, n: int) -> float:
        # The last handler returned; the job is done once its PROCESSED outcome is written.
        done.wait(TIMEOUT)
        end = time.monotonic() + TIMEOUT
        while time.monotonic() < end:
            if self._client.stats().get(QUEUE, {}).get("processed", 0) >= n:
                return time.perf_counter()
            time.sleep(0.002)
        raise TimeoutError("jobs ran but were not all recorded as processed")


class HueyRedis(HueyMemory):
    """huey with ``RedisHuey`` (blocking reads, results off) and a consumer of 10 worker threads."""

    label = "huey RedisHuey"

    def reset(self) -> None:
        import redis
        from huey import RedisHuey

        redis.Redis.from_url(redis_url()).flushdb()  # this database only
        self._huey = RedisHuey("bench", results=False, utc=True, url=redis_url())
        self._handle: Any = lambda i, t: None

        @self._huey.task(name="noop")
        def noop(i: int, t: float | None = None) -> None:
            self._handle(i, t)

        self._task = noop
        self._consumer: Any = None


_MIN_QUEUE, _MIN_RUNNING = "min-bench:queue", "min-bench:running"


class MinRedis:
    """The floor: a JSON message per job on a Redis list; ten threads claim with ``LMOVE`` (into a
    processing list, as a reliable queue does) and acknowledge with ``LREM``, one round trip each;
    ``BLMOVE`` when waiting (pickup)."""

    label = "min redis LMOVE"

    def __init__(self) -> None:
        import redis

        self._redis = redis.Redis.from_url(redis_url())
        self._redis.ping()

    def reset(self) -> None:
        self._redis.flushdb()  # this database only

    def close(self) -> None:
        self._redis.flushdb()
        self._redis.close()

    def enqueue(self, n: int) -> float:
        push = self._redis.lpush
        dumps = json.dumps
        start = time.perf_counter()
        for i in range(n):
            push(_MIN_QUEUE, dumps({"i": i}))
        return time.perf_counter() - start

    def enqueue_many(self, n: int) -> float:
        dumps = json.dumps
        start = time.perf_counter()
        self._redis.lpush(_MIN_QUEUE, *[dumps({"i": i}) for i in range(n)])
        return time.perf_counter() - start

    def _loops(self, handle: Any, block: bool) -> tuple[list[threading.Thread], threading.Event]:
        stop = threading.Event()
        conn = self._redis

        def loop() -> None:
            loads = json.loads
            while not stop.is_set():
                if block:
                    raw = conn.blmove(_MIN_QUEUE, _MIN_RUNNING, 0.2, "RIGHT", "LEFT")
                else:
                    raw = conn.lmove(_MIN_QUEUE, _MIN_RUNNING, "RIGHT", "LEFT")
                if raw is None:
                    if block:
                        continue
                    return
                handle(loads(raw))
                conn.lrem(_MIN_RUNNING, 1, raw)

        threads = [threading.Thread(target=loop, daemon=True) for _ in range(CONCURRENCY)]
        for thread in threads:
            thread.start()
        return threads, stop

    def process(self, n: int) -> float:
        self._redis.lpush(_MIN_QUEUE, *[json.dumps({"i": i}) for i in range(n)])
        done = Countdown(n)
        start = time.perf_counter()
        threads, stop = self._loops(lambda item: done.tick(), block=False)
        finished = done.wait(TIMEOUT)
        stop.set()
        for thread in threads:
            thread.join()
        return finished - start

    def pickup(self, n: int, rate: float) -> list[float]:
        latencies = Latencies(n)
        threads, stop = self._loops(lambda item: latencies.record(item["t"]), block=True)
        time.sleep(IDLE_BEFORE_PICKUP)
        push = self._redis.lpush
        for i in paced(n, rate):
            push(_MIN_QUEUE, json.dumps({"i": i, "t": time.perf_counter()}))
        result = latencies.wait(TIMEOUT)
        stop.set()
        for thread in threads:
            thread.join()
        return result
