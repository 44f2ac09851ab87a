-- fetch (the lease engine's): lease up to ARGV[4] due jobs of queue ARGV[2] for ARGV[5]
-- microseconds to owner ARGV[3], each one's token and attempts incremented. Returns {'', rows...}
-- (11 values a job: id, token, attempts, ran_at, fingerprint, payload, run_after, deadline,
-- max_retries, retries, error), or, when none is due, {microseconds until the next one, or ''}.
local now = now_us()
local q = ARGV[2]
local due = P .. 'due:' .. q
local picked = redis.call('ZRANGEBYSCORE', due, '-inf', int(now), 'LIMIT', 0, tonumber(ARGV[4]))
if #picked == 0 then
    local nxt = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
    if #nxt == 0 then
        return {''}
    end
    return {int(tonumber(nxt[2]) - now)}
end
local out = {''}
local expiry = int(now + tonumber(ARGV[5]))
local ran = int(now)
local leases = P .. 'lease:' .. q
for _, m in ipairs(picked) do
    local id = tostring(tonumber(m))
    local key = job_key(id)
    if redis.call('EXISTS', key) == 0 then
        redis.call('ZREM', due, m)  -- never left behind, but a due set must not stall on one
    else
        local token = redis.call('HINCRBY', key, 't', 1)
        local attempts = redis.call('HINCRBY', key, 'a', 1)
        redis.call('HSET', key, 'rn', ran, 'o', ARGV[3], 'lu', expiry)
        redis.call('ZADD', due, expiry, m)
        redis.call('ZADD', leases, expiry, m)
        local h = redis.call('HMGET', key, 'f', 'p', 'ra', 'dl', 'mr', 'r', 'e')
        out[#out + 1] = id
        out[#out + 1] = token
        out[#out + 1] = attempts
        out[#out + 1] = ran
        for i = 1, 7 do
            out[#out + 1] = h[i]
        end
    end
end
return out
