"""neoq's reference backend, ``refsqlite:///path/jobs.db``: a SQLite file shared by processes. See docs/backends.md."""

import contextlib
import json
import sqlite3
import threading
import uuid
from datetime import datetime, timedelta, timezone

from neoq.backends import Backend, Claim
from neoq.errors import BackendError, ConfigurationError, DuplicateJobError, JobNotFoundError
from neoq.job import Job, JobStatus, canonical_json
from neoq.waiting import Look

SCHEMA = """CREATE TABLE IF NOT EXISTS jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL,
  fingerprint TEXT NOT NULL, payload TEXT NOT NULL, status TEXT NOT NULL, run_after INTEGER NOT NULL, deadline INTEGER,
  max_retries INTEGER, retries INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0, error TEXT,
  created_at INTEGER NOT NULL, ran_at INTEGER, finished_at INTEGER, owner TEXT, lease_until INTEGER, cancel INTEGER,
  result TEXT, traceback TEXT, progress REAL, progress_note TEXT);  -- result: JSON text
CREATE UNIQUE INDEX IF NOT EXISTS jobs_unique ON jobs (queue, fingerprint) WHERE status IN ('new', 'running');
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (queue, status, run_after, id);
CREATE TABLE IF NOT EXISTS ticks (key TEXT NOT NULL, tick INTEGER NOT NULL, PRIMARY KEY (key, tick));
"""
# What every read reports: a running job whose lease ran out reads NEW (its holder is gone).
CLEARED = ("finished_at", "cancel", "result", "traceback", "progress", "progress_note")  # by retry_job
ROWS = "SELECT *, CASE WHEN status = 'running' AND lease_until <= :now THEN 'new' ELSE status END AS state FROM jobs"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
KEPT = ("queue", "fingerprint", "max_retries", "retries", "attempts", "error", "traceback", "progress", "progress_note")


def micros(value: datetime) -> int:  # times are integer microseconds since 1970: exact, ordered as numbers
    return (value - EPOCH) // timedelta(microseconds=1)


def when(value: int | None) -> datetime | None:
    return None if value is None else EPOCH + timedelta(microseconds=value)


