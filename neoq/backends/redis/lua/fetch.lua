-- fetch (the lease engine's): lease_jobs (base.lua) for ARGV[2] the queue, ARGV[3] the owner,
-- ARGV[4] the most jobs, ARGV[5] the lease in microseconds, ARGV[6] the global limit ('' none).
return lease_jobs(now_us(), ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
