-- Shared by every script of the Redis backend (scripts.py puts it in front of each one, and
-- common.lua after it for the scripts that read rows or store batches).
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

-- The sorted set of a queue's waiting jobs of one priority: ``due:<queue>`` for 0, the most jobs;
-- ``due:<queue>:<priority>`` for the others, whose priorities are listed in ``prios:<queue>``
-- (scored by minus the priority: highest first). A claim reads the levels from the highest down.
local function due_key(q, pr)
    if not pr or pr == '0' or pr == 0 then
        return P .. 'due:' .. q
    end
    local level = tonumber(pr)
    redis.call('ZADD', P .. 'prios:' .. q, -level, int(level))
    return P .. 'due:' .. q .. ':' .. int(level)
end

-- Run one command over a long list of arguments, at most 1,000 at a time (unpack's limit).
local function chunked(command, key, list)
    for i = 1, #list, 1000 do
        redis.call(command, key, unpack(list, i, math.min(i + 999, #list)))
    end
end

-- Lease up to ``limit_text`` due jobs of queue ``q`` for ``lease_us`` microseconds to ``owner``
-- (fetch.lua; enqueue_one.lua for this client's waiting claim loops), each one's token and attempts incremented, in claim order:
-- priority descending (one sorted set a priority, see due_key), then due time, then id.
-- ``cap``: the queue's global limit ('' none): live leases of the queue count against it.
-- Returns {'', rows}: ``rows`` the JSON text of an array with one array a job (id, token,
-- attempts, ran_at, fingerprint, payload, run_after, deadline, max_retries, retries, error,
-- created_at, snoozes, priority; the payload written in as stored, so the client decodes it with
-- the rest in one pass). When none is due: {microseconds until the next one, or ''}; a paused
-- queue answers {''}; a queue at its global limit {'held'}. Second: the member last leased.
local function lease_jobs(now, q, owner, limit_text, lease_us, cap)
    if redis.call('SISMEMBER', P .. 'paused', q) == 1 then
        return {''}
    end
    local leases = P .. 'lease:' .. q
    local limit = tonumber(limit_text)
    if cap ~= '' then
        local room = tonumber(cap) - redis.call('ZCOUNT', leases, '(' .. int(now), '+inf')
        if room <= 0 then
            return {'held'}
        end
        limit = math.min(limit, room)
    end
    local levels, low = {}, {}
    local prios = redis.call('ZRANGE', P .. 'prios:' .. q, 0, -1)
    for _, p in ipairs(prios) do
        if tonumber(p) > 0 then
            levels[#levels + 1] = P .. 'due:' .. q .. ':' .. p
        else
            low[#low + 1] = P .. 'due:' .. q .. ':' .. p
        end
    end
    levels[#levels + 1] = P .. 'due:' .. q
    for _, level in ipairs(low) do
        levels[#levels + 1] = level
    end
    local expiry = int(now + tonumber(lease_us))
    local ran = int(now)
    local rows, taken, last = {}, 0, nil
    local function text(value)
        if not value then
            return 'null'
        end
        return cjson.encode(value)
    end
    for _, level in ipairs(levels) do
        if taken >= limit then
            break
        end
        local picked = redis.call('ZRANGEBYSCORE', level, '-inf', ran, 'LIMIT', 0, limit - taken)
        local leased, gone = {}, {}
        for _, m in ipairs(picked) do
            local id = int(tonumber(m))
            local key = job_key(id)
            local h = redis.call('HMGET', key, 't', 'a', 'f', 'p', 'ra', 'dl', 'mr', 'r', 'e', 'ca', 'sn', 'pr')
            if not h[3] then
                gone[#gone + 1] = m  -- never left behind, but a due set must not stall on one
            else
                -- The fencing token: the server's clock (microseconds), and always above the job's
                -- last one. A holder from before a restart that lost data (no AOF) cannot settle a new
                -- job that reused its id: the new job's tokens are later times.
                local token = int(math.max((tonumber(h[1]) or 0) + 1, now))
                local attempts = int((tonumber(h[2]) or 0) + 1)
                -- ran_at in claim order: one microsecond apart within a batch, as they were taken.
                local started = int(now + taken)
                redis.call('HSET', key, 't', token, 'a', attempts, 'rn', started, 'o', owner, 'lu', expiry)
                leased[#leased + 1] = expiry
                leased[#leased + 1] = m
                local e = h[9]
                if e == '' then
                    e = false
                end
                rows[#rows + 1] = '[' .. id .. ',' .. token .. ',' .. attempts .. ',' .. started .. ',' .. text(h[3]) .. ','
                    .. h[4] .. ',' .. h[5] .. ',' .. (h[6] or 'null') .. ',' .. (h[7] or 'null') .. ','
                    .. (h[8] or '0') .. ',' .. text(e) .. ',' .. h[10] .. ',' .. (h[11] or '0') .. ','
                    .. (h[12] or '0') .. ']'
                taken = taken + 1
                last = m
            end
        end
        if #gone > 0 then
            chunked('ZREM', level, gone)
        end
        if #leased > 0 then
            chunked('ZADD', level, leased)
            chunked('ZADD', leases, leased)
        end
    end
    if taken == 0 then
        local first
        for _, level in ipairs(levels) do
            local nxt = redis.call('ZRANGE', level, 0, 0, 'WITHSCORES')
            if #nxt > 0 and (not first or tonumber(nxt[2]) < first) then
                first = tonumber(nxt[2])
            end
        end
        if not first then
            return {''}
        end
        return {int(first - now)}
    end
    return {'', '[' .. table.concat(rows, ',') .. ']'}, last
end
