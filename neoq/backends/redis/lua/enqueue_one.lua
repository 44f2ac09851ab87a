-- enqueue_one: one job, what enqueue_jobs (common.lua) stores for a batch of one, with its fields
-- as arguments rather than JSON and in fewer calls. ARGV[2] the client's origin, ARGV[3] the
-- queue, ARGV[4] the fingerprint, ARGV[5] the payload text, ARGV[6] run_after, ARGV[7] deadline,
-- ARGV[8] max_retries, ARGV[9] the priority, ARGV[10] unique_for in microseconds ('' for none).
-- The job's id, or {'dup', '0', id} (a waiting or running job has its fingerprint), or
-- {'dup', '0', id, age} (its unique_for window).
local q, f = ARGV[3], ARGV[4]
local fps = P .. 'fp:' .. q
local found = redis.call('HGET', fps, f)
if found then
    return {'dup', '0', found}
end
local now = now_us()
local window = ARGV[10]
if window ~= '' then
    local last = redis.call('HGET', P .. 'uf:' .. q, f)
    if last then
        local at, id = string.match(last, '^(%d+) (%d+)$')
        if now - tonumber(at) < tonumber(window) then
            return {'dup', '0', id, int(now - tonumber(at))}
        end
    end
end
local id = redis.call('INCR', P .. 'seq')
local created = int(now)
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
redis.call('HSET', fps, f, id)
redis.call('ZADD', P .. 'jobs:' .. q, id, id)
if window ~= '' then
    redis.call('HSET', P .. 'uf:' .. q, f, created .. ' ' .. id)
end
if redis.call('HINCRBY', P .. 'count:' .. q, 'new', 1) == 1 then
    redis.call('SADD', P .. 'queues', q)  -- the queue's first job (or first since it was empty)
end
redis.call('PUBLISH', P .. 'wake', 'q:' .. ARGV[2] .. ':' .. q)
return id
