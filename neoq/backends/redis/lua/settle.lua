-- settle_many (the lease engine's): ARGV[2] origin, then 7 values an outcome: id, queue, token,
-- status, error ("" none, else "=" and the text), run_after of a retry ("" keep), retries of a
-- retry ("" keep). Each is written only while the job still carries that token and is waiting
-- (fenced). Returns the ids written.
local now = now_us()
local origin = ARGV[2]
local written = {}
local wake = {}
for b = 3, #ARGV, 7 do
    local id, q, token, status, err = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
    local key = job_key(id)
    local h = redis.call('HMGET', key, 't', 's', 'f', 'lu')
    if h[1] and h[1] == token and h[2] == 'new' and h[4] then
        local m = member(id)
        redis.call('ZREM', P .. 'lease:' .. q, m)
        redis.call('HDEL', key, 'o', 'lu')
        if err == '' then
            redis.call('HDEL', key, 'e')
        else
            redis.call('HSET', key, 'e', string.sub(err, 2))
        end
        if status == 'new' then
            local ra = ARGV[b + 5]
            if ra == '' then
                ra = redis.call('HGET', key, 'ra')
            else
                redis.call('HSET', key, 'ra', ra)
            end
            if ARGV[b + 6] ~= '' then
                redis.call('HSET', key, 'r', ARGV[b + 6])
            end
            redis.call('ZADD', P .. 'due:' .. q, ra, m)
            if not wake[q] then
                wake[q] = true
                redis.call('PUBLISH', P .. 'wake', 'q:' .. origin .. ':' .. q)
            end
        else
            redis.call('HSET', key, 's', status, 'fa', int(now))
            redis.call('ZREM', P .. 'due:' .. q, m)
            finish(id, q, h[3], status, now)
        end
        written[#written + 1] = id
    end
end
return written
