"""A client opened before ``os.fork()`` (an app server that loads the app, then forks its workers:
gunicorn ``--preload``) works in the child on connections of the child's own. The child cannot
reach the parent's sessions, not even by closing the connections it inherited, which sends the
server a Terminate message (the garbage collector does that at the latest when the child exits).
"""

from __future__ import annotations

import gc
import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from pgfixtures import unique_name, wait_until

import neoq
from neoq import Job, JobStatus
from neoq.backends.postgres import forking

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
    # Python 3.12+ warns about forking a process with threads: the case these tests are about.
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]


def sessions(url: str, application_name: str) -> set[int]:
    """The backend pids of the sessions with ``application_name``."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", [application_name])
        return {int(pid) for (pid,) in rows.fetchall()}


def run_in_child(work: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Fork; return what ``work()`` returned in the child (through a pipe, as JSON).

    The child never returns into pytest: it leaves with ``os._exit``. A child still running after
    ``timeout`` seconds is killed and the test fails.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        os.close(read_fd)
        try:
            result = {"ok": work()}
        except BaseException as exc:
            result = {"error": f"{type(exc).__name__}: {exc}"}
        try:
            with os.fdopen(write_fd, "w") as out:
                json.dump(result, out)
        finally:
            os._exit(0)
    os.close(write_fd)
    end = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > end:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(read_fd)
            pytest.fail(f"the forked child did not finish within {timeout} s")
        time.sleep(0.01)  # polling the child's exit, with a deadline
    with os.fdopen(read_fd) as inp:
        text = inp.read()
    assert os.waitstatus_to_exitcode(status) == 0
    reply = json.loads(text)
    assert "error" not in reply, f"in the child: {reply['error']}"
    return reply["ok"]


def own_sessions() -> set[int]:
    """The backend pids of the open connections this process made itself (white-box: ``forking``)."""
    pids = set()
    for conn in list(forking._connections):
        if not conn.closed:
            pids.add(conn.pgconn.backend_pid)
    return pids


def pools_ready(nq: neoq.Neoq) -> None:
    """Wait until the client's pools have opened their connections (they open in the background).

    Forking while another thread is inside libpq's connect could leave the child a lock held
    by a thread it does not have: the hazard of any fork in a threaded process, not what these
    tests are about.
    """
    pools = nq.backend._pools  # type: ignore[attr-defined]
    pools.work.wait(10)
    pools.aux.wait(10)


def close_every_connection() -> None:
    """What the garbage collector does to every connection when a process exits, done at once."""
    for obj in gc.get_objects():
        if issubclass(type(obj), psycopg.Connection):  # type(): no lazy proxy is asked for its class
            obj.close()


def test_a_client_opened_before_a_fork_works_in_the_child_and_the_parent_keeps_its_sessions(
    pg_clean: str,
) -> None:
    queue = unique_name("fork")
    app = unique_name("neoq-fork")
    with neoq.new(pg_clean, application_name=app) as nq:
        # The parent's client is open and holds sessions, one of them kept for the next enqueue.
        first = nq.enqueue(Job(queue=queue, payload={"from": "parent", "n": 1}))
        pools_ready(nq)
        parent = own_sessions()
        assert parent

        def child() -> dict[str, Any]:
            job_id = nq.enqueue(Job(queue=queue, payload={"from": "child"}))
            job = nq.get_job(job_id)
            assert job is not None
            own = own_sessions()
            close_every_connection()
            return {"id": job_id, "status": job.status.value, "own_sessions": sorted(own)}

        result = run_in_child(child)

        assert result["status"] == JobStatus.NEW.value
        child_sessions = set(result["own_sessions"])
        assert child_sessions, "the child enqueued without opening a session of its own"
        assert not child_sessions & parent, "the child used sessions of the parent"
        assert parent <= sessions(pg_clean, app), "the child ended sessions of the parent"
        # The parent's client goes on working on its own sessions.
        second = nq.enqueue(Job(queue=queue, payload={"from": "parent", "n": 2}))
        stored = nq.get_job(result["id"])
        assert stored is not None and stored.payload == {"from": "child"}
        newest_first = sorted([first, result["id"], second], key=int, reverse=True)
        assert [j.id for j in nq.list_jobs(queue=queue)] == newest_first
        # The child's sessions ended with it.
        wait_until(lambda: not sessions(pg_clean, app) & child_sessions, 10, "the child's sessions end with it")
    # The client closed every connection; the server's backends leave pg_stat_activity as they exit,
    # which on a loaded machine can lag the close by a moment.
    wait_until(lambda: sessions(pg_clean, app) == set(), 10, "the parent's sessions end at shutdown")


@pytest.mark.parametrize("mode", ["transaction", "lease"])
def test_a_forked_child_runs_jobs_with_a_client_opened_before_the_fork(pg_clean: str, mode: str) -> None:
    queue = unique_name(f"fork-run-{mode}")
    with neoq.new(pg_clean, application_name=unique_name("neoq-fork-run"), mode=mode) as nq:
        ids = nq.enqueue_many([Job(queue=queue, payload={"n": n}) for n in range(5)])
        pools_ready(nq)
        parent = own_sessions()

        def child() -> dict[str, Any]:
            ran: list[str] = []
            nq.handler(queue)(lambda job: ran.append(job.id or ""))
            attempts = nq.drain(timeout=20)
            own = own_sessions()
            nq.shutdown()
            return {"attempts": attempts, "ran": sorted(ran, key=int), "own_sessions": sorted(own)}

        result = run_in_child(child)

        assert result["attempts"] == 5 and result["ran"] == sorted(ids, key=int)
        assert result["own_sessions"] and not set(result["own_sessions"]) & parent
        assert all(job.status is JobStatus.PROCESSED for job in nq.list_jobs(queue=queue))
        # The parent still works on its own sessions.
        nq.enqueue(Job(queue=queue, payload={"from": "parent"}))


def test_a_client_closed_before_the_fork_stays_closed_in_the_child(pg_clean: str) -> None:
    nq = neoq.new(pg_clean, application_name=unique_name("neoq-fork-closed"))
    nq.shutdown()

    def child() -> str:
        try:
            nq.enqueue(Job(queue="q", payload={}))
        except neoq.NeoqError as exc:
            return type(exc).__name__
        return "enqueued"

    assert run_in_child(child) != "enqueued"
