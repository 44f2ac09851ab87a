-- fetch (the lease engine's): lease up to ARGV[4] due jobs of queue ARGV[2] for ARGV[5]
-- microseconds to owner ARGV[3], each one's token and attempts incremented. Returns {'', rows}:
-- ``rows`` the JSON text of an array with one array a job (id, token, attempts, ran_at,
-- fingerprint, payload, run_after, deadline, max_retries, retries, error, created_at; the payload
-- written in as stored, so the client decodes it with the rest in one pass). When none is due:
-- {microseconds until the next one, or ''}.
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
local expiry = int(now + tonumber(ARGV[5]))
local ran = int(now)
local leased, gone, rows = {}, {}, {}
local function text(value)
    if not value then
        return 'null'
    end
    return cjson.encode(value)
end
for _, m in ipairs(picked) do
    local id = int(tonumber(m))
    local key = job_key(id)
    local h = redis.call('HMGET', key, 't', 'a', 'f', 'p', 'ra', 'dl', 'mr', 'r', 'e', 'ca')
    if not h[3] then
        gone[#gone + 1] = m  -- never left behind, but a due set must not stall on one
    else
        -- The fencing token: the server's clock (microseconds), and always above the job's last one.
        -- A holder from before a restart that lost data (no AOF) cannot settle a new job that
        -- reused its id: the new job's tokens are later times.
        local token = int(math.max((tonumber(h[1]) or 0) + 1, now))
        local attempts = int((tonumber(h[2]) or 0) + 1)
        redis.call('HSET', key, 't', token, 'a', attempts, 'rn', ran, 'o', ARGV[3], 'lu', expiry)
        leased[#leased + 1] = expiry
        leased[#leased + 1] = m
        local e = h[9]
        if e == '' then
            e = false
        end
        rows[#rows + 1] = '[' .. id .. ',' .. token .. ',' .. attempts .. ',' .. ran .. ',' .. text(h[3]) .. ','
            .. h[4] .. ',' .. h[5] .. ',' .. (h[6] or 'null') .. ',' .. (h[7] or 'null') .. ',' .. (h[8] or '0')
            .. ',' .. text(e) .. ',' .. h[10] .. ']'
    end
end
if #gone > 0 then
    chunked('ZREM', due, gone)
end
if #leased > 0 then
    chunked('ZADD', due, leased)
    chunked('ZADD', P .. 'lease:' .. q, leased)
end
return {'', '[' .. table.concat(rows, ',') .. ']'}
