-- neoq schema, version 8: the dashboard's keyset pages read through indexes that an enqueue
-- writes less of (neoq.backends.postgres.search).
--
-- Migration 7's (status, id) and (queue, id) indexes held every row, so each enqueued job wrote
-- an entry in both, in the middle of each (about a third of a batch insert's time on the server).
-- Now an enqueue writes one entry, at the right end of an index of the waiting jobs' ids (ids
-- grow); finished jobs keep both orders in partial indexes that only the settle writes (the old
-- indexes took an entry there too). A page of one queue reads both halves and merges them.
DROP INDEX IF EXISTS neoq_jobs_status_id;
DROP INDEX IF EXISTS neoq_jobs_queue_id;

CREATE INDEX neoq_jobs_waiting_id ON neoq_jobs (id) WHERE status = 'new';
CREATE INDEX neoq_jobs_finished_status_id ON neoq_jobs (status, id) WHERE status <> 'new';
CREATE INDEX neoq_jobs_finished_queue_id ON neoq_jobs (queue, id) WHERE status <> 'new';
