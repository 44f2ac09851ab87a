"""The backend behaviour suite, and helpers for testing code that uses neoq.

Every backend, built-in or yours, must pass ``BackendSuite``. Subclass it in a test module
and give it a ``backend`` fixture that returns a new, unopened backend over an empty store::

    import pytest
    from neoq.testing import BackendSuite

    class TestMyBackend(BackendSuite):
        @pytest.fixture
        def backend(self):
            return MyBackend(...)

It needs pytest (it is a pytest test class). The suite drives the backend through a real
``neoq.Neoq`` client, so it checks the backend together with the shared runtime, the way
applications use it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from .app import Neoq, new
from .backends.base import Backend, Outcome
from .backends.capabilities import ENQUEUE_IN_TRANSACTION
from .context import current_job, job_context
from .errors import ConfigurationError, DuplicateJobError, InvalidJobError, JobNotFoundError
from .handler import Handler
from .job import Job, JobStatus, prepare_job

__all__ = ["BackendSuite", "neoq_threads", "wait_for"]

#: How long the suite waits for something that should happen within milliseconds. Generous:
#: the suite runs on small shared machines; the timing promises themselves are checked separately.
PATIENCE = 10.0


def wait_for(predicate: Callable[[], Any], timeout: float = PATIENCE, interval: float = 0.002) -> Any:
    """Poll ``predicate`` until it returns something truthy and return that; fail after ``timeout``."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= end:
            raise AssertionError(f"condition not met within {timeout}s: {getattr(predicate, '__name__', predicate)}")
        time.sleep(interval)


def neoq_threads() -> list[str]:
    """Return the names of live threads that neoq started (their names start with ``neoq``)."""
    return [t.name for t in threading.enumerate() if t.name.startswith("neoq") and t.is_alive()]


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _no_backoff(retries: int) -> float:
    return 0.0


