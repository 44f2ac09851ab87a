"""The hardening properties, shared by tests/test_fuzz_hardening.py (memory) and
tests/test_postgres_fuzz_hardening.py (PostgreSQL, both modes).

1. Every ``Job(...)`` is either stored and read back exactly, or refused at enqueue with a
   ``NeoqError`` and nothing stored (fields: queue, payload, run_after, deadline, max_retries,
   fingerprint, over their whole range, hostile text included).
2. Whatever a handler does (return, raise any ``BaseException``, hang past its timeout) and
   whatever its backoff returns (huge, negative, NaN, infinite, raising), every job ends in a
   terminal status, or waits for a retry, or is running; no neoq thread dies (nothing reaches
   ``threading.excepthook``) and the queue's one claim loop still serves the next job.
3. No secret from a URL appears in any error, repr or log line, whatever the URL's shape.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

import neoq
from neoq import Handler, Job, JobStatus, Neoq, NeoqError
from neoq.testing import wait_for

UTC = timezone.utc
LOW = datetime(1970, 1, 1, tzinfo=UTC)
HIGH = datetime(9000, 1, 1, tzinfo=UTC)
TERMINAL = {JobStatus.PROCESSED, JobStatus.FAILED, JobStatus.CANCELLED}

# -- 1. job fields ---------------------------------------------------------------------------

zones = st.sampled_from(
    [UTC, timezone(timedelta(hours=-12)), timezone(timedelta(hours=14)), timezone(timedelta(hours=5, minutes=30))]
)
any_moment = st.one_of(
    st.none(),
    st.builds(lambda dt: dt, st.datetimes()),  # naive: refused
    st.builds(lambda dt, tz: dt.replace(tzinfo=tz), st.datetimes(), zones),
    st.builds(
        lambda dt, tz: dt.replace(tzinfo=tz),
        st.datetimes(min_value=datetime(1969, 12, 30), max_value=datetime(1970, 1, 2)),
        zones,
    ),
    st.builds(
        lambda dt, tz: dt.replace(tzinfo=tz),
        st.datetimes(min_value=datetime(8999, 12, 30), max_value=datetime(9000, 1, 2)),
        zones,
    ),
    st.sampled_from([datetime.max.replace(tzinfo=UTC), datetime.min.replace(tzinfo=UTC), LOW, HIGH]),
)
hostile_chars = st.sampled_from(["\x00", "\ud800", "\udce9", "\U0001f600", "é", "'", '"', "\\", "%s", "\n"])
hostile_text = st.lists(st.one_of(st.text(max_size=8), hostile_chars), max_size=6).map("".join)
fingerprints = st.one_of(
    st.none(), hostile_text, st.text(min_size=250, max_size=260), st.text(alphabet="0123456789abcdef", max_size=64)
)
retries_values = st.one_of(
    st.none(),
    st.integers(min_value=-3, max_value=30),
    st.integers(min_value=999_990, max_value=1_000_010),
    st.sampled_from([2**31 - 1, 2**31, 2**63, True]),
)
queues = st.one_of(st.sampled_from(["fuzz-a", "fuzz-b"]), hostile_text.map(lambda t: "fuzz-" + t))
small_payloads = st.dictionaries(
    hostile_text, st.one_of(st.none(), st.integers(), st.floats(), hostile_text), max_size=3
)


def _text_ok(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def _moment_ok(value: datetime | None) -> bool | None:
    """True: must be accepted; False: must be refused; None: either (the boundary itself)."""
    if value is None:
        return True
    if value.tzinfo is None or value.utcoffset() is None:
        return False
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        return False
    if utc in (LOW, HIGH):
        return None
    return LOW < utc < HIGH


def _payload_ok(payload: dict[str, Any]) -> bool:
    def ok(value: Any) -> bool:
        if isinstance(value, float):
            return math.isfinite(value)
        if isinstance(value, str):
            return _text_ok(value)
        if isinstance(value, dict):
            return all(isinstance(k, str) and _text_ok(k) and ok(v) for k, v in value.items())
        return True

    return ok(payload)


def expected_validity(job_fields: dict[str, Any]) -> bool | None:
    """Whether the contract says this job must be accepted (True), refused (False), or either (None)."""
    verdicts: list[bool | None] = []
    queue = job_fields["queue"]
    verdicts.append(bool(queue.strip()) and len(queue) <= 128 and _text_ok(queue))
    verdicts.append(_payload_ok(job_fields["payload"]))
    verdicts.append(_moment_ok(job_fields["run_after"]))
    verdicts.append(_moment_ok(job_fields["deadline"]))
    retries = job_fields["max_retries"]
    if retries is None:
        verdicts.append(True)
    elif isinstance(retries, bool):
        verdicts.append(None)
    else:
        verdicts.append(0 <= retries <= 1_000_000)
    fp = job_fields["fingerprint"]
    if fp is None:
        verdicts.append(True)
    elif fp == "":
        verdicts.append(None)
    else:
        verdicts.append(_text_ok(fp) and len(fp) <= 256)
    if False in verdicts:
        return False
    if None in verdicts:
        return None
    return True


job_fields = st.fixed_dictionaries(
    {
        "queue": queues,
        "payload": small_payloads,
        "run_after": any_moment,
        "deadline": any_moment,
        "max_retries": retries_values,
        "fingerprint": fingerprints,
    }
)


def check_job_fields(nq: Neoq, fields: dict[str, Any]) -> None:
    """Property 1 on one client."""
    before = nq.stats()
    verdict = expected_validity(fields)
    try:
        job = Job(**fields)
        job_id = nq.enqueue(job)
    except neoq.DuplicateJobError:
        assert verdict is not False, f"a duplicate check ran on an invalid job: {fields!r}"
        return
    except NeoqError as exc:
        assert verdict is not True, f"refused a valid job ({exc}): {fields!r}"
        assert nq.stats() == before, "a refused job stored something"
        return
    assert verdict is not False, f"accepted an invalid job: {fields!r}"
    stored = nq.get_job(job_id)
    assert stored is not None
    assert stored.queue == fields["queue"]
    assert dict(stored.payload) == fields["payload"] or _nan_free(fields["payload"]) is False
    for name in ("run_after", "deadline"):
        if fields[name] is not None:
            assert getattr(stored, name) == fields[name], name
    if fields["max_retries"] is not None:
        assert stored.max_retries == fields["max_retries"]
    if fields["fingerprint"]:
        assert stored.fingerprint == fields["fingerprint"]


def _nan_free(payload: dict[str, Any]) -> bool:
    return all(not (isinstance(v, float) and math.isnan(v)) for v in payload.values())


# -- 2. handler outcomes ------------------------------------------------------------------------


class CustomBase(BaseException):
    """A BaseException that is not one of Python's own."""


