-- neoq schema, version 4: the attempts lookup of every claim always goes through the index.
--
-- neoq_attempts_of (migration 3) is PL/pgSQL, so its query is planned once per connection and the
-- plan is kept. Planned while neoq_attempts was empty by the statistics (after a TRUNCATE and an
-- ANALYZE, or an autovacuum ANALYZE of a new table), the cheapest plan is a sequential scan, and
-- the connection kept scanning the whole table for every claim as the table grew (one row a job),
-- until something invalidated the plan: 6,756 sequential scans reading 33 million rows for
-- 10,000 jobs, 20% fewer jobs a second. The lookup is by primary key: with sequential scans off
-- inside the function, the plan is an index scan whatever the statistics say.
ALTER FUNCTION neoq_attempts_of(bigint) SET enable_seqscan = off;