class BackendSuite:
    """The behaviour every backend must show. Subclass it and provide a ``backend`` fixture."""

    @pytest.fixture
    def backend(self) -> Backend:  # pragma: no cover - subclasses provide it
        raise NotImplementedError("subclass BackendSuite and define a `backend` fixture")

    @pytest.fixture
    def nq(self, backend: Backend) -> Iterator[Neoq]:
        client = new(backend=backend, shutdown_timeout=5)
        try:
            yield client
        finally:
            client.shutdown(timeout=5)

    def status_of(self, nq: Neoq, job_id: str) -> JobStatus | None:
        job = nq.get_job(job_id)
        return None if job is None else job.status

    def wait_status(self, nq: Neoq, job_id: str, status: JobStatus, timeout: float = PATIENCE) -> Job:
        def reached() -> Job | None:
            job = nq.get_job(job_id)
            return job if job is not None and job.status is status else None

        reached.__name__ = f"job {job_id} is {status.value}"
        result: Job = wait_for(reached, timeout)
        return result

    # -- what the backend declares ----------------------------------------------------------

    def test_capabilities_and_modes_are_declared(self, backend: Backend) -> None:
        capabilities = backend.capabilities
        assert isinstance(capabilities, frozenset), "Backend.capabilities must be a frozenset of names"
        assert all(isinstance(name, str) and name for name in capabilities), capabilities
        # Names of neoq's own (neoq.backends.capabilities.KNOWN) or the backend's own extra ones.
        assert backend.capabilities == capabilities, "capabilities describe the backend as configured: stable"
        assert isinstance(backend.handler_modes, frozenset) and "transaction" in backend.handler_modes

    def test_enqueue_through_a_connection_needs_the_capability(self, nq: Neoq) -> None:
        if ENQUEUE_IN_TRANSACTION in nq.backend.capabilities:
            pytest.skip("the store enqueues in a caller's transaction (the shared-store suite checks it)")
        with pytest.raises(ConfigurationError):
            nq.enqueue(Job(queue="through", payload={}), connection=object())
        assert nq.stats() == {}

    # -- storing -------------------------------------------------------------------------

    def test_enqueue_stores_the_job(self, nq: Neoq) -> None:
        when = _now() + timedelta(hours=1)
        job_id = nq.enqueue(Job(queue="store", payload={"a": [1, 2.5, "x", None, True]}, run_after=when, max_retries=3))
        assert isinstance(job_id, str)
        job = nq.get_job(job_id)
        assert job is not None
        assert job.id == job_id
        assert job.queue == "store"
        assert dict(job.payload) == {"a": [1, 2.5, "x", None, True]}
        assert job.status is JobStatus.NEW
        assert job.max_retries == 3
        assert job.retries == 0 and job.attempts == 0 and job.error is None
        assert job.run_after is not None and abs((job.run_after - when).total_seconds()) < 0.001
        assert job.created_at is not None and job.created_at.tzinfo is not None
        assert job.ran_at is None
        assert (
            job.fingerprint == prepare_job(Job(queue="store", payload={"a": [1, 2.5, "x", None, True]}))[0].fingerprint
        )

    def test_get_job_of_unknown_id_is_none(self, nq: Neoq) -> None:
        assert nq.get_job("999999999") is None
        assert nq.get_job("not-an-id") is None

    def test_enqueue_many_stores_all_in_order(self, nq: Neoq) -> None:
        ids = nq.enqueue_many([Job(queue="many", payload={"n": n}) for n in range(50)])
        assert len(ids) == 50 and len(set(ids)) == 50
        for n, job_id in enumerate(ids):
            job = nq.get_job(job_id)
            assert job is not None and job.payload == {"n": n}
        assert nq.enqueue_many([]) == []

    def test_payload_is_copied_at_enqueue(self, nq: Neoq) -> None:
        payload: dict[str, Any] = {"items": [1]}
        job_id = nq.enqueue(Job(queue="copy", payload=payload))
        payload["items"].append(2)
        job = nq.get_job(job_id)
        assert job is not None and job.payload == {"items": [1]}

    def test_invalid_jobs_store_nothing(self, nq: Neoq) -> None:
        naive = datetime(2030, 1, 1)
        bad: list[Any] = [
            "not a job",
            Job(queue=""),
            Job(queue="x" * 129),
            Job(queue="q", payload={"n": float("nan")}),
            Job(queue="q", payload={"n": float("inf")}),
            Job(queue="q", payload={1: "int key"}),  # type: ignore[dict-item]
            Job(queue="q", payload={"deep": [{"ok": {2: "x"}}]}),
            Job(queue="q", payload={"obj": object()}),
            Job(queue="q", payload=["not", "a", "mapping"]),  # type: ignore[arg-type]
            Job(queue="q", run_after=naive),
            Job(queue="q", deadline=naive),
            Job(queue="q", max_retries=-1),
        ]
        for job in bad:
            with pytest.raises(InvalidJobError):
                nq.enqueue(job)
        with pytest.raises(InvalidJobError):
            nq.enqueue_many([Job(queue="q", payload={"ok": 1}), Job(queue="q", payload={"n": float("nan")})])
        assert nq.stats() == {}
        assert nq.list_jobs() == []

    def test_limits_on_input_are_the_same_on_every_backend(self, nq: Neoq) -> None:
        """API.md "Limits on input": refused at enqueue, naming the field; the limits themselves are kept."""
        utc = timezone.utc
        beyond: list[tuple[Job, str]] = [
            (Job(queue="lim", deadline=datetime.max.replace(tzinfo=utc)), "deadline"),
            (Job(queue="lim", run_after=datetime.min.replace(tzinfo=utc)), "run_after"),
            (Job(queue="lim", run_after=datetime(9000, 1, 1, 0, 0, 1, tzinfo=utc)), "run_after"),
            (Job(queue="lim", deadline=datetime(1969, 12, 31, 23, 59, 59, tzinfo=utc)), "deadline"),
            # In UTC this is past datetime.max: the conversion itself overflows.
            (Job(queue="lim", run_after=datetime.max.replace(tzinfo=timezone(timedelta(hours=-5)))), "run_after"),
            (Job(queue="lim", fingerprint="a\x00b"), "fingerprint"),
            (Job(queue="lim", fingerprint="caf\udce9"), "fingerprint"),
            (Job(queue="lim", fingerprint="f" * 257), "fingerprint"),
            (Job(queue="lim", max_retries=1_000_001), "max_retries"),
            (Job(queue="lim", max_retries=2**31), "max_retries"),
        ]
        for job, field_name in beyond:
            with pytest.raises(InvalidJobError, match=field_name):
                nq.enqueue(job)
            with pytest.raises(InvalidJobError, match=field_name):
                nq.enqueue_many([Job(queue="lim", payload={"ok": 1}), job])
        assert nq.stats() == {} and nq.list_jobs() == []
        earliest, latest = datetime(1970, 1, 1, tzinfo=utc), datetime(9000, 1, 1, tzinfo=utc)
        edge = Job(queue="lim", run_after=earliest, deadline=latest, max_retries=1_000_000, fingerprint="é🎉" * 128)
        stored = nq.get_job(nq.enqueue(edge))
        assert stored is not None
        assert (stored.run_after, stored.deadline, stored.max_retries, stored.fingerprint) == (
            earliest,
            latest,
            1_000_000,
            "é🎉" * 128,
        )

    def test_hostile_names_and_payloads_round_trip(self, nq: Neoq) -> None:
        queues = ["it's", 'say "hi"', "UPPER lower", "emoji 🎉 ünïcödé", "'; DROP TABLE jobs; --", "a.b:c/d"]
        payload = {
            "text": "ü\u2028\"'\\\n\t😀",
            "nested": {"list": [[], {}, [1, [2, [3]]]]},
            "big": 2**62,
            "neg": -1.5e300,
        }
        for queue in queues:
            job_id = nq.enqueue(Job(queue=queue, payload=payload))
            job = nq.get_job(job_id)
            assert job is not None and job.queue == queue and job.payload == payload
        assert set(nq.stats()) == set(queues)

    # -- uniqueness ----------------------------------------------------------------------

    def test_duplicate_of_a_waiting_job_is_refused(self, nq: Neoq) -> None:
        first = nq.enqueue(Job(queue="dup", payload={"k": 1, "j": 2}))
        with pytest.raises(DuplicateJobError) as info:
            nq.enqueue(Job(queue="dup", payload={"j": 2, "k": 1}))
        assert info.value.job_id == first
        # Another queue, another payload or an explicit fingerprint is another job.
        nq.enqueue(Job(queue="dup2", payload={"k": 1, "j": 2}))
        nq.enqueue(Job(queue="dup", payload={"k": 2, "j": 2}))
        nq.enqueue(Job(queue="dup", payload={"k": 1, "j": 2}, fingerprint="custom"))
        assert nq.stats()["dup"]["new"] == 3

    def test_duplicate_in_a_batch_stores_none(self, nq: Neoq) -> None:
        existing = nq.enqueue(Job(queue="batch", payload={"n": 0}))
        with pytest.raises(DuplicateJobError):
            nq.enqueue_many([Job(queue="batch", payload={"n": 1}), Job(queue="batch", payload={"n": 0})])
        with pytest.raises(DuplicateJobError):
            nq.enqueue_many([Job(queue="batch", payload={"n": 2}), Job(queue="batch", payload={"n": 2})])
        jobs = nq.list_jobs(queue="batch")
        assert [job.id for job in jobs] == [existing]

    def test_duplicate_allowed_again_once_finished(self, nq: Neoq) -> None:
        outcomes = {"ok": None, "bad": ValueError("no")}

        def handler(job: Job) -> None:
            error = outcomes[job.payload["kind"]]
            if error is not None:
                raise error

        nq.start("again", Handler(handler, max_retries=0))
        for kind, status in (("ok", JobStatus.PROCESSED), ("bad", JobStatus.FAILED)):
            first = nq.enqueue(Job(queue="again", payload={"kind": kind}))
            self.wait_status(nq, first, status)
            second = nq.enqueue(Job(queue="again", payload={"kind": kind}))
            assert second != first
            self.wait_status(nq, second, status)
        waiting = nq.enqueue(Job(queue="later", payload={}, run_after=_now() + timedelta(hours=1)))
        nq.cancel_job(waiting)
        assert self.status_of(nq, waiting) is JobStatus.CANCELLED
        assert nq.enqueue(Job(queue="later", payload={})) != waiting

    def test_duplicate_refused_while_running_and_awaiting_retry(self, nq: Neoq) -> None:
        entered, release = threading.Event(), threading.Event()
        runs: list[int] = []

        def handler(job: Job) -> None:
            runs.append(1)
            if len(runs) == 1:
                entered.set()
                release.wait(PATIENCE)
                raise RuntimeError("first attempt fails")

        nq.start("busy", Handler(handler, max_retries=1, backoff=lambda retries: 3600))
        job_id = nq.enqueue(Job(queue="busy", payload={"x": 1}))
        assert entered.wait(PATIENCE)
        with pytest.raises(DuplicateJobError):
            nq.enqueue(Job(queue="busy", payload={"x": 1}))
        release.set()
        wait_for(lambda: (j := nq.get_job(job_id)) is not None and j.retries == 1 and j.error is not None)
        with pytest.raises(DuplicateJobError):
            nq.enqueue(Job(queue="busy", payload={"x": 1}))

    # -- running and retrying ------------------------------------------------------------

    def test_handler_runs_and_job_is_processed(self, nq: Neoq) -> None:
        seen: list[tuple[Any, ...]] = []

        def handler(job: Job) -> None:
            context = job_context()
            assert context is not None
            seen.append((job.payload["n"], current_job() is job, context.job is job, context.cancelled.is_set()))

        assert current_job() is None and job_context() is None
        nq.start("run", handler)
        job_id = nq.enqueue(Job(queue="run", payload={"n": 7}))
        job = self.wait_status(nq, job_id, JobStatus.PROCESSED)
        assert seen == [(7, True, True, False)]
        assert job.attempts == 1 and job.retries == 0 and job.error is None
        assert job.ran_at is not None and job.created_at is not None and job.ran_at >= job.created_at

    def test_failing_job_runs_max_retries_plus_one_times(self, nq: Neoq) -> None:
        runs: list[int] = []

        def handler(job: Job) -> None:
            runs.append(job.retries)
            raise ValueError(f"boom {len(runs)}")

        nq.start("fail", Handler(handler, max_retries=2, backoff=_no_backoff))
        job_id = nq.enqueue(Job(queue="fail", payload={}))
        job = self.wait_status(nq, job_id, JobStatus.FAILED)
        assert runs == [0, 1, 2]
        assert job.retries == 2 and job.attempts == 3
        assert job.error == "ValueError: boom 3"

    def test_any_error_text_is_stored(self, nq: Neoq) -> None:
        """Quotes, braces, newlines, non-ASCII and a NUL (kept as ``\\x00``) in an error survive the store."""
        message = 'it\'s {1,2} \\ "quoted" NULL\nline two \u00e9\u4e2d \x00 end'

        def handler(job: Job) -> None:
            raise ValueError(message)

        nq.start("errors", Handler(handler, max_retries=0))
        job_id = nq.enqueue(Job(queue="errors", payload={}))
        job = self.wait_status(nq, job_id, JobStatus.FAILED)
        assert job.attempts == 1
        assert job.error == "ValueError: " + message.replace("\x00", "\\x00")

    def test_job_max_retries_overrides_handler(self, nq: Neoq) -> None:
        runs: list[int] = []

        def handler(job: Job) -> None:
            runs.append(1)
            raise KeyError("k")

        nq.start("override", Handler(handler, max_retries=5, backoff=_no_backoff))
        job_id = nq.enqueue(Job(queue="override", payload={}, max_retries=0))
        job = self.wait_status(nq, job_id, JobStatus.FAILED)
        assert len(runs) == 1 and job.error == "KeyError: 'k'"

    def test_success_on_last_attempt_is_processed(self, nq: Neoq) -> None:
        def handler(job: Job) -> None:
            if job.retries < 3:
                raise RuntimeError("not yet")

        nq.start("last", Handler(handler, max_retries=3, backoff=_no_backoff))
        job_id = nq.enqueue(Job(queue="last", payload={}))
        job = self.wait_status(nq, job_id, JobStatus.PROCESSED)
        assert job.retries == 3 and job.attempts == 4 and job.error is None

    def test_retry_waits_for_backoff_and_keeps_error(self, nq: Neoq) -> None:
        times: list[float] = []

        def handler(job: Job) -> None:
            times.append(time.monotonic())
            if len(times) == 1:
                raise ValueError("first")

        calls: list[int] = []

        def backoff(retries: int) -> timedelta:
            calls.append(retries)
            return timedelta(milliseconds=300)

        nq.start("backoff", Handler(handler, max_retries=3, backoff=backoff))
        job_id = nq.enqueue(Job(queue="backoff", payload={}))

        def retry_waiting() -> Job | None:
            job = nq.get_job(job_id)
            return job if job is not None and job.retries == 1 else None

        waiting = wait_for(retry_waiting)
        assert waiting.error == "ValueError: first" or waiting.status is JobStatus.PROCESSED
        job = self.wait_status(nq, job_id, JobStatus.PROCESSED)
        assert calls == [1]
        assert times[1] - times[0] >= 0.29
        assert job.error is None and job.retries == 1

    def test_recovery_callback_gets_job_and_exception(self, backend: Backend) -> None:
        got: list[tuple[str | None, str]] = []
        done = threading.Event()

        def recover(job: Job, exc: BaseException) -> None:
            got.append((job.id, repr(exc)))
            done.set()
            raise RuntimeError("a broken callback is logged, never raised")

        def handler(job: Job) -> None:
            raise ValueError("bad")

        with new(backend=backend, recovery_callback=recover) as nq:
            nq.start("recover", Handler(handler, max_retries=0))
            job_id = nq.enqueue(Job(queue="recover", payload={}))
            assert done.wait(PATIENCE)
            self.wait_status(nq, job_id, JobStatus.FAILED)
        assert got == [(job_id, "ValueError('bad')")]

    # -- nothing that escapes an attempt stops a queue -------------------------------------

    def assert_serves_next(self, nq: Neoq, queue: str) -> None:
        """The queue's claim loop (concurrency 1 in these tests) still runs jobs: ``{"ok": 1}`` is processed."""
        self.wait_status(nq, nq.enqueue(Job(queue=queue, payload={"ok": 1})), JobStatus.PROCESSED)

    def test_handler_raising_any_base_exception_fails_the_attempt(self, nq: Neoq) -> None:
        raised: dict[str, BaseException] = {
            "exit": SystemExit(3),
            "interrupt": KeyboardInterrupt(),
            "generator": GeneratorExit("closed"),
        }

        def handler(job: Job) -> None:
            if "raise" in job.payload:
                raise raised[job.payload["raise"]]

        nq.start("escape", Handler(handler, concurrency=1, max_retries=1, backoff=_no_backoff))
        ids = {kind: nq.enqueue(Job(queue="escape", payload={"raise": kind})) for kind in raised}
        expected = {"exit": "SystemExit: 3", "interrupt": "KeyboardInterrupt", "generator": "GeneratorExit: closed"}
        for kind, job_id in ids.items():
            job = self.wait_status(nq, job_id, JobStatus.FAILED)
            assert (job.error, job.attempts, job.retries) == (expected[kind], 2, 1)
        self.assert_serves_next(nq, "escape")

    def test_recovery_callback_raising_system_exit_is_logged(self, backend: Backend) -> None:
        def recover(job: Job, exc: BaseException) -> None:
            raise SystemExit("a callback that exits")

        def handler(job: Job) -> None:
            if "bad" in job.payload:
                raise ValueError("bad")

        with new(backend=backend, recovery_callback=recover, shutdown_timeout=5) as nq:
            nq.start("recover-exit", Handler(handler, concurrency=1, max_retries=0))
            job_id = nq.enqueue(Job(queue="recover-exit", payload={"bad": 1}))
            job = self.wait_status(nq, job_id, JobStatus.FAILED)
            assert job.error == "ValueError: bad"
            self.assert_serves_next(nq, "recover-exit")

    def test_backoff_beyond_100_years_is_clamped(self, nq: Neoq) -> None:
        def handler(job: Job) -> None:
            if "bad" in job.payload:
                raise ValueError("later")

        nq.start("far-retry", Handler(handler, concurrency=1, max_retries=3, backoff=lambda retries: 1e12))
        before = _now()
        job_id = nq.enqueue(Job(queue="far-retry", payload={"bad": 1}))
        job = wait_for(lambda: (j := nq.get_job(job_id)) is not None and j.retries == 1 and j)
        assert job.status is JobStatus.NEW and job.error == "ValueError: later"
        years = (job.run_after - before).total_seconds() / (365.25 * 86400)
        assert 99.9 < years <= 100.01, job.run_after
        # A retry due after the job's deadline fails it at once, as with any delay.
        short = nq.enqueue(Job(queue="far-retry", payload={"bad": 2}, deadline=_now() + timedelta(days=1)))
        job = self.wait_status(nq, short, JobStatus.FAILED)
        assert job.error == "ValueError: later" and job.attempts == 1
        self.assert_serves_next(nq, "far-retry")

    def test_broken_backoff_retries_after_a_second(self, nq: Neoq) -> None:
        def raises(retries: int) -> float:
            raise SystemExit("a backoff that exits")

        backoffs: dict[str, Callable[[int], Any]] = {
            "raises": raises,
            "nan": lambda retries: float("nan"),
            "text": lambda retries: "soon",
        }
        times: dict[str, list[float]] = {kind: [] for kind in backoffs}

        def handler(job: Job) -> None:
            if "ok" not in job.payload:
                times[job.queue[len("broken-") :]].append(time.monotonic())
                if job.retries == 0:
                    raise ValueError("once")

        ids = {}
        for kind, backoff in backoffs.items():
            nq.start(f"broken-{kind}", Handler(handler, concurrency=1, max_retries=2, backoff=backoff))
            ids[kind] = nq.enqueue(Job(queue=f"broken-{kind}", payload={}))
        for kind, job_id in ids.items():
            job = self.wait_status(nq, job_id, JobStatus.PROCESSED)
            assert job.retries == 1 and job.attempts == 2
            first, second = times[kind]
            assert second - first >= 0.9, (kind, second - first)  # the fallback delay: 1 s
            self.assert_serves_next(nq, f"broken-{kind}")

    def test_error_text_with_lone_surrogate_and_nul_is_stored(self, nq: Neoq) -> None:
        """An exception message no store can hold as is (``os.fsdecode`` of a Latin-1 file name) is
        kept with backslash escapes, the same on every backend, on a retry and on the final failure."""
        name = b"caf\xe9.txt".decode("utf-8", "surrogateescape")  # os.fsdecode's result on a UTF-8 system

        def handler(job: Job) -> None:
            if "ok" not in job.payload:
                raise OSError(f"cannot open {name}\x00")

        nq.start("surrogate", Handler(handler, concurrency=1, max_retries=1, backoff=lambda retries: 0.2))
        job_id = nq.enqueue(Job(queue="surrogate", payload={}))
        expected = "OSError: cannot open caf\\udce9.txt\\x00"
        waiting = wait_for(lambda: (j := nq.get_job(job_id)) is not None and j.retries == 1 and j)
        assert waiting.error == expected
        job = self.wait_status(nq, job_id, JobStatus.FAILED)
        assert job.error == expected and job.attempts == 2
        self.assert_serves_next(nq, "surrogate")

    def test_future_job_waits_for_run_after(self, nq: Neoq) -> None:
        started: list[datetime] = []
        nq.start("future", lambda job: started.append(_now()))
        when = _now() + timedelta(milliseconds=400)
        job_id = nq.enqueue(Job(queue="future", payload={}, run_after=when))
        self.wait_status(nq, job_id, JobStatus.PROCESSED)
        assert started and started[0] >= when

    # -- timeouts and deadlines ----------------------------------------------------------

    def test_timeout_fails_attempt_without_waiting_for_handler(self, nq: Neoq) -> None:
        release = threading.Event()
        cancelled: list[bool] = []

        def handler(job: Job) -> None:
            context = job_context()
            assert context is not None
            cancelled.append(context.cancelled.wait(PATIENCE))
            release.wait(PATIENCE)

        nq.start("slow", Handler(handler, timeout=0.2, max_retries=0))
        job_id = nq.enqueue(Job(queue="slow", payload={}))
        job = self.wait_status(nq, job_id, JobStatus.FAILED)
        assert job.error is not None and job.error.startswith("JobTimeoutError:")
        wait_for(lambda: cancelled)  # set before the failure was stored; the handler wakes a moment later
        assert cancelled == [True]
        release.set()  # the late return changes nothing
        time.sleep(0.05)
        after = nq.get_job(job_id)
        assert after is not None and after.status is JobStatus.FAILED and after.error == job.error

    def test_deadline_passed_before_start_fails_without_running(self, nq: Neoq) -> None:
        runs: list[int] = []
        nq.start("expired", lambda job: runs.append(1))
        job_id = nq.enqueue(Job(queue="expired", payload={}, deadline=_now() - timedelta(seconds=1)))
        job = self.wait_status(nq, job_id, JobStatus.FAILED)
        assert runs == []
        assert job.error is not None and job.error.startswith("DeadlineExceededError:")

    def test_deadline_while_running_fails_and_is_not_retried(self, nq: Neoq) -> None:
        runs: list[int] = []

        def handler(job: Job) -> None:
            runs.append(1)
            context = job_context()
            assert context is not None and context.time_remaining() <= 0.5
            context.cancelled.wait(PATIENCE)

        nq.start("deadline", Handler(handler, timeout=30, max_retries=5, backoff=_no_backoff))
        job_id = nq.enqueue(Job(queue="deadline", payload={}, deadline=_now() + timedelta(milliseconds=300)))
        job = self.wait_status(nq, job_id, JobStatus.FAILED)
        assert job.error is not None and job.error.startswith("DeadlineExceededError:")
        assert runs == [1]

    def test_far_deadline_without_timeout_keeps_timeouts_enforced(self, nq: Neoq) -> None:
        """While a job with a deadline in year 8999 and no timeout runs, the watchdog (which waits
        for the earliest end) still ends another queue's attempts at their timeout."""
        entered, release = threading.Event(), threading.Event()

        def far(job: Job) -> None:
            entered.set()
            release.wait(PATIENCE)

        def slow(job: Job) -> None:
            context = job_context()
            assert context is not None
            context.cancelled.wait(PATIENCE)

        nq.start("far-deadline", Handler(far, concurrency=1, timeout=None))
        far_id = nq.enqueue(Job(queue="far-deadline", payload={}, deadline=datetime(8999, 1, 1, tzinfo=timezone.utc)))
        assert entered.wait(PATIENCE)
        nq.start("short-timeout", Handler(slow, concurrency=1, timeout=0.2, max_retries=0))
        try:
            job = self.wait_status(nq, nq.enqueue(Job(queue="short-timeout", payload={})), JobStatus.FAILED)
        finally:
            release.set()
        assert job.error is not None and job.error.startswith("JobTimeoutError:")
        self.wait_status(nq, far_id, JobStatus.PROCESSED)
        self.assert_serves_next(nq, "far-deadline")

    def test_timeouts_above_100_years_are_refused(self, nq: Neoq) -> None:
        """Handler timeouts go up to 100 years; a longer one (it overflowed the watchdog's wait)
        is refused when the handler is made."""
        with pytest.raises(ConfigurationError, match="100 years"):
            Handler(lambda job: None, timeout=timedelta(days=400 * 365))
        with pytest.raises(ConfigurationError, match="100 years"):
            nq.start("too-long", lambda job: None, timeout=1e12)
        nq.start("longest", Handler(lambda job: None, concurrency=1, timeout=timedelta(days=36524)))
        self.assert_serves_next(nq, "longest")

    # -- concurrency ---------------------------------------------------------------------

    def test_concurrency_holds_for_every_queue(self, nq: Neoq) -> None:
        limits = {"c1": 1, "c2": 2, "c3": 3}
        lock = threading.Lock()
        running = dict.fromkeys(limits, 0)
        peak = dict.fromkeys(limits, 0)

        def handler(job: Job) -> None:
            with lock:
                running[job.queue] += 1
                peak[job.queue] = max(peak[job.queue], running[job.queue])
            time.sleep(0.05)
            with lock:
                running[job.queue] -= 1

        # Everything is queued before the handlers start, so each queue can reach its limit at once.
        ids = nq.enqueue_many([Job(queue=q, payload={"n": n}) for n in range(12) for q in limits])
        for queue, limit in limits.items():
            nq.start(queue, Handler(handler, concurrency=limit))
        for job_id in ids:
            self.wait_status(nq, job_id, JobStatus.PROCESSED)
        assert peak == limits

    # -- managing ------------------------------------------------------------------------

    def test_cancel_waiting_job(self, nq: Neoq) -> None:
        job_id = nq.enqueue(Job(queue="cancel", payload={}, run_after=_now() + timedelta(milliseconds=200)))
        ran: list[int] = []
        nq.start("cancel", lambda job: ran.append(1))
        nq.cancel_job(job_id)
        assert self.status_of(nq, job_id) is JobStatus.CANCELLED
        other = nq.enqueue(Job(queue="cancel", payload={"other": 1}, run_after=_now() + timedelta(milliseconds=300)))
        self.wait_status(nq, other, JobStatus.PROCESSED)
        assert ran == [1]

    def test_cancel_running_job(self, nq: Neoq) -> None:
        entered = threading.Event()
        saw_cancel: list[bool] = []

        def handler(job: Job) -> None:
            context = job_context()
            assert context is not None
            entered.set()
            saw_cancel.append(context.cancelled.wait(PATIENCE))

        nq.start("cancel_running", handler)
        job_id = nq.enqueue(Job(queue="cancel_running", payload={}))
        assert entered.wait(PATIENCE)
        nq.cancel_job(job_id)
        self.wait_status(nq, job_id, JobStatus.CANCELLED)
        wait_for(lambda: saw_cancel)
        assert saw_cancel == [True]

    def test_cancel_finished_job_changes_nothing(self, nq: Neoq) -> None:
        nq.start("finished", lambda job: None)
        job_id = nq.enqueue(Job(queue="finished", payload={}))
        self.wait_status(nq, job_id, JobStatus.PROCESSED)
        nq.cancel_job(job_id)
        assert self.status_of(nq, job_id) is JobStatus.PROCESSED

    def test_unknown_ids_raise_not_found(self, nq: Neoq) -> None:
        with pytest.raises(JobNotFoundError):
            nq.cancel_job("987654321")
        with pytest.raises(JobNotFoundError):
            nq.retry_job("987654321")
        with pytest.raises(JobNotFoundError):
            nq.retry_job("not-an-id")

    def test_retry_job(self, nq: Neoq) -> None:
        fail = [True]

        def handler(job: Job) -> None:
            if fail[0]:
                raise ValueError("fails until fixed")

        waiting = nq.enqueue(Job(queue="retry", payload={"n": 0}, run_after=_now() + timedelta(hours=1)))
        nq.retry_job(waiting)  # NEW: left as it is
        job = nq.get_job(waiting)
        assert job is not None and job.status is JobStatus.NEW and job.run_after is not None
        assert job.run_after > _now() + timedelta(minutes=50)

        nq.start("retry", Handler(handler, max_retries=0))
        job_id = nq.enqueue(Job(queue="retry", payload={"n": 1}))
        self.wait_status(nq, job_id, JobStatus.FAILED)
        blocker = nq.enqueue(Job(queue="retry", payload={"n": 1}, run_after=_now() + timedelta(hours=1)))
        with pytest.raises(DuplicateJobError):
            nq.retry_job(job_id)
        nq.cancel_job(blocker)
        fail[0] = False
        nq.retry_job(job_id)
        job = self.wait_status(nq, job_id, JobStatus.PROCESSED)
        assert job.retries == 0 and job.error is None
        nq.retry_job(blocker)  # a CANCELLED job runs again too
        self.wait_status(nq, blocker, JobStatus.PROCESSED)

    def test_stats_and_list_jobs(self, nq: Neoq) -> None:
        assert nq.stats() == {}
        later = _now() + timedelta(hours=1)
        first = nq.enqueue(Job(queue="s1", payload={"n": 1}, run_after=later))
        second = nq.enqueue(Job(queue="s1", payload={"n": 2}, run_after=later))
        third = nq.enqueue(Job(queue="s2", payload={"n": 3}, run_after=later))
        nq.cancel_job(second)
        assert nq.stats() == {
            "s1": {"new": 1, "processed": 0, "failed": 0, "cancelled": 1},
            "s2": {"new": 1, "processed": 0, "failed": 0, "cancelled": 0},
        }
        assert [job.id for job in nq.list_jobs()] == [third, second, first]
        assert [job.id for job in nq.list_jobs(queue="s1")] == [second, first]
        assert [job.id for job in nq.list_jobs(status=JobStatus.CANCELLED)] == [second]
        assert [job.id for job in nq.list_jobs(status="new", limit=1)] == [third]
        assert nq.list_jobs(queue="nothing") == []

    # -- the backend's own primitives ----------------------------------------------------

    def test_claim_settle_and_wakeup(self, backend: Backend) -> None:
        backend.open()
        try:
            assert backend.claim("prims", 0) is None
            start = time.monotonic()
            assert backend.claim("prims", 0.1) is None
            assert time.monotonic() - start >= 0.09
            got: list[Any] = []
            waiter = threading.Thread(target=lambda: got.append(backend.claim("prims", PATIENCE)))
            waiter.start()
            time.sleep(0.05)  # let the waiter block; the wake-up must also work if it is late
            backend.wakeup("prims", 1)
            waiter.join(PATIENCE / 2)
            assert not waiter.is_alive() and got == [None]

            job, _ = prepare_job(Job(queue="prims", payload={"p": 1}))
            (job_id,) = backend.enqueue([job])
            claim = backend.claim("prims", 1)
            assert claim is not None and claim.job.id == job_id and claim.job.attempts == 1
            assert claim.job.payload == {"p": 1} and claim.job.ran_at is not None
            assert backend.claim("prims", 0) is None  # held by the claim
            backend.settle(claim, Outcome(JobStatus.NEW, "ValueError: x", _now(), 1))
            backend.release(claim)
            again = backend.claim("prims", 1)
            assert again is not None and again.job.attempts == 2 and again.job.retries == 1
            assert again.job.error == "ValueError: x"
            backend.settle(again, Outcome(JobStatus.PROCESSED))
            backend.release(again)
            stored = backend.get_job(job_id)
            assert stored is not None and stored.status is JobStatus.PROCESSED and stored.error is None
        finally:
            backend.close()

    def test_a_second_settle_of_a_claim_changes_nothing(self, backend: Backend) -> None:
        """The runtime settles a claim again (as NEW, due now) when a settle failed unexpectedly:
        that must not undo an outcome stored before, nor touch a later claim of the same job."""
        backend.open()
        try:
            (done_id,) = backend.enqueue([prepare_job(Job(queue="twice", payload={"n": 1}))[0]])
            claim = backend.claim("twice", 1)
            assert claim is not None
            backend.settle(claim, Outcome(JobStatus.PROCESSED))
            backend.settle(claim, Outcome(JobStatus.NEW, None, _now(), 0))
            backend.release(claim)
            done = backend.get_job(done_id)
            assert done is not None and done.status is JobStatus.PROCESSED

            (retried_id,) = backend.enqueue([prepare_job(Job(queue="twice", payload={"n": 2}))[0]])
            first = backend.claim("twice", 1)
            assert first is not None and first.job.id == retried_id
            backend.settle(first, Outcome(JobStatus.NEW, "ValueError: x", _now(), 1))
            backend.release(first)
            second = backend.claim("twice", 1)
            assert second is not None and second.job.id == retried_id and second.job.attempts == 2
            backend.settle(first, Outcome(JobStatus.NEW, None, _now(), 0))  # stale: changes nothing
            assert backend.claim("twice", 0) is None  # still held by the second claim
            backend.settle(second, Outcome(JobStatus.PROCESSED))
            backend.release(second)
            job = backend.get_job(retried_id)
            assert job is not None and job.status is JobStatus.PROCESSED and job.retries == 1
        finally:
            backend.close()

    def test_claim_order_is_run_after_then_id(self, backend: Backend) -> None:
        backend.open()
        try:
            now = _now()
            jobs = [
                prepare_job(Job(queue="order", payload={"n": n}, run_after=now - timedelta(seconds=s)))[0]
                for n, s in ((0, 1), (1, 3), (2, 2))
            ]
            backend.enqueue(jobs)
            order = []
            for _ in range(3):
                claim = backend.claim("order", 1)
                assert claim is not None
                order.append(claim.job.payload["n"])
                backend.settle(claim, Outcome(JobStatus.PROCESSED))
                backend.release(claim)
            assert order == [1, 2, 0]
        finally:
            backend.close()

    def test_enqueue_tick_once_per_tick(self, backend: Backend) -> None:
        backend.open()
        try:
            tick = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
            assert backend.last_tick("cron:q") is None

            def make(t: datetime) -> Job:
                return prepare_job(Job(queue="cron:q", payload={"scheduled_at": t.isoformat()}))[0]

            first = backend.enqueue_tick(make(tick), "cron:q", tick)
            assert first is not None
            assert backend.enqueue_tick(make(tick), "cron:q", tick) is None
            later = tick + timedelta(minutes=1)
            assert backend.enqueue_tick(make(later), "cron:q", later) is not None
            assert backend.last_tick("cron:q") == later
            claim = backend.claim("cron:q", 1)
            assert claim is not None
            backend.settle(claim, Outcome(JobStatus.PROCESSED))
            backend.release(claim)
            assert backend.enqueue_tick(make(tick), "cron:q", tick) is None  # even once processed
        finally:
            backend.close()

    def test_prune_deletes_only_old_finished_jobs(self, backend: Backend) -> None:
        backend.open()
        try:
            ids = backend.enqueue([prepare_job(Job(queue="prune", payload={"n": n}))[0] for n in range(4)])
            for status in (JobStatus.PROCESSED, JobStatus.FAILED, JobStatus.CANCELLED):
                claim = backend.claim("prune", 1)
                assert claim is not None
                backend.settle(claim, Outcome(status, None if status is JobStatus.PROCESSED else "E: x"))
                backend.release(claim)
            future = _now() + timedelta(seconds=5)
            assert backend.prune({JobStatus.PROCESSED: _now() - timedelta(hours=1)}, 100) == 0
            assert backend.prune({JobStatus.PROCESSED: future, JobStatus.CANCELLED: future}, 100) == 2
            remaining = {job.status for job in backend.list_jobs(None, None, 10)}
            assert remaining == {JobStatus.FAILED, JobStatus.NEW}
            assert backend.prune({JobStatus.FAILED: future}, 100) == 1
            assert [job.id for job in backend.list_jobs(None, None, 10)] == [ids[3]]
        finally:
            backend.close()

    def test_prune_keeps_recent_tick_records(self, backend: Backend) -> None:
        backend.open()
        try:
            now = _now()
            recent, latest = now - timedelta(hours=1), now - timedelta(minutes=1)
            for tick in (recent, latest):
                job = prepare_job(Job(queue="cron:keep", payload={"scheduled_at": tick.isoformat()}))[0]
                assert backend.enqueue_tick(job, "cron:keep", tick) is not None
            # A job retention of seconds must not let a tick of the last day be stored twice.
            backend.prune(dict.fromkeys((JobStatus.PROCESSED, JobStatus.FAILED), now), 100)
            again = prepare_job(Job(queue="cron:keep", payload={"scheduled_at": recent.isoformat(), "x": 1}))[0]
            assert backend.enqueue_tick(again, "cron:keep", recent) is None
            assert backend.last_tick("cron:keep") == latest
        finally:
            backend.close()

    # -- shutdown ------------------------------------------------------------------------

    def test_shutdown_leaves_no_thread_and_is_idempotent(self, backend: Backend) -> None:
        nq = new(backend=backend)
        nq.start("bye", lambda job: None, concurrency=3)
        nq.enqueue(Job(queue="bye", payload={}, run_after=_now() + timedelta(hours=1)))
        job_id = nq.enqueue(Job(queue="bye", payload={"now": 1}))
        self.wait_status(nq, job_id, JobStatus.PROCESSED)
        nq.shutdown()
        assert neoq_threads() == []
        nq.shutdown()

    def test_shutdown_waits_for_running_attempts(self, backend: Backend) -> None:
        entered = threading.Event()

        def handler(job: Job) -> None:
            entered.set()
            time.sleep(0.3)

        nq = new(backend=backend)
        nq.start("grace", handler)
        job_id = nq.enqueue(Job(queue="grace", payload={}))
        assert entered.wait(PATIENCE)
        nq.shutdown(timeout=10)
        with new(backend=backend) as again:
            assert self.status_of(again, job_id) is JobStatus.PROCESSED

    def test_forced_shutdown_cancels_and_keeps_the_job(self, backend: Backend) -> None:
        entered = threading.Event()
        saw_cancel: list[bool] = []

        def handler(job: Job) -> None:
            context = job_context()
            assert context is not None
            entered.set()
            saw_cancel.append(context.cancelled.wait(PATIENCE))

        nq = new(backend=backend)
        nq.start("forced", handler)
        job_id = nq.enqueue(Job(queue="forced", payload={}))
        assert entered.wait(PATIENCE)
        start = time.monotonic()
        nq.shutdown(timeout=0.2)
        assert time.monotonic() - start < 3
        assert saw_cancel == [True]
        assert neoq_threads() == []
        with new(backend=backend) as again:
            job = again.get_job(job_id)
            assert job is not None and job.status is JobStatus.NEW
