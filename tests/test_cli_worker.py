"""``neoq worker`` end to end in a subprocess: signals, graceful shutdown, exit status, logs."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator

import pytest
from cli_helpers import NeoqProcess, neoq_env


@pytest.fixture
def spawn() -> Iterator[object]:
    started: list[NeoqProcess] = []

    def start(*args: str, jobs: list[dict[str, object]], shutdown: float = 5.0) -> NeoqProcess:
        # memory:// given explicitly: the jobs come from inside the worker (cli_app.py).
        env = neoq_env(CLI_APP_JOBS=json.dumps(jobs), CLI_APP_SHUTDOWN=str(shutdown), NEOQ_URL="memory://")
        process = NeoqProcess(args or ("worker", "cli_app:make"), env=env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_first_signal_lets_the_running_job_finish_then_exits_0(spawn, signum):
    worker = spawn(jobs=[{"sleep": 1.0}])
    job_id = worker.expect("started").split()[1]
    sent = time.monotonic()
    worker.send(signum)
    worker.expect_log("finishing running jobs")
    assert worker.expect("finished") == f"finished {job_id}"
    assert worker.wait(10) == 0
    # It waited for the job, not for the 5 s shutdown timeout.
    assert time.monotonic() - sent < 4.5
    assert not any(line.startswith("cancelled") for line in worker.seen)
    log = "\n".join(worker.stderr)
    assert f"job {job_id} queue='work' attempt=1 processed in" in log
    assert "Traceback" not in log


def test_no_new_job_is_claimed_after_the_first_signal(spawn):
    # Concurrency 2: the first two start at once; the third waits and must not start after SIGTERM.
    worker = spawn(jobs=[{"sleep": 0.8, "n": 1}, {"sleep": 0.8, "n": 2}, {"sleep": 0, "n": 3}])
    worker.expect("started")
    worker.expect("started")
    worker.send(signal.SIGTERM)
    assert worker.wait(10) == 0
    assert sum(line.startswith("finished") for line in worker.seen) == 2, worker.describe()
    assert sum(line.startswith("started") for line in worker.seen) == 2


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_second_signal_exits_at_once(spawn, signum, status):
    worker = spawn(jobs=[{"sleep": 60, "stubborn": True}], shutdown=60)
    worker.expect("started")
    worker.send(signum)
    worker.expect_log("finishing running jobs")
    sent = time.monotonic()
    worker.send(signum)
    assert worker.wait(5) == status
    assert time.monotonic() - sent < 3
    assert any("exiting at once" in line for line in worker.stderr)
    assert not any("Traceback" in line for line in worker.stderr)


def test_shutdown_timeout_cancels_a_cooperative_job_and_exits_0(spawn):
    worker = spawn(jobs=[{"sleep": 60}], shutdown=0.5)
    job_id = worker.expect("started").split()[1]
    worker.send(signal.SIGTERM)
    assert worker.expect("cancelled", timeout=5) == f"cancelled {job_id}"
    assert worker.wait(10) == 0
    assert any(f"job {job_id} queue='work' attempt=1 interrupted by shutdown" in line for line in worker.stderr)


def test_a_handler_that_ignores_cancellation_does_not_keep_the_process_alive(spawn):
    worker = spawn(jobs=[{"sleep": 60, "stubborn": True}], shutdown=0.3)
    worker.expect("started")
    sent = time.monotonic()
    worker.send(signal.SIGTERM)
    assert worker.wait(10) == 0
    # 0.3 s grace + 1 s cancel grace + 1 s for stuck threads, with slack for 2 busy cores.
    assert time.monotonic() - sent < 6
    assert any("ignored cancellation" in line for line in worker.stderr)


def test_json_logs_have_one_object_per_line_with_the_job_fields(spawn):
    worker = spawn("--json", "worker", "cli_app:make", jobs=[{"sleep": 0}, {"fail": True}])
    worker.expect("finished")
    worker.expect_log('"outcome": "retry"')
    worker.send(signal.SIGTERM)
    assert worker.wait(10) == 0
    records = [json.loads(line) for line in worker.stderr if line.startswith("{")]
    assert records and len(records) == len([line for line in worker.stderr if line.strip()])
    processed = [r for r in records if r.get("outcome") == "processed"]
    assert len(processed) == 1
    assert processed[0]["queue"] == "work" and processed[0]["attempt"] == 1 and processed[0]["level"] == "INFO"
    assert isinstance(processed[0]["duration_ms"], float) and processed[0]["job_id"]
    retry = next(r for r in records if r.get("outcome") == "retry")
    assert retry["level"] == "WARNING" and retry["error"] == "RuntimeError: asked to fail"


def test_worker_serves_only_the_queues_given(spawn):
    worker = spawn("worker", "cli_app:make", "--queue", "other", jobs=[{"sleep": 0}])
    worker.expect_log("serving other;")
    worker.send(signal.SIGTERM)
    assert worker.wait(10) == 0
    assert not worker.seen  # the job on queue "work" never ran


def test_worker_uses_a_client_instance_and_url(spawn):
    env = neoq_env(CLI_APP_EAGER="1", CLI_APP_JOBS=json.dumps([{"sleep": 0}]))
    worker = NeoqProcess(["--url", "memory://", "worker", "cli_app:nq"], env=env)
    try:
        worker.expect("finished")
        worker.expect_log("on MemoryBackend()")
        worker.send(signal.SIGTERM)
        assert worker.wait(10) == 0
    finally:
        worker.close()
