-- settle_many (the lease engine's): ARGV[2] origin, ARGV[3] the outcomes (JSON): one array a job
-- of id, queue, token, status, error, run_after of a retry ("" keep), retries of a retry ("" keep),
-- result (JSON text), traceback, '1' for a snooze (its count grows, its retries stay); "" for none. Each is written only while the job still carries
-- that token and is leased (fenced). Returns the ids written. One HMGET and one write a job (a
-- second to delete fields: a retry's lease, an error or a result cleared); the sorted sets,
-- fingerprints and counters one call per queue. A finished job's holder fields are left: nothing
-- reads them once it is not waiting.
local now = now_us()
local origin = ARGV[2]
local written = {}
local done, leaving, retried, unqueued, wake = {}, {}, {}, {}, {}
local stamp = int(now)
for _, o in ipairs(cjson.decode(ARGV[3])) do
    local id, q, token, status, err, tb = o[1], o[2], o[3], o[4], o[5], o[9]
    local key = job_key(id)
    local h = redis.call('HMGET', key, 't', 's', 'f', 'lu', 'ra', 'e', 'pr', 'sn')
    if h[1] == token and h[2] == 'new' and h[4] then
        local m = member(id)
        local level = due_key(q, h[7])
        local gone = leaving[q]
        if not gone then
            gone = {}
            leaving[q] = gone
        end
        gone[#gone + 1] = m
        local off = unqueued[level]
        if not off then
            off = {}
            unqueued[level] = off
        end
        off[#off + 1] = m
        local stored = h[6] or ''
        local sets, dels = {}, {}
        if status == 'processed' then
            sets = {'s', status, 'fa', stamp}
            if o[8] ~= '' then
                sets[5] = 'res'
                sets[6] = o[8]
            end
            if stored ~= '' then
                dels = {'e', 'tb'}
            end
        else
            if err ~= '' then
                sets = {'e', err}
            elseif stored ~= '' then
                dels = {'e'}
            end
            -- No traceback with the error unchanged (a cancellation, a put-back) keeps the stored one.
            if tb ~= '' then
                sets[#sets + 1] = 'tb'
                sets[#sets + 1] = tb
            elseif err ~= stored then
                dels[#dels + 1] = 'tb'
            end
            dels[#dels + 1] = 'res'
        end
        if status == 'new' then
            local ra = o[6]
            if ra == '' then
                ra = h[5]
            end
            sets[#sets + 1] = 'ra'
            sets[#sets + 1] = ra
            if o[7] ~= '' then
                sets[#sets + 1] = 'r'
                sets[#sets + 1] = o[7]
            end
            if o[10] == '1' then  -- a snooze: counted, its retries left as they were
                sets[#sets + 1] = 'sn'
                sets[#sets + 1] = int((tonumber(h[8]) or 0) + 1)
            end
            dels[#dels + 1] = 'o'
            dels[#dels + 1] = 'lu'
            wake[q] = true
            local again = retried[level]
            if not again then
                again = {}
                retried[level] = again
            end
            again[#again + 1] = ra
            again[#again + 1] = m
        elseif status ~= 'processed' then
            sets[#sets + 1] = 's'
            sets[#sets + 1] = status
            sets[#sets + 1] = 'fa'
            sets[#sets + 1] = stamp
        end
        redis.call('HSET', key, unpack(sets))
        if #dels > 0 then
            redis.call('HDEL', key, unpack(dels))
        end
        if status ~= 'new' then
            add_done(done, q, status, id, h[3])
        end
        written[#written + 1] = id
    end
end
for q, gone in pairs(leaving) do
    chunked('ZREM', P .. 'lease:' .. q, gone)
    -- A queue with a global limit has room again: its waiting loops, in every process, look.
    if redis.call('HEXISTS', P .. 'limited', q) == 1 then
        wake[q] = true
    end
end
for level, off in pairs(unqueued) do
    chunked('ZREM', level, off)
end
for level, again in pairs(retried) do
    chunked('ZADD', level, again)
end
for q in pairs(wake) do
    redis.call('PUBLISH', P .. 'wake', 'q:' .. origin .. ':' .. q)
end
finish_all(done, now)
return written
