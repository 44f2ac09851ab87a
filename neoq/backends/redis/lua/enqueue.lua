-- enqueue: ARGV[2] the client's origin (its own wake-ups are not sent back to it), ARGV[3] the
-- jobs (JSON). the first id, or {'dup', index, existing id}.
return enqueue_jobs(now_us(), ARGV[2], ARGV[3])
