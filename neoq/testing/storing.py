"""Part of ``BackendSuite``: enqueueing.

Jobs stored as given, bad input refused before anything is stored, uniqueness.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from ..app import Neoq
from ..backends.base import Backend
from ..backends.capabilities import ENQUEUE_IN_TRANSACTION
from ..errors import ConfigurationError, DuplicateJobError, InvalidJobError
from ..handler import Handler
from ..job import Job, JobStatus, prepare_job
from .base import SuiteBase
from .helpers import PATIENCE, utc_now, wait_for


class StoringTests(SuiteBase):
    """What is stored, as given, and what is refused: input checks, limits and uniqueness."""

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
        when = utc_now() + timedelta(hours=1)
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
        waiting = nq.enqueue(Job(queue="later", payload={}, run_after=utc_now() + timedelta(hours=1)))
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