RAISABLE: list[Callable[[], BaseException]] = [
    lambda: ValueError("bad value"),
    lambda: SystemExit(3),
    lambda: KeyboardInterrupt(),
    lambda: GeneratorExit(),
    lambda: CustomBase("custom"),
    lambda: OSError("caf\udce9.txt\x00 missing"),
    lambda: RuntimeError("x" * 100_000),
]

outcomes = st.one_of(
    st.just(("return", None)),
    st.tuples(st.just("raise"), st.integers(min_value=0, max_value=len(RAISABLE) - 1)),
    st.just(("hang", None)),
)
backoffs = st.sampled_from([0.01, 1e12, 1e308, -5.0, math.nan, math.inf, "raise", timedelta(days=10**6)])


@contextmanager
def no_thread_dies() -> Iterator[list[str]]:
    """Record what reaches ``threading.excepthook`` (a thread that died of an exception)."""
    died: list[str] = []
    old = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        died.append(f"{args.thread.name if args.thread else '?'}: {args.exc_type.__name__}: {args.exc_value}")

    threading.excepthook = hook
    try:
        yield died
    finally:
        threading.excepthook = old


def check_outcomes(nq: Neoq, queue: str, plan: list[tuple[str, Any]], backoff: Any, **handler_options: Any) -> None:
    """Property 2 on one client, on a queue nobody else serves."""

    def handler(job: Job) -> Any:
        kind, arg = job.payload["plan"][min(job.attempts - 1, len(job.payload["plan"]) - 1)]
        if kind == "raise":
            raise RAISABLE[arg]()
        if kind == "hang":
            context = neoq.job_context()
            assert context is not None
            context.cancelled.wait(10)
        return None

    def delay(retries: int) -> Any:
        if backoff == "raise":
            raise RuntimeError("backoff broke")
        return backoff

    with no_thread_dies() as died:
        nq.start(
            queue,
            Handler(handler, concurrency=1, timeout=0.2, max_retries=1, backoff=delay, **handler_options),
        )
        ids = [nq.enqueue(Job(queue=queue, payload={"plan": [list(step) for step in plan], "n": i})) for i in range(2)]

        def settled() -> bool:
            now = datetime.now(UTC)
            for job_id in ids:
                job = nq.get_job(job_id)
                assert job is not None
                if job.status in TERMINAL:
                    continue
                if job.status is JobStatus.NEW and job.error and job.run_after is not None and job.run_after > now:
                    continue  # waiting for a retry
                return False
            return True

        wait_for(settled, timeout=20)
        # The one claim loop is alive: the next job runs.
        last = nq.enqueue(Job(queue=queue, payload={"plan": [["return", None]], "n": "last"}))
        wait_for(lambda: (j := nq.get_job(last)) is not None and j.status is JobStatus.PROCESSED, timeout=20)
        for job_id in ids:
            job = nq.get_job(job_id)
            assert job is not None
            if job.status is JobStatus.FAILED:
                assert job.error, f"job {job_id} failed without an error text"
    assert not died, f"neoq threads died: {died}"


