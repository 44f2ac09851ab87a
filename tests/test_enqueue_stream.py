"""``enqueue_many`` of a large batch on PostgreSQL prepares each job while COPY sends the rows
before it (``PostgresBackend.enqueue_prepared``); every guarantee of preparing first still holds.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

import neoq
from neoq import DuplicateJobError, InvalidJobError, Job, JobEvent
from neoq.backends.memory import MemoryBackend

ODD = 'tab\there, new\nline, cr\r, back\\slash, quote" and é \\u00e9'
N = 1200  # more than two of _COPY_CHUNK's chunks
LATER = datetime.now(timezone.utc) + timedelta(hours=1)


def batch(queue: str, n: int = N, run_after: datetime | None = None) -> list[Job]:
    return [Job(queue=queue, payload={"i": i, "text": ODD}, run_after=run_after) for i in range(n)]


def stored_rows(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM neoq_jobs").fetchone()
    assert row is not None
    return int(row[0])


pg = pytest.mark.postgres
timing = pytest.mark.parametrize("run_after", [None, LATER], ids=["now", "later"])


@pg
@timing
def test_an_invalid_job_700_stores_nothing_and_is_named(pg_clean: str, run_after: datetime | None) -> None:
    jobs = batch("stream-invalid", run_after=run_after)
    jobs[700] = Job(queue="stream-invalid", payload={"bad": float("nan")}, run_after=run_after)
    with neoq.new(pg_clean) as nq:
        with pytest.raises(InvalidJobError, match=r"^job 700: "):
            nq.enqueue_many(jobs)
        assert stored_rows(pg_clean) == 0
        # Not a Job at all, past the first chunk: the same.
        others: list[Any] = batch("stream-invalid", run_after=run_after)
        others[900] = {"queue": "stream-invalid"}
        with pytest.raises(InvalidJobError, match=r"^job 900: expected a neoq.Job"):
            nq.enqueue_many(others)
        assert stored_rows(pg_clean) == 0
        # The connection went back to the pool in a usable state.
        assert len(nq.enqueue_many(batch("stream-invalid", run_after=run_after))) == N
        assert stored_rows(pg_clean) == N


@pg
@pytest.mark.parametrize("bad", [0, 3, 4990])
def test_an_invalid_job_in_the_first_chunk_or_long_after_stores_nothing(pg_clean: str, bad: int) -> None:
    # Refused before the first chunk is sent, or while the server stores thousands of rows.
    jobs = batch("stream-early", 5000)
    jobs[bad] = Job(queue="stream-early", payload={"bad": object()})
    with neoq.new(pg_clean, pool_max_size=1) as nq:
        with pytest.raises(InvalidJobError, match=rf"^job {bad}: "):
            nq.enqueue_many(jobs)
        assert stored_rows(pg_clean) == 0
        assert len(nq.enqueue_many(batch("stream-early", 100))) == 100
        assert stored_rows(pg_clean) == 100


@pg
@timing
def test_a_duplicate_within_the_batch_at_its_end_stores_nothing(pg_clean: str, run_after: datetime | None) -> None:
    jobs = batch("stream-dup", run_after=run_after)
    jobs.append(Job(queue="stream-dup", payload={"i": 3, "text": ODD}))
    with neoq.new(pg_clean) as nq:
        with pytest.raises(DuplicateJobError, match=rf"jobs 3 and {N} of the batch"):
            nq.enqueue_many(jobs)
        assert stored_rows(pg_clean) == 0


@pg
def test_an_invalid_job_is_reported_before_a_duplicate_wherever_each_is(pg_clean: str) -> None:
    with neoq.new(pg_clean) as nq:
        held = nq.enqueue(Job(queue="stream-order", payload={"i": 5, "text": ODD}))
        # A duplicate within the batch (job 10 of job 9), then an invalid job: the invalid one is named.
        jobs = batch("stream-order")
        jobs[10] = jobs[9]
        jobs[800] = Job(queue="", payload={})
        with pytest.raises(InvalidJobError, match=r"^job 800: "):
            nq.enqueue_many(jobs)
        # A duplicate of a stored job (job 5, refused by the server while the client makes the
        # rows after it), then an invalid job: the same.
        jobs = batch("stream-order", 5000)
        jobs[4990] = Job(queue="stream-order", payload={"bad": {1: 2}})
        with pytest.raises(InvalidJobError, match=r"^job 4990: "):
            nq.enqueue_many(jobs)
        assert [job.id for job in nq.list_jobs()] == [held]


@pg
@timing
def test_a_duplicate_of_a_stored_new_job_stores_nothing_and_names_the_holder(
    pg_clean: str, run_after: datetime | None
) -> None:
    with neoq.new(pg_clean) as nq:
        holder = nq.enqueue(Job(queue="stream-held", payload={"i": 650, "text": ODD}))
        with pytest.raises(DuplicateJobError) as info:
            nq.enqueue_many(batch("stream-held", run_after=run_after))
        assert info.value.job_id == holder
        assert stored_rows(pg_clean) == 1


@pg
def test_ids_come_in_order_with_every_field_and_the_payload_text_kept(pg_clean: str) -> None:
    deadline = datetime(2100, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
    payloads: list[dict[str, Any]] = [
        {"i": i, "text": ODD, "n": 1e16, "nested": {"b": [1, "\\"], "a": None}} for i in range(N)
    ]
    jobs = [
        Job(
            queue=f"stream {ODD}" if i % 2 else "stream",
            payload=payloads[i],
            deadline=deadline if i % 5 == 0 else None,
            max_retries=i % 4 if i % 7 else None,
            fingerprint=f"fp {ODD} {i}" if i % 3 == 0 else None,
        )
        for i in range(N)
    ]
    enqueued: list[Job] = []
    with neoq.new(pg_clean) as nq:
        nq.on("enqueued", lambda event: enqueued.append(event.job))
        ids = nq.enqueue_many(iter(jobs))  # any iterable
        assert [int(i) for i in ids] == sorted(int(i) for i in ids) and len(set(ids)) == N
        assert [job.id for job in enqueued] == ids
        assert [job.payload for job in enqueued] == payloads
        with psycopg.connect(pg_clean, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT id::text, queue, fingerprint, payload::text, deadline, max_retries FROM neoq_jobs ORDER BY id"
            ).fetchall()
        assert [row[0] for row in rows] == ids
        for job, event_job, row in zip(jobs, enqueued, rows, strict=True):
            assert row[1] == job.queue and row[2] == event_job.fingerprint
            if job.fingerprint is not None:
                assert row[2] == job.fingerprint
            # json, not jsonb: the compact text prepare_job made, byte for byte.
            assert row[3] == neoq.job.encode_payload(job.payload)
            assert row[4] == job.deadline and row[5] == job.max_retries
        stored = nq.get_job(ids[-1])
        assert stored is not None and stored.payload == payloads[-1]


@pg
def test_large_batches_through_a_caller_connection_or_mixing_run_after_prepare_first(pg_clean: str) -> None:
    with neoq.new(pg_clean) as nq:
        with psycopg.connect(pg_clean) as conn:
            ids = nq.enqueue_many(batch("stream-tx", 200), connection=conn)
            conn.rollback()
        assert stored_rows(pg_clean) == 0
        with psycopg.connect(pg_clean) as conn:
            ids = nq.enqueue_many(batch("stream-tx", 200), connection=conn)
            conn.commit()
        assert [int(i) for i in ids] == sorted(int(i) for i in ids) and stored_rows(pg_clean) == 200
        stored = nq.get_job(ids[7])
        assert stored is not None and stored.payload == {"i": 7, "text": ODD}
        # Jobs with and without run_after: two COPYs, every job prepared first.
        mixed = [Job(queue="stream-mixed", payload={"i": i}, run_after=LATER if i % 2 else None) for i in range(300)]
        mixed[250] = Job(queue="stream-mixed", payload={"i": 250}, max_retries=-1)
        with pytest.raises(InvalidJobError, match=r"^job 250: max_retries"):
            nq.enqueue_many(mixed)
        assert stored_rows(pg_clean) == 200
        mixed[250] = Job(queue="stream-mixed", payload={"i": 250})
        ids = nq.enqueue_many(mixed)
        assert [nq.get_job(job_id).payload["i"] for job_id in ids] == list(range(300))  # type: ignore[union-attr]


class CountingMemory(MemoryBackend):
    """A user backend that overrides only ``enqueue``: ``enqueue_many`` goes through the default."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def enqueue(self, jobs: Sequence[Job], *, connection: Any = None) -> list[str]:
        self.calls.append(len(jobs))
        return super().enqueue(jobs, connection=connection)


