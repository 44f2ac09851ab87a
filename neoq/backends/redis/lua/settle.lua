-- settle_many (the lease engine's): ARGV[2] origin, ARGV[3] the outcomes (JSON): one array a job
-- of id, queue, token, status, error ("" none), run_after of a retry ("" keep), retries of a retry
-- ("" keep). Each is written only while the job still carries that token and is leased (fenced).
-- Returns the ids written. One HMGET and one write a finished job (its holder fields are left:
-- nothing reads them once it is not waiting; an error is cleared by writing ""), three a retry;
-- the sorted sets, fingerprints and counters one call per queue.
local now = now_us()
local origin = ARGV[2]
local written = {}
local done, leaving, retried = {}, {}, {}
local stamp = int(now)
for _, o in ipairs(cjson.decode(ARGV[3])) do
    local id, q, token, status, err = o[1], o[2], o[3], o[4], o[5]
    local key = job_key(id)
    local h = redis.call('HMGET', key, 't', 's', 'f', 'lu', 'ra')
    if h[1] == token and h[2] == 'new' and h[4] then
        local m = member(id)
        local gone = leaving[q]
        if not gone then
            gone = {}
            leaving[q] = gone
        end
        gone[#gone + 1] = m
        if status == 'new' then
            local ra = o[6]
            if ra == '' then
                ra = h[5]
            end
            local fields = {'ra', ra, 'e', err}
            if o[7] ~= '' then
                fields[5] = 'r'
                fields[6] = o[7]
            end
            redis.call('HSET', key, unpack(fields))
            redis.call('HDEL', key, 'o', 'lu')
            local again = retried[q]
            if not again then
                again = {}
                retried[q] = again
            end
            again[#again + 1] = ra
            again[#again + 1] = m
        else
            redis.call('HSET', key, 's', status, 'fa', stamp, 'e', err)
            add_done(done, q, status, id, h[3])
        end
        written[#written + 1] = id
    end
end
for q, gone in pairs(leaving) do
    chunked('ZREM', P .. 'lease:' .. q, gone)
    chunked('ZREM', P .. 'due:' .. q, gone)
end
for q, again in pairs(retried) do
    chunked('ZADD', P .. 'due:' .. q, again)
    redis.call('PUBLISH', P .. 'wake', 'q:' .. origin .. ':' .. q)
end
finish_all(done, now)
return written
