-- The scripts that read rows or store batches put this after base.lua.
-- The job's fields as the backend reads them (rows.py: 20 values with the id; its lease's end
-- is read, not returned), its status as a reader sees it: a
-- waiting job whose lease is live is "running". A job never leased has no retries, attempts or
-- token fields yet: they read as 0.
local FIELDS = {'q', 'f', 'p', 's', 'ra', 'dl', 'mr', 'r', 'a', 'e', 'ca', 'rn', 'fa', 'lu', 'res', 'tb', 'pg', 'pn',
    'pr', 'sn'}
local function row(id, now, out)
    local h = redis.call('HMGET', job_key(id), unpack(FIELDS))
    if not h[1] then
        return false
    end
    if h[4] == 'new' and h[14] and tonumber(h[14]) > now then
        h[4] = 'running'
    end
    h[8] = h[8] or '0'
    h[9] = h[9] or '0'
    if h[10] == '' then
        h[10] = false  -- an error cleared by a settle
    end
    out[#out + 1] = id
    for i = 1, 13 do
        out[#out + 1] = h[i]
    end
    for i = 15, 18 do
        out[#out + 1] = h[i]
    end
    out[#out + 1] = h[19] or '0'
    out[#out + 1] = h[20] or '0'
    return true
end

-- Store the jobs of ``text``, all or none: a JSON array [queues, extras, fingerprint, payload
-- text, fingerprint, payload text, ...], two strings a job after the first two items (no array a
-- job: less to decode). ``queues`` is every job's queue (a string) or each job's (an array);
-- ``extras`` has one array [index from 0, run_after or "", deadline or "", max_retries or "",
-- priority, unique_for in microseconds or ""] for each job with more than its queue, fingerprint
-- and payload. A job with a unique_for is refused when the same queue and fingerprint were
-- enqueued with one less than its unique_for ago ({'dup', index, id, age in microseconds}); the
-- windows are ``uf:<queue>``: fingerprint -> "time id" of its last enqueue with a unique_for; ``ufat``
-- scores each "<queue>\0<fingerprint>" by that time, for prune.
-- Returns the first job's id, an integer: the ids are consecutive. A duplicate: {'dup', index,
-- id} (id '' for one within the batch). One HSET a job; the rest is one call per queue.
-- ``chunked`` for HSET into a hash or ZADD into a sorted set that ``list`` may take past its
-- listpack size (hash-max-listpack-entries, 512 by default; zset-max-listpack-entries, 128): a
-- listpack scans all its entries for each one added, so it is made a hash table (a skiplist)
-- first, by an entry too long for a listpack (no fingerprint or member can be it: it has a NUL)
-- added and removed around the call. Checked for lists of half that size or more only.
local WIDE = '\0' .. string.rep('-', 64)
local function chunked_wide(command, key, list)
    local hash, n = command == 'HSET', #list / 2
    local limit = hash and 512 or 128
    if n * 2 < limit then
        return chunked(command, key, list)
    end
    local size = redis.call(hash and 'HLEN' or 'ZCARD', key)
    if size > limit or size + n <= limit then
        return chunked(command, key, list)
    end
    if hash then
        redis.call('HSET', key, WIDE, '')
    else
        redis.call('ZADD', key, 0, WIDE)
    end
    chunked(command, key, list)
    redis.call(hash and 'HDEL' or 'ZREM', key, WIDE)
end

local DIGITS = {}  -- '000' to '999', made as enqueue_jobs needs them
local function enqueue_jobs(now, origin, text)
    local t = cjson.decode(text)
    local queues, n, extras = t[1], (#t - 2) / 2, {}
    for _, x in ipairs(t[2]) do
        extras[x[1] + 1] = x
    end
    -- By queue: ``order`` the queues, ``groups[q]`` its jobs' indexes (none when one queue has all).
    local order, groups, sizes = {queues}, {}, {[queues] = n}
    if type(queues) == 'table' then
        order, sizes = {}, {}
        for i = 1, n do
            local q = queues[i]
            local g = groups[q]
            if g then
                local size = sizes[q] + 1
                g[size] = i
                sizes[q] = size
            else
                groups[q] = {i}
                sizes[q] = 1
                order[#order + 1] = q
            end
        end
    end
    for _, q in ipairs(order) do
        local g, size, seen = groups[q], sizes[q], {}
        for c = 1, size, 1000 do
            local fps, last = {}, math.min(c + 999, size)
            for k = c, last do
                fps[k - c + 1] = t[2 * (g and g[k] or k) + 1]
            end
            local found = redis.call('HMGET', P .. 'fp:' .. q, unpack(fps))
            for k = 1, last - c + 1 do
                local i = g and g[c + k - 1] or c + k - 1
                if found[k] then
                    return {'dup', tostring(i - 1), found[k]}
                end
                if seen[fps[k]] then
                    return {'dup', tostring(i - 1), ''}
                end
                seen[fps[k]] = true
                local x = extras[i]
                if x and x[6] ~= '' then
                    local last_at = redis.call('HGET', P .. 'uf:' .. q, fps[k])
                    if last_at then
                        local at, id = string.match(last_at, '^(%d+) (%d+)$')
                        if now - tonumber(at) < tonumber(x[6]) then
                            return {'dup', tostring(i - 1), id, int(now - tonumber(at))}
                        end
                    end
                end
            end
        end
    end
    local base = redis.call('INCRBY', P .. 'seq', n) - n
    local created = int(now)
    local jp = P .. 'job:'
    -- An id and its member (member(id)) as a head (the thousands) and three digits: no float
    -- formatting a job (it was a tenth of the script's time), the head's made once a thousand.
    local at, head, zeros = -1, '', ''
    for _, q in ipairs(order) do
        local g = groups[q]
        local plain = P .. 'due:' .. q
        local due, fps, index, windows, opened = {}, {}, {}, {}, {}
        local d, k = 0, 0  -- the lengths of due, and of fps and index
        for c = 1, sizes[q] do
            local i = g and g[c] or c
            local f = t[2 * i + 1]
            local number = base + i
            local low = number % 1000
            local high = (number - low) / 1000
            if high ~= at then
                at = high
                head = high > 0 and int(high) or ''
                zeros = string.format('%012.0f', high)
            end
            local digits = DIGITS[low]
            if not digits then
                digits = string.format('%03d', low)
                DIGITS[low] = digits
            end
            local id = head == '' and tostring(low) or head .. digits
            local m = zeros .. digits  -- member(id)
            local x, ra, pr = extras[i], created, '0'
            if not x then  -- a queue, a fingerprint and a payload only: the most jobs
                redis.call('HSET', jp .. id, 'q', q, 'f', f, 'p', t[2 * i + 2], 's', 'new', 'ra', ra, 'ca', created)
            else
                if x[2] ~= '' then
                    ra = x[2]
                end
                pr = x[5]
                local fields = {'q', q, 'f', f, 'p', t[2 * i + 2], 's', 'new', 'ra', ra, 'ca', created}
                if x[3] ~= '' then
                    fields[13] = 'dl'
                    fields[14] = x[3]
                end
                if x[4] ~= '' then
                    fields[#fields + 1] = 'mr'
                    fields[#fields + 1] = x[4]
                end
                if pr ~= '0' then
                    fields[#fields + 1] = 'pr'
                    fields[#fields + 1] = pr
                end
                redis.call('HSET', jp .. id, unpack(fields))
                if x[6] ~= '' then
                    windows[#windows + 1] = f
                    windows[#windows + 1] = created .. ' ' .. id
                    opened[#opened + 1] = created
                    opened[#opened + 1] = q .. '\0' .. f
                end
            end
            if pr ~= '0' then
                redis.call('ZADD', due_key(q, pr), ra, m)
            else
                due[d + 1] = ra
                due[d + 2] = m
                d = d + 2
            end
            fps[k + 1] = f
            fps[k + 2] = id
            index[k + 1] = id
            index[k + 2] = id
            k = k + 2
        end
        chunked_wide('ZADD', plain, due)
        chunked_wide('HSET', P .. 'fp:' .. q, fps)
        chunked_wide('ZADD', P .. 'jobs:' .. q, index)
        if #windows > 0 then
            chunked('HSET', P .. 'uf:' .. q, windows)
            chunked('ZADD', P .. 'ufat', opened)
        end
        if redis.call('HINCRBY', P .. 'count:' .. q, 'new', sizes[q]) == sizes[q] then
            redis.call('SADD', P .. 'queues', q)  -- the queue's first jobs (or first since it was empty)
        end
        redis.call('PUBLISH', P .. 'wake', 'q:' .. origin .. ':' .. q)
    end
    return base + 1
end

-- Jobs that left the waiting, by queue and status (settle, cancel): their fingerprints are free,
-- their counters move, they are indexed as finished. ``done[q][status]`` lists {id, fingerprint}.
local function finish_all(done, now)
    local stamp = int(now)
    for q, statuses in pairs(done) do
        local fps = {}
        for status, jobs in pairs(statuses) do
            local index = {}
            for _, job in ipairs(jobs) do
                fps[#fps + 1] = job[2]
                index[#index + 1] = stamp
                index[#index + 1] = job[1]
            end
            chunked('ZADD', P .. 'done:' .. status, index)
            redis.call('HINCRBY', P .. 'count:' .. q, 'new', -#jobs)
            redis.call('HINCRBY', P .. 'count:' .. q, status, #jobs)
        end
        -- While a job waits or runs, its queue's fingerprint maps to it (enqueue and retry_job
        -- refuse a second one), so a job that finishes frees its fingerprint.
        chunked('HDEL', P .. 'fp:' .. q, fps)
    end
end

local function add_done(done, q, status, id, f)
    local statuses = done[q]
    if not statuses then
        statuses = {}
        done[q] = statuses
    end
    local jobs = statuses[status]
    if not jobs then
        jobs = {}
        statuses[status] = jobs
    end
    jobs[#jobs + 1] = {id, f}
end