def test_the_memory_backend_and_user_backends_keep_working_through_the_default() -> None:
    backend = CountingMemory()
    events: list[JobEvent] = []
    with neoq.new(backend=backend) as nq:
        nq.on("enqueued", events.append)
        jobs = batch("stream-memory")
        jobs[700] = Job(queue="stream-memory", payload={"bad": float("inf")})
        with pytest.raises(InvalidJobError, match=r"^job 700: "):
            nq.enqueue_many(jobs)
        assert backend.calls == [] and nq.stats() == {}
        jobs = [*batch("stream-memory"), Job(queue="stream-memory", payload={"i": 3, "text": ODD})]
        with pytest.raises(DuplicateJobError):
            nq.enqueue_many(jobs)
        assert nq.stats() == {}
        assert nq.enqueue_many([]) == []
        ids = nq.enqueue_many(job for job in batch("stream-memory"))
        assert backend.calls == [N + 1, N]
        assert [event.job.id for event in events] == ids
        assert [nq.get_job(job_id).payload["i"] for job_id in ids] == list(range(N))  # type: ignore[union-attr]


# -- the cheaper Job() and prepare_job behave as before ----------------------------------------


def test_job_init_has_the_dataclass_signature_and_behaviour() -> None:
    params = inspect.signature(Job).parameters
    fields = dataclasses.fields(Job)
    assert list(params) == [f.name for f in fields]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params.values())
    for f in fields:
        if f.default is not dataclasses.MISSING:
            assert params[f.name].default == f.default, f.name
    assert params["queue"].default is inspect.Parameter.empty
    assert fields[1].name == "payload" and fields[1].default_factory is dict
    first, second = Job(queue="q"), Job(queue="q")
    assert first.payload == {} and type(first.payload) is dict and first.payload is not second.payload
    assert first == second and repr(first) == repr(second) and hash(first.queue) == hash("q")
    full = Job(queue="q", payload={"a": 1}, max_retries=3, id="7", status=neoq.JobStatus.FAILED, retries=2)
    assert dataclasses.replace(full, queue="r") == Job(
        queue="r", payload={"a": 1}, max_retries=3, id="7", status=neoq.JobStatus.FAILED, retries=2
    )
    assert list(vars(full)) == [f.name for f in fields]
    with pytest.raises(dataclasses.FrozenInstanceError):
        full.payload = {}  # type: ignore[misc]
    with pytest.raises(TypeError, match="queue"):
        Job()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'nope'"):
        Job(queue="q", nope=1)  # type: ignore[call-arg]

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Tagged(Job):
        tag: str = "t"

    tagged = Tagged(queue="q", payload={"a": 1})
    assert tagged.tag == "t" and tagged.payload == {"a": 1} and Tagged(queue="q").payload == {}
    prepared, text = neoq.job.prepare_job(tagged)
    assert type(prepared) is Tagged and prepared.tag == "t" and text == '{"a":1}'


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"i": 1},
        {"b": True, "n": None, "f": 0.1, "big": 10**30, "neg": -1e-300, "e": 1e16},
        {"text": ODD, "ctl": "\x01\x1f\x7f", "uni": "é\u2028😀", "quote": '"'},
        {"z": 1, "a": 2},
        {"é": "clé"},
    ],
)
def test_flat_payloads_encode_as_the_json_encoder_does(payload: dict[str, Any]) -> None:
    compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    prepared, text = neoq.job.prepare_job(Job(queue="q", payload=payload))
    assert text == compact.encode(payload)
    assert prepared.payload == payload and prepared.payload is not payload
    assert prepared.fingerprint == neoq.job.fingerprint("q", payload)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_flat_payloads_refuse_what_strict_json_refuses(bad: float) -> None:
    with pytest.raises(ValueError) as expected:
        json.JSONEncoder(allow_nan=False).encode({"x": bad})
    with pytest.raises(InvalidJobError) as info:
        neoq.job.prepare_job(Job(queue="q", payload={"x": bad}))
    assert str(info.value) == f"payload is not JSON-serialisable: {expected.value}"
