"""Times on PostgreSQL do not depend on any session TimeZone (issue 15, defect 3).

Every session neoq opens runs in UTC, whatever the server's, the database's, the URL's
(``options=-ctimezone=...``) or the client's (``PGTZ``) TimeZone says. Before, a time stored at
the ends of what Python holds (``datetime.max`` and ``datetime.min``, which an older neoq accepted)
read as year 10000 or year 0 in such a session and broke every claim of its queue, ``get_job``,
``list_jobs`` and ``drain``. Times within the range neoq accepts go in and come back exactly,
also through a caller's connection in another zone.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from urllib.parse import quote

import psycopg
import pytest
from pgfixtures import NEOQ_TABLES, _create_database, _drop_database, with_database
from psycopg import sql

import neoq
from neoq import Job, JobStatus
from neoq.backends.postgres import PostgresBackend

pytestmark = pytest.mark.postgres

#: The ends of the range neoq accepts (API.md: limits on input).
EARLIEST = datetime(1970, 1, 1, 0, 0, 1, tzinfo=timezone.utc)
LATEST = datetime(8999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)

#: Where the session's TimeZone comes from, and the zone.
SETTINGS = [
    ("PGTZ", "Europe/Berlin"),
    ("PGTZ", "America/New_York"),
    ("url", "Europe/Berlin"),
    ("url", "America/New_York"),
    ("database", "America/New_York"),
]


@pytest.fixture(scope="module", params=SETTINGS, ids=[f"{where}={zone}" for where, zone in SETTINGS])
def zoned_database(request: pytest.FixtureRequest, pg_server_url: str) -> Iterator[tuple[str, str, str]]:
    """A database with neoq's schema for each setting: (its URL, where the TimeZone comes from, the zone)."""
    where, zone = request.param
    name = _create_database(pg_server_url, "neoq_tz")
    url = with_database(pg_server_url, name)
    try:
        PostgresBackend(url).migrate()
        if where == "url":
            url = f"{url}?options={quote(f'-ctimezone={zone}')}"
        elif where == "database":
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(sql.SQL("ALTER DATABASE {} SET TimeZone = {}").format(sql.Identifier(name), zone))
        yield url, where, zone
    finally:
        _drop_database(pg_server_url, name)


@pytest.fixture
def zoned_url(zoned_database: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """The URL of an empty neoq schema whose sessions would be in another TimeZone."""
    url, where, zone = zoned_database
    if where == "PGTZ":
        monkeypatch.setenv("PGTZ", zone)  # libpq sends it after the connection's options
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SHOW TimeZone").fetchone() == (zone,)  # what a session gets without neoq's care
        conn.execute("TRUNCATE " + ", ".join(NEOQ_TABLES))
    return url


class Seen:
    """A handler that records the jobs it ran."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()

    def __call__(self, job: Job) -> None:
        with self.lock:
            self.jobs[job.id or ""] = job


@pytest.mark.parametrize("mode", ["transaction", "lease"])
def test_times_an_older_neoq_stored_at_the_ends_of_python_are_read_in_any_session_timezone(
    zoned_url: str, mode: str
) -> None:
    extreme_min = datetime.min.replace(tzinfo=timezone.utc)
    extreme_max = datetime.max.replace(tzinfo=timezone.utc)
    seen = Seen()
    with neoq.new(zoned_url, mode=mode) as nq:
        job_id = nq.enqueue(Job(queue="ends", payload={}))
        # What an older neoq stored for run_after=datetime.min and deadline=datetime.max (aware):
        # now refused at enqueue, still to be read where they are stored.
        with psycopg.connect(zoned_url, autocommit=True) as conn:
            conn.execute("SET TimeZone TO 'UTC'")
            conn.execute(
                "UPDATE neoq_jobs SET run_after = %s, deadline = %s WHERE id = %s",
                [extreme_min, extreme_max, int(job_id)],
            )
        job = nq.get_job(job_id)
        assert job is not None and (job.run_after, job.deadline) == (extreme_min, extreme_max)
        assert [(j.id, j.run_after, j.deadline) for j in nq.list_jobs()] == [(job_id, extreme_min, extreme_max)]
        nq.handler("ends")(seen)
        assert nq.drain(timeout=10) == 1
        assert nq.get_job(job_id).status is JobStatus.PROCESSED  # type: ignore[union-attr]
    ran = seen.jobs[job_id]
    assert (ran.run_after, ran.deadline) == (extreme_min, extreme_max)


@pytest.mark.parametrize("mode", ["transaction", "lease"])
def test_times_at_the_ends_of_the_accepted_range_go_in_and_come_back_exactly(zoned_url: str, mode: str) -> None:
    seen = Seen()
    with neoq.new(zoned_url, mode=mode) as nq:

        def job(n: int) -> Job:
            return Job(queue="range", payload={"n": n}, run_after=EARLIEST, deadline=LATEST)

        ids = [nq.enqueue(job(0))]  # one job: a prepared statement, parameters as text
        ids += nq.enqueue_many([job(1), job(2)])  # a batch: one INSERT of arrays
        ids += nq.enqueue_many([job(n) for n in range(3, 70)])  # a large batch: COPY
        # Through a caller's connection whose session is in yet another zone, in its transaction.
        with psycopg.connect(zoned_url) as conn:
            conn.execute("SET TimeZone TO 'Asia/Kolkata'")
            ids.append(nq.enqueue(job(70), connection=conn))
            ids += nq.enqueue_many([job(71), job(72)], connection=conn)
            conn.commit()
        for job_id in ids:
            stored = nq.get_job(job_id)
            assert stored is not None and (stored.run_after, stored.deadline) == (EARLIEST, LATEST), job_id
        listed = nq.list_jobs(queue="range", limit=100)
        assert len(listed) == 73 and {(j.run_after, j.deadline) for j in listed} == {(EARLIEST, LATEST)}
        nq.handler("range")(seen)
        assert nq.drain(timeout=20) == 73
        assert nq.stats()["range"]["processed"] == 73
    assert sorted(seen.jobs) == sorted(ids)
    assert {(j.run_after, j.deadline) for j in seen.jobs.values()} == {(EARLIEST, LATEST)}
