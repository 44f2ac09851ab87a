-- give_back (the lease engine's): ARGV[2] origin, then id, queue, token of each job leased but
-- never started: due again at its own time, its attempt uncounted, fenced by token.
local origin = ARGV[2]
local wake = {}
for b = 3, #ARGV, 3 do
    local id, q, token = ARGV[b], ARGV[b + 1], ARGV[b + 2]
    local key = job_key(id)
    local h = redis.call('HMGET', key, 't', 's', 'lu', 'ra', 'a', 'pr')
    if h[1] and h[1] == token and h[2] == 'new' and h[3] then
        local m = member(id)
        redis.call('HDEL', key, 'o', 'lu')
        if tonumber(h[5]) > 0 then
            redis.call('HINCRBY', key, 'a', -1)
        end
        redis.call('ZREM', P .. 'lease:' .. q, m)
        redis.call('ZADD', due_key(q, h[6]), h[4], m)
        if not wake[q] then
            wake[q] = true
            redis.call('PUBLISH', P .. 'wake', 'q:' .. origin .. ':' .. q)
        end
    end
end
return 0
