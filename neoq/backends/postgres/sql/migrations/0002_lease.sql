-- neoq schema, version 2: the lease mode (docs/lease-mode.md).
--
-- A leased job stays 'new' (so the partial unique index on fingerprints still covers it while it
-- runs) and its run_after becomes the lease's expiry: every claim query, in either mode, already
-- takes only jobs with run_after <= now(), so nobody takes a job whose lease is alive, and the
-- job is due again, for any worker, the moment its lease expires. The existing index
-- neoq_jobs_due (queue, run_after, id) WHERE status = 'new' is therefore also the index of expired
-- leases, and the next-due wake-ups of waiting workers include lease expiries without a rescuer.

-- The fencing token: bumped by every lease claim and never reset (not even by retry_job), so a
-- holder whose lease expired and was taken by another claim cannot write anything any more.
ALTER TABLE neoq_jobs ADD COLUMN lease_token bigint NOT NULL DEFAULT 0;

-- Which client holds the lease (host:pid:random), for people reading the table; NULL when none.
ALTER TABLE neoq_jobs ADD COLUMN lease_owner text;
