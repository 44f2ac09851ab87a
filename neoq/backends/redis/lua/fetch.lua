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
local leased, gone = {}, {}
for _, m in ipairs(picked) do
    local id = int(tonumber(m))
    local key = job_key(id)
    local h = redis.call('HMGET', key, 't', 'a', 'f', 'p', 'ra', 'dl', 'mr', 'r', 'e')
    if not h[3] then
        gone[#gone + 1] = m  -- never left behind, but a due set must not stall on one
    else
        local token = int((tonumber(h[1]) or 0) + 1)
        local attempts = int((tonumber(h[2]) or 0) + 1)
        redis.call('HSET', key, 't', token, 'a', attempts, 'rn', ran, 'o', ARGV[3], 'lu', expiry)
        leased[#leased + 1] = expiry
        leased[#leased + 1] = m
        out[#out + 1] = id
        out[#out + 1] = token
        out[#out + 1] = attempts
        out[#out + 1] = ran
        for i = 3, 7 do
            out[#out + 1] = h[i]
        end
        out[#out + 1] = h[8] or '0'
        out[#out + 1] = h[9]
    end
end
if #gone > 0 then
    chunked('ZREM', due, gone)
end
if #leased > 0 then
    chunked('ZADD', due, leased)
    chunked('ZADD', P .. 'lease:' .. q, leased)
end
return out
