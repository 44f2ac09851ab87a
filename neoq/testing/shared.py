"""The shared-store suite: what a store that several processes share must guarantee.

``neoq.testing.BackendSuite`` checks a backend through one client. ``SharedStoreSuite`` checks
what only several processes on one store can show: jobs run once each by several worker
processes, a job whose worker is SIGKILLed runs again with the attempt counted, a poison job ends
``FAILED`` after ``max_retries + 1`` attempts, each cron tick is enqueued once across three
processes, a cancel reaches a handler in another process, a handler's progress and result are
seen from another process, and another process picks a job up quickly. More tests are gated by
capability: ``"enqueue_in_transaction"``, ``"transaction"``, and flow control's
(``neoq.testing.flowshared``). It speaks only through the public API and a URL, so any backend
can run it::

    import pytest
    from neoq.testing import SharedStoreSuite

    class TestMyStoreShared(SharedStoreSuite):
        capabilities = frozenset({"shared"})       # what the store offers (see below)

        @pytest.fixture
        def store_url(self) -> str:
            return "mystore://localhost/neoq_test"  # a store the test may fill

The worker processes are ``python -m neoq.testing.worker`` children (what each job does is in
its payload), so the backend must be reachable from a new interpreter by its URL alone:
registered with neoq and importable. Each test uses queues of its own, so ``store_url`` may
return one store per test or one per class.

Hooks a subclass may override: ``client_options()`` (keyword options of ``neoq.new()``, in the
test process and in every child, e.g. a lease duration), ``handler_options()`` (``Handler``
settings for every queue the suite serves, e.g. ``{"mode": "lease"}``), ``connect(url)`` (a new
DB-API connection to the store, for the capability-gated tests); and the timing bounds
``pickup_median_limit`` and ``rerun_limit``.

``capabilities`` says what the store offers: ``None`` (the
default) reads ``nq.backend.capabilities``; a set narrows it (a handler mode may use less of the
store: PostgreSQL's lease mode gives handlers no transaction). A test whose capability is missing
is skipped with the reason, so a store without ``"shared"``, like ``memory://`` (each client its
own private store), runs none of the cross-process tests: there is nothing to share.
"""

from __future__ import annotations

import signal
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import pytest

from ..app import Neoq, new
from ..context import job_context
from ..job import Job, JobStatus
from .flowshared import FlowSharedTests
from .processes import WorkerPool, WorkerProcess, make_handler, wait_until

__all__ = ["SharedStoreSuite"]

#: How long the suite waits for what takes a worker process a moment: starting, recovering a job.
#: Generous, as the suite runs on small shared machines; the tests that time something say so.
PATIENCE = 30.0

#: The table the ``"transaction"`` test writes through the handler's transaction.
WRITES_TABLE = "neoq_suite_writes"


def _queue(purpose: str) -> str:
    return f"shared-{purpose}-{uuid.uuid4().hex[:10]}"


def _placeholder(connection: Any) -> tuple[str, bool]:
    """The driver's parameter marker for one value named ``tag``, and whether it takes a mapping."""
    module = sys.modules.get(type(connection).__module__.partition(".")[0])
    style = getattr(module, "paramstyle", "format")
    return {
        "qmark": ("?", False),
        "numeric": (":1", False),
        "named": (":tag", True),
        "format": ("%s", False),
        "pyformat": ("%(tag)s", True),
    }[style]


def _execute(connection: Any, sql: str, tag: str | None = None) -> list[Any]:
    """Run ``sql`` (``{}`` marks where ``tag`` goes, as a bound parameter) and return its rows."""
    marker, named = _placeholder(connection)
    cursor = connection.cursor()
    try:
        if tag is None:
            cursor.execute(sql)
        else:
            cursor.execute(sql.format(marker), {"tag": tag} if named else (tag,))
        return list(cursor.fetchall()) if cursor.description is not None else []
    finally:
        cursor.close()


