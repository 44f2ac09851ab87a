-- neoq schema, version 8: the dashboard's pages read through indexes that an enqueue does not
-- write (neoq.backends.postgres.search).
--
-- Migration 7's (status, id) and (queue, id) indexes held every row, so each enqueued job wrote
-- an entry in both (a sixth of a batch insert's time on the server). Finished jobs keep both
-- orders in partial indexes, written by the settle (as the old ones were); a page of waiting jobs
-- sorts their ids out of the claim's partial index of waiting jobs (neoq_jobs_due, migration 1).
DROP INDEX IF EXISTS neoq_jobs_status_id;
DROP INDEX IF EXISTS neoq_jobs_queue_id;

CREATE INDEX neoq_jobs_finished_status_id ON neoq_jobs (status, id) WHERE status <> 'new';
CREATE INDEX neoq_jobs_finished_queue_id ON neoq_jobs (queue, id) WHERE status <> 'new';