# -- 3. URLs -------------------------------------------------------------------------------------

SECRET = "Hunter2Secret"
url_schemes = st.sampled_from(
    ["postgresql://", "postgres://", "postgres", "postgresql:/", "app", "", "memory://", "mysql://", "x://", "//"]
)
url_users = st.sampled_from(["", "u", "user:", "u%40x", "a@b"])
url_hosts = st.sampled_from(["127.0.0.1:1", "[::1]:1", "localhost:1", "", "@127.0.0.1:1", "127.0.0.1:notaport"])
url_tails = st.sampled_from(["", "/db", "/db?sslmode=disable", f"/db?password={SECRET}", "/a b", "?x=%zz"])


@st.composite
def secret_urls(draw: st.DrawFn) -> str:
    password = draw(st.sampled_from([SECRET, f"p@{SECRET}", f"{SECRET}@x", f"a:{SECRET}", f"{SECRET}/"]))
    return (
        draw(url_schemes)
        + draw(url_users)
        + ":"
        + password
        + "@"
        + draw(url_hosts)
        + draw(url_tails)
    )


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def check_url(url: str) -> None:
    """Property 3: whatever becomes of ``url``, no output names the secret."""
    capture = _Capture()
    logger = logging.getLogger("neoq")
    old_level = logger.level
    logger.addHandler(capture)
    logger.setLevel(logging.DEBUG)
    texts: list[str] = []
    try:
        try:
            client = neoq.new(url)
        except NeoqError as exc:
            texts += [str(exc), repr(exc), repr(exc.__cause__) if exc.__cause__ else ""]
        else:
            texts += [repr(client), repr(client.backend) if hasattr(client, "backend") else ""]
            client.shutdown()
    finally:
        logger.removeHandler(capture)
        logger.setLevel(old_level)
    texts += capture.lines
    for text in texts:
        assert SECRET not in text, f"the secret leaked for {url!r}: {text}"
