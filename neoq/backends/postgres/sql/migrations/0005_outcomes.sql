-- neoq schema, version 5: what a job hands back (issue #17).
--
-- result: the handler's return value as JSON text (json, not jsonb: kept exactly as written, as
-- the payload is). traceback: the formatted traceback of the last failed attempt. Both are written
-- by the settle, in the same statement as the status. Adding nullable columns without a default
-- rewrites nothing: instant on a large table.
ALTER TABLE neoq_jobs ADD COLUMN result json, ADD COLUMN traceback text;

-- Progress reports of running jobs live apart from the job row, as the attempt counters do: in
-- transaction mode the claim's transaction holds the row's lock while the handler runs, so an
-- UPDATE of the row from another connection would wait for the job to end, and one made in the
-- claim's own transaction would be seen only once it commits. A report is one autocommit upsert
-- here, from the pool; readers LEFT JOIN it; retry_job and prune delete it with the job's outcome.
-- No foreign key: checking one would lock the job row's key (FOR KEY SHARE), which a claim's
-- FOR UPDATE lock blocks.
CREATE TABLE neoq_progress (
    job_id     bigint PRIMARY KEY,
    fraction   float8 NOT NULL CHECK (fraction >= 0 AND fraction <= 1),
    note       text,
    updated_at timestamptz NOT NULL
);
