-- Shared by every script of the Redis backend (scripts.py puts it in front of each one).
--
-- ARGV[1] is the namespace: the prefix of every key, ending with its hash tag ("neoq:{neoq}:"),
-- so every key of one namespace lives in one Cluster slot. KEYS[1] is a key of that namespace
-- (its "seq"), given so that a Cluster client routes the call. Times are microseconds since
-- 1970 by the server's clock (TIME), written as integers ("%.0f": tostring would round them).
local P = ARGV[1]

local function now_us()
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function int(x)
    return string.format('%.0f', x)
end

-- A job's member in the due and lease sets: its id, zero-padded, so that jobs due at the same
-- microsecond are claimed in id order (members of equal score sort as strings).
local function member(id)
    return string.format('%015.0f', tonumber(id))
end

local function job_key(id)
    return P .. 'job:' .. id
end

-- The job's fields as the backend reads them (rows.py), its status as a reader sees it: a
-- waiting job whose lease is live is "running".
local FIELDS = {'q', 'f', 'p', 's', 'ra', 'dl', 'mr', 'r', 'a', 'e', 'ca', 'rn', 'fa', 'lu'}
local function row(id, now, out)
    local h = redis.call('HMGET', job_key(id), unpack(FIELDS))
    if not h[1] then
        return false
    end
    if h[4] == 'new' and h[14] and tonumber(h[14]) > now then
        h[4] = 'running'
    end
    out[#out + 1] = id
    for i = 1, 13 do
        out[#out + 1] = h[i]
    end
    return true
end

-- Store the jobs of ARGV[first ...], 6 values each (queue, fingerprint, payload, run_after or "",
-- deadline or "", max_retries or ""), all or none. Returns {'ok', ids...} or {'dup', index, id}.
local function enqueue_jobs(now, origin, first)
    local n = (#ARGV - first + 1) / 6
    local seen = {}
    for i = 0, n - 1 do
        local b = first + i * 6
        local q, f = ARGV[b], ARGV[b + 1]
        local k = q .. '\0' .. f
        if seen[k] then
            return {'dup', tostring(i), seen[k]}
        end
        local other = redis.call('HGET', P .. 'fp:' .. q, f)
        if other then
            return {'dup', tostring(i), other}
        end
        seen[k] = ''
    end
    local out = {'ok'}
    local wake = {}
    local created = int(now)
    for i = 0, n - 1 do
        local b = first + i * 6
        local q, f, ra = ARGV[b], ARGV[b + 1], ARGV[b + 3]
        local id = tostring(redis.call('INCR', P .. 'seq'))
        if ra == '' then
            ra = created
        end
        local key = job_key(id)
        redis.call('HSET', key, 'q', q, 'f', f, 'p', ARGV[b + 2], 's', 'new', 'ra', ra, 'r', 0, 'a', 0, 't', 0,
            'ca', created)
        if ARGV[b + 4] ~= '' then
            redis.call('HSET', key, 'dl', ARGV[b + 4])
        end
        if ARGV[b + 5] ~= '' then
            redis.call('HSET', key, 'mr', ARGV[b + 5])
        end
        redis.call('ZADD', P .. 'due:' .. q, ra, member(id))
        redis.call('HSET', P .. 'fp:' .. q, f, id)
        redis.call('ZADD', P .. 'jobs', id, id)
        redis.call('ZADD', P .. 'jobs:' .. q, id, id)
        redis.call('HINCRBY', P .. 'count:' .. q, 'new', 1)
        if not wake[q] then
            wake[q] = true
            redis.call('SADD', P .. 'queues', q)
            redis.call('PUBLISH', P .. 'wake', 'q:' .. origin .. ':' .. q)
        end
        out[#out + 1] = id
    end
    return out
end

-- A job leaves the waiting: its fingerprint is free, its counters move, it is indexed as finished.
local function finish(id, q, f, status, now)
    local fps = P .. 'fp:' .. q
    if redis.call('HGET', fps, f) == id then
        redis.call('HDEL', fps, f)
    end
    redis.call('HINCRBY', P .. 'count:' .. q, 'new', -1)
    redis.call('HINCRBY', P .. 'count:' .. q, status, 1)
    redis.call('ZADD', P .. 'done:' .. status, int(now), id)
end
