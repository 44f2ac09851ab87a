-- enqueue_one: one job, what enqueue_jobs (common.lua) stores for a batch of one, with its fields
-- as arguments rather than JSON and in fewer calls. ARGV[2] the client's origin, ARGV[3] the
-- queue, ARGV[4] the fingerprint, ARGV[5] the payload text, ARGV[6] run_after, ARGV[7] deadline,
-- ARGV[8] max_retries, ARGV[9] the priority, ARGV[10] unique_for in microseconds ('' for none).
-- The job's id, or {'dup', '0', id} (a waiting or running job has its fingerprint), or
-- {'dup', '0', id, age} (its unique_for window).
--
-- With ARGV[11], the client's claim loops of the queue wait for a job: then the same step leases
-- for them as fetch.lua would (lease_jobs: ARGV[11] the owner, ARGV[12] the most jobs, ARGV[13]
-- the lease in microseconds, ARGV[14] the global limit), whichever jobs are due first, this one
-- or others, and answers {id, lease_jobs' answer}: the loops need no second round trip.
local q, f = ARGV[3], ARGV[4]
local fps, seq = P .. 'fp:' .. q, P .. 'seq'
-- The id is taken first, so that the fingerprint's check and its claim are one call; a
-- duplicate gives the id back (nothing else saw it).
local id = redis.call('INCR', seq)
if redis.call('HSETNX', fps, f, id) == 0 then
    redis.call('DECR', seq)
    return {'dup', '0', redis.call('HGET', fps, f)}
end
local now = now_us()
local created = int(now)
local window = ARGV[10]
if window ~= '' then
    local uf = P .. 'uf:' .. q
    local last = redis.call('HGET', uf, f)
    if last then
        local at, old = string.match(last, '^(%d+) (%d+)$')
        if now - tonumber(at) < tonumber(window) then
            redis.call('HDEL', fps, f)
            redis.call('DECR', seq)
            return {'dup', '0', old, int(now - tonumber(at))}
        end
    end
    redis.call('HSET', uf, f, created .. ' ' .. id)
    redis.call('ZADD', P .. 'ufat', created, q .. '\0' .. f)  -- for prune
end
local ra = ARGV[6]
if ra == '' then
    ra = created
end
local fields = {'q', q, 'f', f, 'p', ARGV[5], 's', 'new', 'ra', ra, 'ca', created}
if ARGV[7] ~= '' then
    fields[13] = 'dl'
    fields[14] = ARGV[7]
end
if ARGV[8] ~= '' then
    fields[#fields + 1] = 'mr'
    fields[#fields + 1] = ARGV[8]
end
local pr = ARGV[9]
if pr ~= '0' then
    fields[#fields + 1] = 'pr'
    fields[#fields + 1] = pr
end
redis.call('HSET', job_key(id), unpack(fields))
local m = member(id)
redis.call('ZADD', due_key(q, pr), ra, m)
redis.call('ZADD', P .. 'jobs:' .. q, id, id)
if redis.call('HINCRBY', P .. 'count:' .. q, 'new', 1) == 1 then
    redis.call('SADD', P .. 'queues', q)  -- the queue's first job (or first since it was empty)
end
if ARGV[11] and ARGV[11] ~= '' then
    local leased, last = lease_jobs(now, q, ARGV[11], ARGV[12], ARGV[13], ARGV[14])
    if last ~= m then  -- this job still waits: the other clients' loops may take it
        redis.call('PUBLISH', P .. 'wake', 'q:' .. ARGV[2] .. ':' .. q)
    end
    return {id, leased}
end
redis.call('PUBLISH', P .. 'wake', 'q:' .. ARGV[2] .. ':' .. q)
return id