class ReferenceBackend(Backend):
    capabilities = frozenset({"shared"})  # a file several processes share; no "notify": the waiting polls
    needs_release = False  # a claim holds no connection to give back

    def __init__(self, path: str, *, lease: float = 30.0, poll_interval: float = 0.05) -> None:
        self.path, self.lease, self.poll_interval = path, lease, poll_interval
        self.owner, self._held = uuid.uuid4().hex, set()  # its name on the rows it claims; the ids it holds
        self._lock, self._db, self._stop, self._watcher = threading.Lock(), None, threading.Event(), None

    @classmethod
    def from_url(cls, url, *, clock=None, **options):  # the clock is ignored: processes share the file's time
        if not (path := url.split("://", 1)[1]) or set(options) - {"lease", "poll_interval"}:
            raise ConfigurationError("refsqlite://PATH takes a file path and the options lease, poll_interval")
        return cls(path, **options)

    def open(self) -> None:
        with self._lock:
            if self._db is None:
                self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
                self._db.row_factory = sqlite3.Row
                self._db.executescript("PRAGMA journal_mode=WAL;" + SCHEMA)  # WAL: readers do not wait for the writer
                self._stop.clear()
                self._watcher = threading.Thread(target=self._watch_cancels, name="neoq-refsqlite", daemon=True)
                self._watcher.start()

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join()
        with self._lock, contextlib.suppress(AttributeError):  # AttributeError: closed already (None)
            self._db = self._db.close()  # close() returns None
        self.reset_waiting()  # claims waiting in neoq.waiting return

    def _run(self, work, write=True):  # work(db, now) in one transaction; BEGIN IMMEDIATE locks out other writers
        with self._lock:
            if (db := self._db) is None:
                raise BackendError("the backend is closed")
            try:
                with db:  # commits, or rolls back on an exception
                    db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                    return work(db, micros(datetime.now(timezone.utc)))
            except sqlite3.Error as exc:  # a backend raises only NeoqErrors
                raise BackendError(f"SQLite: {exc}") from exc

    def _read(self, sql, **params):
        return self._run(lambda db, now: db.execute(sql, {"now": now, **params}).fetchall(), write=False)

    @staticmethod
    def _job(row) -> Job:
        times = {name: when(row[name]) for name in ("run_after", "deadline", "created_at", "ran_at", "finished_at")}
        return Job(**times, **{key: row[key] for key in KEPT}, id=str(row["id"]), status=JobStatus(row["state"]),
                   payload=json.loads(row["payload"]), result=row["result"] and json.loads(row["result"]))

    @staticmethod
    def _row(db, now, job_id):  # SQLite compares the id column with the text as a number
        if (row := db.execute(f"{ROWS} WHERE id = :id", {"id": job_id, "now": now}).fetchone()) is None:
            raise JobNotFoundError(f"no job with id {job_id!r}")
        return row

    @staticmethod
    def _unique(db, queue, fingerprint):  # no other waiting or running job of the queue may hold the fingerprint
        sql = "SELECT id FROM jobs WHERE queue = ? AND fingerprint = ? AND status IN ('new', 'running')"
        if (holder := db.execute(sql, (queue, fingerprint)).fetchone()) is not None:
            raise DuplicateJobError(f"a job of {queue!r} holds this fingerprint", str(holder["id"]))

    def _insert(self, db, now, jobs):  # an exception rolls the whole batch back (_run)
        if len({(job.queue, job.fingerprint) for job in jobs}) < len(jobs):
            raise DuplicateJobError("two jobs of the batch have the same queue and fingerprint")
        for job in jobs:
            self._unique(db, job.queue, job.fingerprint)
            run_after = micros(job.run_after) if job.run_after else now
            yield str(db.execute(
                "INSERT INTO jobs (queue, fingerprint, payload, status, run_after, deadline, max_retries, created_at)"
                " VALUES (?, ?, ?, 'new', ?, ?, ?, ?)", (job.queue, job.fingerprint, canonical_json(job.payload),
                run_after, job.deadline and micros(job.deadline), job.max_retries, now)).lastrowid)

    def enqueue(self, jobs, *, connection=None):  # local claims are signalled (None: all); others poll
        if connection is not None:
            raise ConfigurationError("refsqlite:// cannot enqueue in a caller's transaction")
        ids = self._run(lambda db, now: list(self._insert(db, now, jobs)))
        self.waiting.signal(queues.pop() if len(queues := {job.queue for job in jobs}) == 1 else None)
        return ids

    def look(self, queue: str) -> Look[Claim]:  # lease the first due job (or one whose lease ran out) in one UPDATE
        row = self._run(lambda db, now: db.execute(
            "UPDATE jobs SET status = 'running', owner = :me, lease_until = :until, attempts = attempts + 1,"
            " ran_at = :now WHERE id = (SELECT id FROM jobs WHERE queue = :queue AND"
            " ((status = 'new' AND run_after <= :now) OR (status = 'running' AND lease_until <= :now))"
            " ORDER BY run_after, id LIMIT 1) RETURNING *, 'running' AS state",
            {"me": self.owner, "until": now + int(self.lease * 1e6), "now": now, "queue": queue}).fetchone())
        if row is None:  # no due_in: it only spares a notified store's polls, and this one is polled anyway
            return Look()
        self._held.add(str(row["id"]))
        return Look(Claim(self._job(row), token=row["attempts"]))  # the attempt number fences the claim: see settle

    def settle(self, claim: Claim, outcome) -> None:  # only while this attempt still holds the row (owner, attempt)
        self._run(lambda db, now: db.execute(
            "UPDATE jobs SET status = ?, error = ?, run_after = coalesce(?, run_after), retries = coalesce(?, retries),"
            " finished_at = ?, result = ?, traceback = ?, owner = NULL, lease_until = NULL WHERE id = ? AND owner = ?"
            " AND attempts = ?", (outcome.status.value, outcome.error, outcome.run_after and micros(outcome.run_after),
            outcome.retries, None if outcome.status is JobStatus.NEW else now, outcome.result, outcome.traceback,
            claim.job.id, self.owner, claim.token)))
        self._held.discard(claim.job.id)  # a retry (NEW) is found by the poll, like other processes' changes

    def progress(self, claim: Claim, fraction, note) -> None:  # fenced as settle: a lost claim's report is dropped
        self._run(lambda db, now: db.execute("UPDATE jobs SET progress = ?, progress_note = ? WHERE id = ? AND"
                  " owner = ? AND attempts = ?", (fraction, note, claim.job.id, self.owner, claim.token)))

    def _watch_cancels(self) -> None:  # cancel_job (in any process) marks the row; its holder looks for marks
        sql = "SELECT id FROM jobs WHERE cancel = 1 AND owner = :me"
        while not self._stop.wait(0.05):
            with contextlib.suppress(BackendError):  # closing, or the file stayed busy: look again soon
                marked = {str(row["id"]) for row in self._read(sql, me=self.owner)} if self._held else set()
                for job_id in marked & self._held:
                    self._held.discard(job_id)
                    self._notify_cancel(job_id)  # the runtime settles it CANCELLED

    def cancel_job(self, job_id: str) -> None:
        def cancel(db, now):  # a waiting job ends now; a running one is marked for its holder (or the next one)
            if (row := self._row(db, now, job_id))["state"] == "new":
                db.execute("UPDATE jobs SET status = 'cancelled', finished_at = ?, owner = NULL WHERE id = ?",
                           (now, row["id"]))
            elif row["state"] == "running":
                db.execute("UPDATE jobs SET cancel = 1 WHERE id = ?", (row["id"],))
        self._run(cancel)

    def retry_job(self, job_id):
        def retry(db, now):
            if (row := self._row(db, now, job_id))["state"] not in ("new", "running"):
                self._unique(db, row["queue"], row["fingerprint"])
                db.execute("UPDATE jobs SET status = 'new', run_after = ?, retries = 0, attempts = 0, error = NULL,"
                           f" {' = NULL, '.join(CLEARED)} = NULL WHERE id = ?", (now, row["id"]))
        self._run(retry)

    def get_job(self, job_id):
        return self._job(rows[0]) if (rows := self._read(f"{ROWS} WHERE id = :id", id=job_id)) else None

    def list_jobs(self, queue, status, limit):
        return [self._job(row) for row in self._read(f"SELECT * FROM ({ROWS}) WHERE coalesce(queue = :queue, 1) AND"
                " coalesce(state = :status, 1) ORDER BY id DESC LIMIT :limit", queue=queue, status=status, limit=limit)]

    def stats(self):
        states = ("new", "running", "processed", "failed", "cancelled")
        counts = ", ".join(f"sum(state = '{state}') AS {state}" for state in states)
        rows = self._read(f"SELECT queue, {counts} FROM ({ROWS}) GROUP BY queue")
        return {row["queue"]: {state: row[state] for state in states} for row in rows}

    def prune(self, older_than, limit):  # ticks are kept: the contract allows deleting old ones, not asks
        cutoffs = {"processed": None, "failed": None, "cancelled": None, "limit": limit}  # None: not pruned
        cutoffs.update((status.value, micros(cutoff)) for status, cutoff in older_than.items())
        return self._run(lambda db, now: db.execute(
            "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE finished_at < CASE status WHEN 'processed'"
            " THEN :processed WHEN 'failed' THEN :failed WHEN 'cancelled' THEN :cancelled END LIMIT :limit)",
            cutoffs).rowcount)

    def enqueue_tick(self, job, key, tick):  # the tick and its job in one transaction: once across every process
        return self._run(lambda db, now: next(self._insert(db, now, [job])) if db.execute(
            "INSERT OR IGNORE INTO ticks VALUES (?, ?)", (key, micros(tick))).rowcount else None)

    def last_tick(self, key):
        return when(self._read("SELECT max(tick) AS latest FROM ticks WHERE key = :key", key=key)[0]["latest"])
