-- settle_many (the lease engine's): ARGV[2] origin, then 7 values an outcome: id, queue, token,
-- status, error ("" none, else "=" and the text), run_after of a retry ("" keep), retries of a
-- retry ("" keep). Each is written only while the job still carries that token and is leased
-- (fenced). Returns the ids written. One HMGET and one or two writes a job; the sorted sets,
-- fingerprints and counters one call per queue.
local now = now_us()
local origin = ARGV[2]
local written = {}
local wake, done, leaving, retried = {}, {}, {}, {}
local stamp = int(now)
for b = 3, #ARGV, 7 do
    local id, q, token, status, err = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
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
            local ra = ARGV[b + 5]
            if ra == '' then
                ra = h[5]
            end
            local fields = {'ra', ra}
            if ARGV[b + 6] ~= '' then
                fields[3] = 'r'
                fields[4] = ARGV[b + 6]
            end
            if err ~= '' then
                fields[#fields + 1] = 'e'
                fields[#fields + 1] = string.sub(err, 2)
            end
            redis.call('HSET', key, unpack(fields))
            if err == '' then
                redis.call('HDEL', key, 'o', 'lu', 'e')
            else
                redis.call('HDEL', key, 'o', 'lu')
            end
            local again = retried[q]
            if not again then
                again = {}
                retried[q] = again
            end
            again[#again + 1] = ra
            again[#again + 1] = m
        else
            if err == '' then
                redis.call('HSET', key, 's', status, 'fa', stamp)
                redis.call('HDEL', key, 'o', 'lu', 'e')
            else
                redis.call('HSET', key, 's', status, 'fa', stamp, 'e', string.sub(err, 2))
                redis.call('HDEL', key, 'o', 'lu')
            end
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