class SharedStoreSuite(FlowSharedTests):
    """What a store shared by several processes must guarantee. Subclass it; give ``store_url``."""

    #: What the store offers (``"shared"``, ``"transaction"``, ``"enqueue_in_transaction"``, ...);
    #: ``None`` reads ``nq.backend.capabilities``.
    capabilities: ClassVar[frozenset[str] | None] = None
    #: The bound on the median delay from enqueue (here) to the start of the job (in a worker process).
    pickup_median_limit: ClassVar[float] = 0.2
    #: The bound on the delay from a worker's SIGKILL to the start of the job's next attempt elsewhere
    #: (a lease-based store needs its lease to run out first: give it a short one in ``client_options``).
    rerun_limit: ClassVar[float] = PATIENCE

    @pytest.fixture
    def store_url(self) -> str:  # pragma: no cover - subclasses provide it
        raise NotImplementedError("subclass SharedStoreSuite and define a `store_url` fixture")

    def client_options(self) -> dict[str, Any]:
        """Keyword options of ``neoq.new()`` for every client of the suite (JSON values)."""
        return {}

    def handler_options(self) -> dict[str, Any]:
        """``Handler`` settings for every queue the suite serves (JSON values; ``backoff`` in seconds).

        A test's own settings (its concurrency, say) win over these.
        """
        return {}

    def connect(self, url: str) -> Any:  # pragma: no cover - subclasses with a transaction capability
        """A new DB-API connection to the store at ``url``, outside autocommit (capability-gated tests)."""
        raise NotImplementedError("a store with 'transaction' or 'enqueue_in_transaction' must define connect(url)")

    @pytest.fixture
    def nq(self, store_url: str) -> Iterator[Neoq]:
        client = new(store_url, shutdown_timeout=5, **self.client_options())
        try:
            yield client
        finally:
            client.shutdown(timeout=5)

    @pytest.fixture
    def workers(self, store_url: str, tmp_path: Path) -> Iterator[WorkerPool]:
        pool = WorkerPool(store_url, tmp_path, self.client_options(), self.handler_options())
        try:
            yield pool
        finally:
            pool.close()

    def require(self, nq: Neoq, capability: str) -> None:
        """Skip the test unless the store offers ``capability``."""
        offered = nq.backend.capabilities
        declared = type(self).capabilities
        if declared is not None and not declared <= offered:
            raise AssertionError(f"the suite declares {sorted(declared - offered)}, which the backend does not offer")
        available = declared if declared is not None else offered
        if capability not in available:
            pytest.skip(f"the store does not offer {capability!r}")

    def wait_status(
        self, nq: Neoq, job_id: str, status: JobStatus, timeout: float = PATIENCE, pool: WorkerPool | None = None
    ) -> Job:
        """Return the job once it has ``status``; after ``timeout``, fail showing ``pool``'s processes."""

        def reached() -> Job | None:
            job = nq.get_job(job_id)
            return job if job is not None and job.status is status else None

        found: Job = wait_until(reached, timeout, f"job {job_id} is {status.value}", pool=pool)
        return found

    # -- several processes -------------------------------------------------------------

    def test_several_processes_run_each_job_once(self, nq: Neoq, workers: WorkerPool) -> None:
        self.require(nq, "shared")
        queue, count = _queue("many"), 300
        processes = [workers.start({queue: {"concurrency": 4}}, wait=False) for _ in range(3)]
        workers.wait_ready(processes)
        began = time.monotonic()
        ids = nq.enqueue_many(
            [Job(queue=queue, payload={"n": n, "action": "sleep", "seconds": 0.005}) for n in range(count)]
        )
        workers.wait(
            lambda: nq.stats().get(queue, {}).get("processed") == count, 2 * PATIENCE, f"{count} jobs processed", 0.05
        )
        elapsed = time.monotonic() - began
        effects = workers.effects()
        runs = Counter(effect["job"] for effect in effects)
        assert sorted(runs) == sorted(ids), "a job ran that was not enqueued, or one never ran"
        assert set(runs.values()) == {1}, f"jobs ran twice: {[job for job, n in runs.items() if n > 1]}"
        jobs = nq.list_jobs(queue=queue, limit=count + 1)
        assert len(jobs) == count
        assert all(job.status is JobStatus.PROCESSED and job.attempts == 1 for job in jobs)
        shares = Counter(effect["pid"] for effect in effects)
        print(f"\n{count} jobs, 3 processes: {elapsed:.2f}s; jobs per process {sorted(shares.values())}")
        assert set(shares) <= {process.pid for process in processes}
        assert len(shares) >= 2, "one process ran every job: the work was not shared"

    def test_a_job_that_kills_its_worker_runs_again_elsewhere(self, nq: Neoq, workers: WorkerPool) -> None:
        self.require(nq, "shared")
        queue = _queue("killed")
        processes = [workers.start({queue: {"concurrency": 1}}, wait=False) for _ in range(2)]
        workers.wait_ready(processes)
        job_id = nq.enqueue(Job(queue=queue, payload={"action": "sigkill-first"}))
        job = self.wait_status(nq, job_id, JobStatus.PROCESSED, pool=workers)
        dead = [process for process in processes if not process.alive()]
        assert len(dead) == 1, f"one worker should have died, not {dead}"
        assert dead[0].proc.returncode == -signal.SIGKILL, dead[0].output()
        (effect,) = workers.effects(job_id)
        assert effect["attempt"] == 2 and effect["pid"] != dead[0].pid
        assert job.attempts == 2 and job.error is None
        killed_at = float(workers.flag(job_id, "killed").read_text())
        delay = effect["started"] - killed_at
        print(f"\nrun again {delay:.3f}s after its worker was SIGKILLed (limit {self.rerun_limit:g}s)")
        assert delay < self.rerun_limit

    def test_a_poison_job_fails_after_max_retries_plus_one_attempts(self, nq: Neoq, workers: WorkerPool) -> None:
        self.require(nq, "shared")
        queue, max_retries = _queue("poison"), 1
        job_id = nq.enqueue(Job(queue=queue, payload={"action": "sigkill"}, max_retries=max_retries))
        # A worker may die before it says it is ready: start each without waiting.
        worker, deaths = workers.start({queue: {"concurrency": 1}}, wait=False), 0
        while True:
            workers.wait(
                partial(self._died_or_finished, worker, nq, job_id), PATIENCE, "the worker died or the job ended"
            )
            if self._died_or_finished(None, nq, job_id):
                break
            assert worker.proc.returncode == -signal.SIGKILL, worker.output()
            deaths += 1
            assert deaths <= max_retries + 1, f"the poison job ran {deaths} times"
            worker = workers.start({queue: {"concurrency": 1}}, wait=False)
        deaths += not worker.alive()
        job = nq.get_job(job_id)
        assert job is not None
        assert job.status is JobStatus.FAILED
        assert deaths == max_retries + 1
        assert job.error is not None and job.error.startswith("WorkerLostError"), job.error
        assert job.attempts >= max_retries + 1  # a store may count the claim that found the job lost
        assert workers.effects(job_id) == []

    @staticmethod
    def _died_or_finished(worker: WorkerProcess | None, nq: Neoq, job_id: str) -> bool:
        """Whether ``worker`` has exited, or the job has an outcome (it is no longer waiting or running)."""
        if worker is not None and not worker.alive():
            return True
        job = nq.get_job(job_id)
        return job is not None and job.status in (JobStatus.PROCESSED, JobStatus.FAILED, JobStatus.CANCELLED)

    # -- cron across processes ---------------------------------------------------------

    def test_each_cron_tick_is_enqueued_once_across_three_processes(self, nq: Neoq, workers: WorkerPool) -> None:
        self.require(nq, "shared")
        queue, seconds = _queue("cron"), 4
        schedule = [{"spec": "*/1 * * * * *", "queue": queue, "concurrency": 2}]
        began = time.monotonic()
        processes = [workers.start(cron=schedule, wait=False) for _ in range(3)]
        workers.wait_ready(processes)
        all_up, ready = datetime.now(timezone.utc), time.monotonic()

        def tick(job: Job) -> datetime:
            return datetime.fromisoformat(job.payload["scheduled_at"])

        def jobs() -> list[Job]:
            return sorted(nq.list_jobs(queue=queue, limit=100_000), key=tick)

        workers.wait(
            lambda: any(tick(job) >= all_up + timedelta(seconds=seconds) for job in jobs()),
            PATIENCE,
            f"the tick {seconds}s after every process was up is enqueued",
            0.05,
        )
        stopping = time.monotonic()
        workers.stop(processes)
        stopped = time.monotonic()
        found = jobs()
        ticks = [tick(job) for job in found]
        twice = sorted(t for t, n in Counter(ticks).items() if n > 1)
        assert not twice, f"ticks enqueued more than once: {twice}"
        expected = [ticks[0] + timedelta(seconds=n) for n in range(len(ticks))]
        assert ticks == expected, f"ticks skipped: {sorted(set(expected) - set(ticks))}"
        assert sum(t >= all_up for t in ticks) >= seconds
        runs = Counter(effect["job"] for effect in workers.effects())
        assert set(runs.values()) <= {1}, "a tick's job ran twice"
        assert {job.id for job in found if job.status is JobStatus.PROCESSED} == set(runs)
        print(
            f"\ncron across 3 processes: {len(ticks)} ticks, {len(runs)} ran before the processes stopped; "
            f"start {ready - began:.1f}s, run {stopping - ready:.1f}s, stop {stopped - stopping:.1f}s"
        )

    # -- managing from another process -------------------------------------------------

    def test_cancel_reaches_a_handler_in_another_process(self, nq: Neoq, workers: WorkerPool) -> None:
        self.require(nq, "shared")
        queue = _queue("cancel")
        workers.start({queue: {"concurrency": 1}})
        job_id = nq.enqueue(Job(queue=queue, payload={"action": "wait-cancel", "seconds": PATIENCE}))
        workers.wait(workers.flag(job_id, "running").exists, PATIENCE, "the handler runs")
        asked = time.time()
        nq.cancel_job(job_id)
        seen = workers.flag(job_id, "cancelled")
        workers.wait(seen.exists, 5, "the handler sees the cancel", 0.005)
        delay = float(seen.read_text()) - asked
        self.wait_status(nq, job_id, JobStatus.CANCELLED, pool=workers)
        print(f"\ncancel reached the handler in another process in {delay * 1000:.1f}ms")
        assert delay < 1.0

    def test_progress_is_seen_from_another_process_within_a_second(self, nq: Neoq, workers: WorkerPool) -> None:
        self.require(nq, "shared")
        queue = _queue("progress")
        workers.start({queue: {"concurrency": 1}})
        payload = {"action": "progress", "fraction": 0.5, "note": "half way", "seconds": PATIENCE}
        job_id = nq.enqueue(Job(queue=queue, payload=payload))
        reported = workers.flag(job_id, "reported")
        workers.wait(reported.exists, PATIENCE, "the handler reports its progress")

        def shown() -> Job | None:
            job = nq.get_job(job_id)
            return job if job is not None and job.progress == 0.5 else None

        job = workers.wait(shown, 5, "the progress is seen here", 0.005)
        delay = time.time() - float(reported.read_text())
        assert job.progress_note == "half way" and job.status is JobStatus.RUNNING
        print(f"\nprogress seen from another process within {delay * 1000:.1f}ms")
        assert delay < 1.0
        nq.cancel_job(job_id)
        job = self.wait_status(nq, job_id, JobStatus.CANCELLED, pool=workers)
        assert job.progress == 0.5, "the progress reported stays with the job"

    def test_result_is_seen_from_another_process(self, nq: Neoq, workers: WorkerPool) -> None:
        self.require(nq, "shared")
        queue = _queue("result")
        workers.start({queue: {"concurrency": 1}})
        value = {"total": 42, "items": ["a", "é", None], "ok": True, "ratio": 0.25}
        job_id = nq.enqueue(Job(queue=queue, payload={"action": "return", "value": value}))
        job = self.wait_status(nq, job_id, JobStatus.PROCESSED, pool=workers)
        assert job.result == value and job.error is None and job.traceback is None

    def test_another_process_picks_a_job_up_quickly(self, nq: Neoq, workers: WorkerPool) -> None:
        self.require(nq, "shared")
        queue = _queue("pickup")
        workers.start({queue: {"concurrency": 2}})
        warm = nq.enqueue(Job(queue=queue, payload={"warm": True}))  # connections and threads warm up
        self.wait_status(nq, warm, JobStatus.PROCESSED, pool=workers)
        latencies = []
        for n in range(20):
            sent = time.time()
            job_id = nq.enqueue(Job(queue=queue, payload={"n": n}))
            (effect,) = workers.wait(partial(workers.effects, job_id), PATIENCE, f"job {job_id} ran", 0.002)
            latencies.append(effect["started"] - sent)
        median = statistics.median(latencies)
        print(
            f"\npickup by another process: median {median * 1000:.1f}ms, max {max(latencies) * 1000:.1f}ms "
            f"(limit {self.pickup_median_limit * 1000:.0f}ms)"
        )
        assert median < self.pickup_median_limit

    # -- capability-gated --------------------------------------------------------------

    def test_a_job_enqueued_in_a_transaction_exists_only_once_committed(self, nq: Neoq, store_url: str) -> None:
        self.require(nq, "enqueue_in_transaction")
        queue, ran = _queue("in-transaction"), []

        def handler(job: Job) -> None:
            ran.append(job.payload["n"])

        nq.start(queue, make_handler(handler, {**self.handler_options(), "concurrency": 1}))
        connection = self.connect(store_url)
        try:
            held = nq.enqueue(Job(queue=queue, payload={"n": "held"}), connection=connection)
            assert nq.get_job(held) is None, "visible before its transaction committed"
            # Claims take the oldest first: the probe runs after "held" would have, had it been visible.
            probe = nq.enqueue(Job(queue=queue, payload={"n": "probe"}))
            self.wait_status(nq, probe, JobStatus.PROCESSED)
            assert ran == ["probe"]
            committed = time.monotonic()
            connection.commit()
            self.wait_status(nq, held, JobStatus.PROCESSED)
            print(f"\nrun {(time.monotonic() - committed) * 1000:.1f}ms after its transaction committed")
            dropped = nq.enqueue(Job(queue=queue, payload={"n": "dropped"}), connection=connection)
            connection.rollback()
            after = nq.enqueue(Job(queue=queue, payload={"n": "after"}))
            self.wait_status(nq, after, JobStatus.PROCESSED)
        finally:
            connection.close()
        assert nq.get_job(dropped) is None
        assert ran == ["probe", "held", "after"]

    def test_handler_writes_commit_with_the_job_and_roll_back_with_a_failure(self, nq: Neoq, store_url: str) -> None:
        self.require(nq, "transaction")
        tag = uuid.uuid4().hex
        setup = self.connect(store_url)
        try:
            _execute(setup, f"CREATE TABLE IF NOT EXISTS {WRITES_TABLE} (tag VARCHAR(200) NOT NULL)")
            setup.commit()
        finally:
            setup.close()

        def handler(job: Job) -> None:
            context = job_context()
            assert context is not None and context.transaction is not None
            _execute(
                context.transaction,
                f"INSERT INTO {WRITES_TABLE} (tag) VALUES ({{}})",
                f"{tag}:{job.payload['kind']}:{job.attempts}",
            )
            if job.attempts <= job.payload["fails"]:
                raise RuntimeError(f"attempt {job.attempts} fails")

        queue = _queue("transaction")
        nq.start(queue, make_handler(handler, {**self.handler_options(), "concurrency": 2, "backoff": 0}))
        ok = nq.enqueue(Job(queue=queue, payload={"kind": "ok", "fails": 0}))
        retried = nq.enqueue(Job(queue=queue, payload={"kind": "retried", "fails": 1}, max_retries=1))
        failed = nq.enqueue(Job(queue=queue, payload={"kind": "failed", "fails": 9}, max_retries=0))
        self.wait_status(nq, ok, JobStatus.PROCESSED)
        self.wait_status(nq, retried, JobStatus.PROCESSED)
        self.wait_status(nq, failed, JobStatus.FAILED)
        reader = self.connect(store_url)
        try:
            rows = _execute(reader, f"SELECT tag FROM {WRITES_TABLE} WHERE tag LIKE {{}}", f"{tag}:%")
            reader.rollback()
        finally:
            reader.close()
        assert sorted(row[0] for row in rows) == [f"{tag}:ok:1", f"{tag}:retried:2"]
