"""neoq.new(), the client's own checks, drain mode, run() and signals."""

from __future__ import annotations

import logging
import os
import signal
import threading
from datetime import datetime, timedelta, timezone

import pytest

import neoq
from neoq import ConfigurationError, Handler, InvalidJobError, Job, JobStatus
from neoq.backends import Backend, MemoryBackend
from neoq.testing import neoq_threads, wait_for


def test_new_defaults_to_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEOQ_URL", raising=False)
    with neoq.new() as nq:
        assert isinstance(nq.backend, MemoryBackend)
    with neoq.new("memory://") as nq:
        assert isinstance(nq.backend, MemoryBackend)
    monkeypatch.setenv("NEOQ_URL", "memory://")
    with neoq.new() as nq:
        assert isinstance(nq.backend, MemoryBackend)


def test_memory_clients_are_private() -> None:
    with neoq.new() as a, neoq.new() as b:
        job_id = a.enqueue(Job(queue="q", payload={}))
        b.enqueue(Job(queue="q", payload={}))  # no duplicate: another store
        assert a.get_job(job_id) is not None
        assert a.stats() == b.stats() == {"q": {"new": 1, "running": 0, "processed": 0, "failed": 0, "cancelled": 0}}


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("nosuch://x",), {}, "unknown backend URL scheme nosuch://; accepted: memory://, postgresql://"),
        (("nonsense",), {}, "does not start with scheme://"),
        (("memory://",), {"backend": MemoryBackend()}, "either a url or a backend"),
        ((), {"backend": object()}, "neoq.backends.Backend"),
        (("memory://",), {"pool_max_size": 3}, "takes no backend options"),
        ((), {"backend": MemoryBackend(), "pool_max_size": 3}, "backend's own constructor"),
        ((), {"shutdown_timeout": -1}, "shutdown_timeout"),
        ((), {"logger": "nope"}, "logging.Logger"),
        ((), {"recovery_callback": 5}, "recovery_callback"),
    ],
)
def test_new_configuration_errors(args: tuple[object, ...], kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        neoq.new(*args, **kwargs)  # type: ignore[arg-type]


IMPLICIT_MEMORY_WARNING = "private in-memory store (no URL given, NEOQ_URL unset)"


def implicit_memory_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if IMPLICIT_MEMORY_WARNING in r.getMessage()]


