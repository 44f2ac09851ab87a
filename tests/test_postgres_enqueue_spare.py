"""A single ``enqueue`` on PostgreSQL keeps the aux connection it used for the next one
(``_Pools.spare``) for up to ``_SPARE_FOR`` seconds, then gives it back to the pool.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
from pgfixtures import connections_of, unique_name, wait_until

import neoq
from neoq import BackendConnectionError, DuplicateJobError, Job
from neoq.backends.postgres import pools as pg_pools

pg = pytest.mark.postgres


def backend_pid(nq: Any) -> int:
    """The server process of the connection the client keeps for single enqueues."""
    spare = nq.backend._require().spare
    assert len(spare) == 1
    return int(spare[0][0].info.backend_pid)


@pg
def test_the_next_enqueue_reuses_the_kept_connection(pg_clean: str) -> None:
    with neoq.new(pg_clean) as nq:
        nq.enqueue(Job(queue="spare", payload={"i": 0}))
        pid = backend_pid(nq)
        for i in range(1, 20):
            nq.enqueue(Job(queue="spare", payload={"i": i}))
            assert backend_pid(nq) == pid
        assert nq.stats()["spare"]["new"] == 20
        # A duplicate leaves the connection idle: it is kept, and the next enqueue works on it.
        with pytest.raises(DuplicateJobError):
            nq.enqueue(Job(queue="spare", payload={"i": 3}))
        assert backend_pid(nq) == pid
        nq.enqueue(Job(queue="spare", payload={"i": 20}))
        assert backend_pid(nq) == pid


@pg
def test_the_kept_connection_goes_back_to_the_pool_when_its_time_is_up(
    pg_clean: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with neoq.new(pg_clean) as nq:
        monkeypatch.setattr(pg_pools, "_SPARE_FOR", 0.0)
        nq.enqueue(Job(queue="spare-time", payload={"i": 0}))
        pools = nq.backend._require()
        assert pools.spare == []
        assert pools.aux.get_stats()["pool_available"] >= 1
        # Kept, then found too old by the next enqueue: that one checks out from the pool.
        monkeypatch.setattr(pg_pools, "_SPARE_FOR", 60.0)
        nq.enqueue(Job(queue="spare-time", payload={"i": 1}))
        conn, _ = pools.spare[0]
        pools.spare[0] = (conn, time.monotonic() - 1.0)
        nq.enqueue(Job(queue="spare-time", payload={"i": 2}))
        # Given back, then checked out again (maybe the same connection): its time starts anew.
        assert len(pools.spare) == 1
        assert pools.spare[0][1] > time.monotonic() + 30.0
        assert nq.stats()["spare-time"]["new"] == 3


@pg
def test_a_kept_connection_the_server_closed_fails_one_enqueue_not_the_next(pg_clean: str) -> None:
    with neoq.new(pg_clean) as nq:
        nq.enqueue(Job(queue="spare-lost", payload={"i": 0}))
        pid = backend_pid(nq)
        with psycopg.connect(pg_clean, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        # As with a pooled connection the server closed: this enqueue fails, with the error that
        # says so, and stores nothing; the broken connection is not kept.
        with pytest.raises(BackendConnectionError):
            nq.enqueue(Job(queue="spare-lost", payload={"i": 1}))
        assert nq.backend._require().spare == []
        nq.enqueue(Job(queue="spare-lost", payload={"i": 1}))
        assert backend_pid(nq) != pid
        assert nq.stats()["spare-lost"]["new"] == 2


@pg
def test_concurrent_single_enqueues_keep_at_most_one_connection(pg_clean: str) -> None:
    name = unique_name()
    errors: list[BaseException] = []
    with neoq.new(pg_clean, application_name=name) as nq:
        barrier = threading.Barrier(8)

        def produce(k: int) -> None:
            try:
                barrier.wait(10)
                for i in range(40):
                    nq.enqueue(Job(queue="spare-many", payload={"k": k, "i": i}))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=produce, args=(k,)) for k in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        assert nq.stats()["spare-many"]["new"] == 320
        pools = nq.backend._require()
        assert len(pools.spare) <= 1
        # Every other aux connection is back in the pool, within its size.
        stats = pools.aux.get_stats()
        assert stats["pool_size"] <= pg_pools._AUX_POOL_MAX
        assert stats["pool_size"] - stats["pool_available"] == len(pools.spare)
    wait_until(lambda: connections_of(pg_clean, name) == 0, 5, "every connection of the client is closed")


@pg
def test_shutdown_closes_the_kept_connection(pg_clean: str) -> None:
    name = unique_name()
    nq = neoq.new(pg_clean, application_name=name)
    nq.enqueue(Job(queue="spare-close", payload={}))
    assert len(nq.backend._require().spare) == 1
    nq.shutdown()
    wait_until(lambda: connections_of(pg_clean, name) == 0, 5, "every connection of the client is closed")
