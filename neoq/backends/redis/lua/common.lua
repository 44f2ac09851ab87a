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

-- Store the jobs of ``jobs`` (a JSON array: one [queue, fingerprint, payload text, run_after or
-- "", deadline or "", max_retries or "", priority, unique_for in microseconds or ""] a job, cut
-- after the payload when the rest are none and the priority 0), all or none. A job with a unique_for is refused when the same queue and fingerprint were enqueued
-- with one less than its unique_for ago ({'dup', index, id, age in microseconds}); the windows
-- are ``uf:<queue>``: fingerprint -> "time id" of its last enqueue with a unique_for. Returns the first job's id, an
-- integer: the ids are consecutive. A duplicate: {'dup', index, id} (id '' for one within the
-- batch). One HSET a job; the rest is one call per queue.
local function enqueue_jobs(now, origin, jobs)
    jobs = cjson.decode(jobs)
    local n = #jobs
    local groups, order = {}, {}
    for i = 1, n do
        local q = jobs[i][1]
        local g = groups[q]
        if not g then
            g = {}
            groups[q] = g
            order[#order + 1] = q
        end
        g[#g + 1] = i
    end
    for _, q in ipairs(order) do
        local g, seen = groups[q], {}
        for c = 1, #g, 1000 do
            local fps = {}
            for k = c, math.min(c + 999, #g) do
                fps[#fps + 1] = jobs[g[k]][2]
            end
            local found = redis.call('HMGET', P .. 'fp:' .. q, unpack(fps))
            for k = 1, #fps do
                local i = g[c + k - 1]
                if found[k] then
                    return {'dup', tostring(i - 1), found[k]}
                end
                if seen[fps[k]] then
                    return {'dup', tostring(i - 1), ''}
                end
                seen[fps[k]] = true
                local window = jobs[i][8]
                if window and window ~= '' then
                    local last = redis.call('HGET', P .. 'uf:' .. q, fps[k])
                    if last then
                        local at, id = string.match(last, '^(%d+) (%d+)$')
                        if now - tonumber(at) < tonumber(window) then
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
    for _, q in ipairs(order) do
        local g = groups[q]
        local plain = P .. 'due:' .. q
        local due, fps, index, windows = {}, {}, {}, {}
        local d, k = 0, 0  -- the lengths of due, and of fps and index
        for _, i in ipairs(g) do
            local job = jobs[i]
            local number = base + i
            local id = int(number)
            local m = string.format('%015.0f', number)  -- member(id)
            local ra = job[4]
            if not ra or ra == '' then
                ra = created
            end
            local pr = job[7]
            if #job == 3 then  -- queue, fingerprint and payload only: the most jobs
                redis.call('HSET', jp .. id, 'q', q, 'f', job[2], 'p', job[3], 's', 'new', 'ra', ra, 'ca', created)
            else
                local fields = {'q', q, 'f', job[2], 'p', job[3], 's', 'new', 'ra', ra, 'ca', created}
                if job[5] ~= '' then
                    fields[13] = 'dl'
                    fields[14] = job[5]
                end
                if job[6] ~= '' then
                    fields[#fields + 1] = 'mr'
                    fields[#fields + 1] = job[6]
                end
                if pr ~= '0' then
                    fields[#fields + 1] = 'pr'
                    fields[#fields + 1] = pr
                end
                redis.call('HSET', jp .. id, unpack(fields))
                if job[8] ~= '' then
                    windows[#windows + 1] = job[2]
                    windows[#windows + 1] = created .. ' ' .. id
                end
            end
            if pr and pr ~= '0' then
                redis.call('ZADD', due_key(q, pr), ra, m)
            else
                due[d + 1] = ra
                due[d + 2] = m
                d = d + 2
            end
            fps[k + 1] = job[2]
            fps[k + 2] = id
            index[k + 1] = id
            index[k + 2] = id
            k = k + 2
        end
        chunked('ZADD', plain, due)
        chunked('HSET', P .. 'fp:' .. q, fps)
        chunked('ZADD', P .. 'jobs:' .. q, index)
        if #windows > 0 then
            chunked('HSET', P .. 'uf:' .. q, windows)
        end
        if redis.call('HINCRBY', P .. 'count:' .. q, 'new', #g) == #g then
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