def test_enqueueing_into_an_implicit_memory_store_warns_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A web process whose NEOQ_URL was forgotten enqueues where no worker will ever look."""
    monkeypatch.delenv("NEOQ_URL", raising=False)
    with neoq.new() as nq:

        @nq.handler("emails")  # registered, as a web app does, but run by no one here
        def send(job: Job) -> None:
            pass

        nq.enqueue(Job(queue="emails", payload={"n": 1}))
        nq.enqueue(Job(queue="emails", payload={"n": 2}))
        nq.enqueue_many([Job(queue="other", payload={"n": 3})])
    (warning,) = implicit_memory_warnings(caplog)
    assert [r.levelno for r in caplog.records if r.getMessage() == warning] == [logging.WARNING]
    assert "NEOQ_URL" in warning and "memory:// explicitly" in warning
    with neoq.new() as nq:
        nq.enqueue_many([Job(queue="q", payload={"n": n}) for n in range(3)])
    assert len(implicit_memory_warnings(caplog)) == 2  # once per client


def test_no_implicit_memory_warning_when_the_store_was_chosen_or_runs_its_jobs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("NEOQ_URL", raising=False)
    with neoq.new("memory://") as nq, neoq.new(backend=MemoryBackend()) as other:
        nq.enqueue(Job(queue="q"))
        other.enqueue(Job(queue="q"))
    with neoq.new() as nq:  # the quickstart: this process runs the queue itself
        nq.start("q", lambda job: None)
        nq.enqueue(Job(queue="q"))
    monkeypatch.setenv("NEOQ_URL", "memory://")
    with neoq.new() as nq:
        nq.enqueue(Job(queue="q"))
    assert implicit_memory_warnings(caplog) == []


def test_unknown_env_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEOQ_URL", "nosuch://nope")
    with pytest.raises(ConfigurationError, match="nosuch://"):
        neoq.new()


def test_custom_backend_subclass() -> None:
    class Tagged(MemoryBackend):
        pass

    with neoq.new(backend=Tagged()) as nq:
        assert isinstance(nq.backend, Backend)
        assert nq.enqueue(Job(queue="q")) is not None


def test_start_errors() -> None:
    with neoq.new() as nq:
        nq.start("q", lambda job: None)
        with pytest.raises(ConfigurationError, match="already has a handler"):
            nq.start("q", lambda job: None)
        with pytest.raises(ConfigurationError, match="already has a handler"):
            nq.handler("q")(lambda job: None)
        with pytest.raises(ConfigurationError):
            nq.start("", lambda job: None)
        with pytest.raises(ConfigurationError, match="callable"):
            nq.start("other", "nope")  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="concurrency"):
            nq.start("other", lambda job: None, concurrency=0)
        with pytest.raises(ConfigurationError, match="not both"):
            nq.start("other", Handler(lambda job: None), concurrency=2)
        with pytest.raises(ConfigurationError, match="unknown status"):
            nq.list_jobs(status="done")
        with pytest.raises(InvalidJobError):
            nq.enqueue_many(Job(queue="q"))  # type: ignore[arg-type]


def test_client_refuses_work_after_shutdown() -> None:
    nq = neoq.new()
    job_id = nq.enqueue(Job(queue="q"))
    nq.shutdown()
    assert nq.closed
    with pytest.raises(ConfigurationError, match="shut down"):
        nq.enqueue(Job(queue="q", payload={"n": 1}))
    with pytest.raises(ConfigurationError, match="shut down"):
        nq.start("q", lambda job: None)
    assert nq.get_job(job_id) is not None  # reading what is stored still works on memory


def test_drain_runs_registered_handlers_until_idle() -> None:
    with neoq.new() as nq:
        done: list[int] = []

        @nq.handler("drain", concurrency=3, backoff=lambda n: 0)
        def work(job: Job) -> None:
            done.append(job.payload["n"])
            if job.payload["n"] == 0 and job.retries == 0:
                raise ValueError("retried now, within the same drain")

        def fail(job: Job) -> None:
            raise ValueError("retry is an hour away")

        assert work is not None
        nq.handler("never_due_backoff", backoff=lambda n: 3600)(fail)
        ids = nq.enqueue_many([Job(queue="drain", payload={"n": n}) for n in range(20)])
        in_an_hour = datetime.now(timezone.utc) + timedelta(hours=1)
        later = nq.enqueue(Job(queue="drain", payload={"n": 99}, run_after=in_an_hour))
        slow = nq.enqueue(Job(queue="never_due_backoff", payload={}))
        ran = nq.drain(timeout=30)
        assert neoq_threads() == []
        assert ran == 22  # 20 jobs, one retry of job 0, one failing attempt
        assert sorted(done) == [0, *range(20)]
        assert all(nq.get_job(i).status is JobStatus.PROCESSED for i in ids)  # type: ignore[union-attr]
        assert nq.get_job(later).status is JobStatus.NEW  # type: ignore[union-attr]
        waiting = nq.get_job(slow)
        assert waiting is not None and waiting.status is JobStatus.NEW and waiting.retries == 1
        assert nq.drain() == 0


def test_drain_timeout_stops_claiming() -> None:
    with neoq.new() as nq:
        nq.handler("slow", concurrency=1)(lambda job: threading.Event().wait(0.2))
        nq.enqueue_many([Job(queue="slow", payload={"n": n}) for n in range(50)])
        ran = nq.drain(timeout=0.3)
        assert 1 <= ran < 50
        assert neoq_threads() == []


def test_run_blocks_until_stop() -> None:
    nq = neoq.new()
    seen = threading.Event()
    nq.handler("r")(lambda job: seen.set())
    runner = threading.Thread(target=nq.run, name="test-runner")
    runner.start()
    nq.enqueue(Job(queue="r"))
    assert seen.wait(5)
    nq.stop()
    runner.join(10)
    assert not runner.is_alive() and nq.closed
    assert neoq_threads() == []


def test_run_rejects_unknown_queue() -> None:
    with neoq.new() as nq, pytest.raises(ConfigurationError, match="no handler"):
        nq.run(["missing"])


def test_run_handles_sigterm_in_main_thread() -> None:
    nq = neoq.new()
    started = threading.Event()

    def handler(job: Job) -> None:
        started.set()
        threading.Event().wait(0.3)

    nq.handler("sig")(handler)
    job_id = nq.enqueue(Job(queue="sig"))
    previous = signal.getsignal(signal.SIGTERM)
    killer = threading.Thread(target=lambda: started.wait(5) and os.kill(os.getpid(), signal.SIGTERM))
    killer.start()
    nq.run()  # returns after the graceful shutdown
    killer.join()
    assert signal.getsignal(signal.SIGTERM) is previous
    assert nq.get_job(job_id).status is JobStatus.PROCESSED  # type: ignore[union-attr]


def test_second_stop_cuts_grace_short() -> None:
    nq = neoq.new(shutdown_timeout=30)
    entered = threading.Event()

    def handler(job: Job) -> None:
        entered.set()
        context = neoq.job_context()
        assert context is not None
        context.cancelled.wait(30)

    nq.handler("stubborn")(handler)
    runner = threading.Thread(target=nq.run, kwargs={"install_signal_handlers": False}, name="test-runner")
    runner.start()
    job_id = nq.enqueue(Job(queue="stubborn"))
    assert entered.wait(5)
    nq.stop()
    wait_for(lambda: nq.closed, 5)
    nq.stop()  # the "second signal"
    runner.join(10)
    assert not runner.is_alive()
    assert nq.get_job(job_id).status is JobStatus.NEW  # type: ignore[union-attr]
