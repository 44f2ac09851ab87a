"""A reference neoq backend on one SQLite file that several processes share: ``refsqlite:///path/to/jobs.db``.

It shows the contract of ``neoq.backends.Backend`` (docs/backends.md) and passes ``neoq.testing.BackendSuite``
and ``SharedStoreSuite`` (tests/test_reference_backend.py). It is documentation, not a product:

- A claim is a lease: ``owner`` and ``lease_until`` set on the row, with ``attempts`` counted. Nothing renews
  it, so a handler running longer than ``lease`` seconds may run twice. A real store without a held transaction
  renews its leases and batches its writes with the lease engine (neoq/backends/lease/).
- It cannot notify: ``capabilities`` is ``{"shared"}``, and neoq.waiting polls every ``poll_interval`` seconds.
- One connection per backend, behind a lock; SQLite's WAL lets processes read while one writes.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from datetime import datetime, timedelta, timezone

from neoq.backends import Backend, Claim
from neoq.errors import BackendError, ConfigurationError, DuplicateJobError, JobNotFoundError
from neoq.job import Job, JobStatus, canonical_json
from neoq.waiting import Look

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL,
  fingerprint TEXT NOT NULL, payload TEXT NOT NULL, status TEXT NOT NULL, run_after INTEGER NOT NULL,
  deadline INTEGER, max_retries INTEGER, retries INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
  error TEXT, created_at INTEGER NOT NULL, ran_at INTEGER, finished_at INTEGER,
  owner TEXT, lease_until INTEGER, cancel INTEGER NOT NULL DEFAULT 0);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_unique ON jobs (queue, fingerprint) WHERE status IN ('new', 'running');
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (queue, status, run_after, id);
CREATE TABLE IF NOT EXISTS ticks (key TEXT NOT NULL, tick INTEGER NOT NULL, PRIMARY KEY (key, tick));
"""
# A running job whose lease ran out reads NEW: its holder is gone, and the next look takes it.
STATE = "CASE WHEN status = 'running' AND lease_until <= :now THEN 'new' ELSE status END"
DUE = "(status = 'new' AND run_after <= :now) OR (status = 'running' AND lease_until <= :now)"


def micros(value: datetime) -> int:  # times are stored as integer microseconds since 1970: exact, ordered
    return (value - EPOCH) // timedelta(microseconds=1)


def when(value: int | None) -> datetime | None:
    return None if value is None else EPOCH + timedelta(microseconds=value)


