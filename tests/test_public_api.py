"""The public names of API.md exist, and __all__ tells the truth."""

from __future__ import annotations

import inspect
import subprocess
import sys

import neoq
import neoq.backends
import neoq.errors

API_NAMES = {
    "new", "Neoq", "Job", "JobStatus", "Handler", "JobContext", "current_job", "job_context",
    "default_backoff", "exponential_backoff", "DEFAULT_CONCURRENCY", "DEFAULT_TIMEOUT",
    "DEFAULT_MAX_RETRIES", "DEFAULT_SHUTDOWN_TIMEOUT", "NeoqError", "ConfigurationError", "CronSpecError",
    "InvalidJobError", "DuplicateJobError", "JobNotFoundError", "JobTimeoutError", "DeadlineExceededError",
    "BackendError", "BackendConnectionError", "backends",
}
CLIENT_METHODS = {
    "enqueue", "enqueue_many", "start", "handler", "run", "drain", "shutdown", "start_cron", "get_job",
    "list_jobs", "retry_job", "cancel_job", "stats", "__enter__", "__exit__",
}


def test_all_is_exact_and_importable() -> None:
    assert set(neoq.__all__) >= API_NAMES
    for name in neoq.__all__:
        assert hasattr(neoq, name), name
    public = {
        name
        for name in dir(neoq)
        if not name.startswith("_") and name != "annotations" and not inspect.ismodule(getattr(neoq, name))
    }
    assert public - set(neoq.__all__) == set()


def test_client_methods() -> None:
    for name in CLIENT_METHODS:
        assert callable(getattr(neoq.Neoq, name)), name


def test_error_tree() -> None:
    e = neoq
    for cls in (e.ConfigurationError, e.InvalidJobError, e.DuplicateJobError, e.JobNotFoundError,
                e.JobTimeoutError, e.DeadlineExceededError, e.BackendError):
        assert issubclass(cls, e.NeoqError)
    assert issubclass(e.CronSpecError, e.ConfigurationError)
    assert issubclass(e.BackendConnectionError, e.BackendError)
    assert e.DuplicateJobError("x", "42").job_id == "42"
    assert set(neoq.errors.__all__) == {n for n in dir(neoq.errors) if n.endswith("Error")}


def test_defaults() -> None:
    assert neoq.DEFAULT_TIMEOUT == 30.0
    assert neoq.DEFAULT_MAX_RETRIES == 25
    assert neoq.DEFAULT_SHUTDOWN_TIMEOUT == 30.0
    assert neoq.DEFAULT_CONCURRENCY >= 1


def test_import_needs_no_extras() -> None:
    code = (
        "import sys; sys.modules['psycopg'] = None; sys.modules['psycopg_pool'] = None\n"
        "import neoq\n"
        "with neoq.new() as nq: pass\n"
        "assert 'apscheduler' not in sys.modules\n"
        "try:\n    neoq.new('postgresql://127.0.0.1/x')\n"
        "except neoq.ConfigurationError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pip install neoq[postgres]" in out.stdout


def test_py_typed_is_shipped() -> None:
    from importlib.resources import files

    assert files("neoq").joinpath("py.typed").is_file()