class ReferenceBackend(Backend):
    capabilities = frozenset({"shared"})  # a file that processes share; no "notify": the waiting polls
    needs_release = False  # a claim holds no connection

    def __init__(self, path: str, *, lease: float = 30.0, poll_interval: float = 0.05) -> None:
        self.path, self.lease, self.poll_interval = path, lease, poll_interval
        self.owner = uuid.uuid4().hex  # this backend's name on the rows it claims
        self._lock, self._db, self._held = threading.Lock(), None, set()
        self._stop, self._watcher = threading.Event(), None

    @classmethod
    def from_url(cls, url, *, clock=None, **options):
        path = url.split("://", 1)[1]
        if not path or set(options) - {"lease", "poll_interval"}:
            raise ConfigurationError("refsqlite://PATH takes a file path and the options lease, poll_interval")
        return cls(path, **options)

    def open(self) -> None:
        with self._lock:
            if self._db is None:
                self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
                self._db.row_factory = sqlite3.Row
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.executescript(SCHEMA)
                self._stop.clear()
                self._watcher = threading.Thread(target=self._watch_cancels, name="neoq-refsqlite-cancels", daemon=True)
                self._watcher.start()

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join()
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
        self.reset_waiting()

    def _run(self, work, *args, write=True):
        """``work(db, now, *args)`` in one transaction (``BEGIN IMMEDIATE``: one writer across processes)."""
        with self._lock:
            if self._db is None:
                raise BackendError("the backend is not open")
            try:
                self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    result = work(self._db, micros(datetime.now(timezone.utc)), *args)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                return result
            except sqlite3.Error as exc:
                raise BackendError(f"SQLite: {exc}") from exc

    def _job(self, row: sqlite3.Row) -> Job:
        return Job(queue=row["queue"], payload=json.loads(row["payload"]), run_after=when(row["run_after"]),
                   deadline=when(row["deadline"]), max_retries=row["max_retries"], fingerprint=row["fingerprint"],
                   id=str(row["id"]), status=JobStatus(row["state"]), retries=row["retries"],
                   attempts=row["attempts"], error=row["error"], created_at=when(row["created_at"]),
                   ran_at=when(row["ran_at"]), finished_at=when(row["finished_at"]))

    def _insert(self, db, now, jobs):
        for job in jobs:
            found = db.execute("SELECT id FROM jobs WHERE queue = ? AND fingerprint = ? AND status IN ('new', 'running')",
                               (job.queue, job.fingerprint)).fetchone()
            if found is not None:
                raise DuplicateJobError(f"a job of {job.queue!r} holds this fingerprint", str(found["id"]))
        if len({(job.queue, job.fingerprint) for job in jobs}) < len(jobs):
            raise DuplicateJobError("two jobs of the batch have the same queue and fingerprint")
        return [str(db.execute(
            "INSERT INTO jobs (queue, fingerprint, payload, status, run_after, deadline, max_retries, created_at)"
            " VALUES (?, ?, ?, 'new', ?, ?, ?, ?)",
            (job.queue, job.fingerprint, canonical_json(job.payload), micros(job.run_after) if job.run_after else now,
             job.deadline and micros(job.deadline), job.max_retries, now)).lastrowid) for job in jobs]

    def _signal(self, jobs) -> None:  # tell this process's waiting loops; other processes find them by polling
        now = datetime.now(timezone.utc)
        for job in jobs:
            delay = 0.0 if job.run_after is None else (job.run_after - now).total_seconds()
            self.waiting.due(job.queue, delay) if delay > 0 else self.waiting.signal(job.queue)

    def enqueue(self, jobs, *, connection=None):
        if connection is not None:
            raise ConfigurationError("refsqlite:// cannot enqueue in a caller's transaction")
        ids = self._run(self._insert, jobs)
        self._signal(jobs)
        return ids

    def look(self, queue: str) -> Look[Claim]:
        def claim(db, now):
            lease_until = now + int(self.lease * 1e6)
            row = db.execute(
                "UPDATE jobs SET status = 'running', owner = :me, lease_until = :until, attempts = attempts + 1,"
                f" ran_at = :now, cancel = 0 WHERE id = (SELECT id FROM jobs WHERE queue = :q AND ({DUE})"
                " ORDER BY run_after, id LIMIT 1) RETURNING *, 'running' AS state",
                {"me": self.owner, "until": lease_until, "now": now, "q": queue}).fetchone()
            if row is not None:
                return Look(Claim(self._job(row), token=row["attempts"]))
            # Nothing due: when does the next job come due, or the next lease run out (no signal tells)?
            (next_at,) = db.execute(
                "SELECT MIN(CASE status WHEN 'new' THEN run_after ELSE lease_until END) FROM jobs"
                " WHERE queue = ? AND status IN ('new', 'running')", (queue,)).fetchone()
            return Look(due_in=None if next_at is None else max(0.0, (next_at - now) / 1e6))

        found = self._run(claim)
        if found.claim is not None:
            self._held.add(found.claim.job.id)
        return found

    def settle(self, claim: Claim, outcome) -> None:
        def store(db, now):  # only while this attempt still holds the row: a late settle after the lease ran out is lost
            db.execute(
                "UPDATE jobs SET status = ?, error = ?, run_after = coalesce(?, run_after), retries = coalesce(?,"
                " retries), finished_at = ?, owner = NULL, lease_until = NULL, cancel = 0"
                " WHERE id = ? AND owner = ? AND attempts = ? AND status = 'running'",
                (outcome.status.value, outcome.error, outcome.run_after and micros(outcome.run_after),
                 outcome.retries, None if outcome.status is JobStatus.NEW else now, int(claim.job.id), self.owner,
                 claim.token))

        self._run(store)
        self._held.discard(claim.job.id)
        if outcome.status is JobStatus.NEW:
            self._signal([Job(queue=claim.job.queue, run_after=outcome.run_after)])

    def _watch_cancels(self) -> None:
        """Another process's ``cancel_job`` marks the row; the holder finds the mark here, while it holds claims."""
        while not self._stop.wait(0.05):
            held = [int(job_id) for job_id in list(self._held)]
            try:
                marked = held and self._run(lambda db, now: db.execute(
                    f"SELECT id FROM jobs WHERE cancel = 1 AND owner = ? AND id IN ({','.join('?' * len(held))})",
                    (self.owner, *held)).fetchall(), write=False)
            except BackendError:  # closing, or the file is busy: look again soon
                continue
            for row in marked:
                    if self._held and str(row["id"]) in self._held:
                        self._held.discard(str(row["id"]))
                        self._notify_cancel(str(row["id"]))

    def cancel_job(self, job_id: str) -> None:
        def cancel(db, now):
            row = self._get(db, now, job_id)
            if row is None:
                raise JobNotFoundError(f"no job with id {job_id!r}")
            if row["state"] == "new":
                db.execute("UPDATE jobs SET status = 'cancelled', finished_at = ?, owner = NULL, lease_until = NULL"
                           " WHERE id = ?", (now, row["id"]))
            elif row["state"] == "running":
                db.execute("UPDATE jobs SET cancel = 1 WHERE id = ?", (row["id"],))
            return row["state"] == "running" and row["owner"] == self.owner

        if self._run(cancel):  # held here: tell the runtime at once
            self._held.discard(job_id)
            self._notify_cancel(job_id)

    def _get(self, db, now, job_id):
        key = int(job_id) if job_id.isdigit() else -1
        return db.execute(f"SELECT *, {STATE} AS state FROM jobs WHERE id = :id", {"id": key, "now": now}).fetchone()

    def get_job(self, job_id):
        row = self._run(self._get, job_id, write=False)
        return None if row is None else self._job(row)

    def list_jobs(self, queue, status, limit):
        sql = f"SELECT * FROM (SELECT *, {STATE} AS state FROM jobs) WHERE coalesce(:q = queue, 1)" \
              " AND coalesce(:s = state, 1) ORDER BY id DESC LIMIT :limit"
        rows = self._run(lambda db, now: db.execute(sql, {"q": queue, "s": status and status.value, "now": now,
                                                          "limit": limit}).fetchall(), write=False)
        return [self._job(row) for row in rows]

    def stats(self):
        rows = self._run(lambda db, now: db.execute(
            f"SELECT queue, {STATE} AS state, count(*) FROM jobs GROUP BY 1, 2", {"now": now}).fetchall(), write=False)
        found = {}
        for queue, state, count in rows:
            found.setdefault(queue, dict.fromkeys(("new", "running", "processed", "failed", "cancelled"), 0))
            found[queue][state] += count
        return found

    def retry_job(self, job_id):
        def retry(db, now):
            row = self._get(db, now, job_id)
            if row is None:
                raise JobNotFoundError(f"no job with id {job_id!r}")
            if row["state"] in ("new", "running"):
                return None
            if db.execute("SELECT 1 FROM jobs WHERE queue = ? AND fingerprint = ? AND status IN ('new', 'running')",
                          (row["queue"], row["fingerprint"])).fetchone():
                raise DuplicateJobError(f"a job of {row['queue']!r} holds this fingerprint")
            db.execute("UPDATE jobs SET status = 'new', run_after = ?, retries = 0, attempts = 0, error = NULL,"
                       " finished_at = NULL WHERE id = ?", (now, row["id"]))
            return row["queue"]

        queue = self._run(retry)
        if queue is not None:
            self.waiting.signal(queue)

    def prune(self, older_than, limit):
        def delete(db, now):
            done = 0
            for status, cutoff in older_than.items():
                done += db.execute("DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE status = ? AND"
                                   " finished_at < ? LIMIT ?)", (status.value, micros(cutoff), limit - done)).rowcount
            return done

        return self._run(delete)

    def enqueue_tick(self, job, key, tick):
        def store(db, now):
            if db.execute("INSERT OR IGNORE INTO ticks VALUES (?, ?)", (key, micros(tick))).rowcount == 0:
                return None
            return self._insert(db, now, [job])[0]

        job_id = self._run(store)
        if job_id is not None:
            self._signal([job])
        return job_id

    def last_tick(self, key):
        (latest,) = self._run(lambda db, now: db.execute("SELECT max(tick) FROM ticks WHERE key = ?", (key,))
                              .fetchone(), write=False)
        return when(latest)
