-- give_back (the lease engine's): ARGV[2] origin ('' wakes nobody), then id, queue, token, due
-- time (microseconds) of each job leased but never started: due again at that time (its own, or a
-- later one for a job a rate limit put off), its attempt uncounted, fenced by token.
local origin = ARGV[2]
local wake = {}
for b = 3, #ARGV, 4 do
    local id, q, token = ARGV[b], ARGV[b + 1], ARGV[b + 2]
    local key = job_key(id)
    local h = redis.call('HMGET', key, 't', 's', 'lu', 'ra', 'a', 'pr')
    if h[1] and h[1] == token and h[2] == 'new' and h[3] then
        local m = member(id)
        redis.call('HDEL', key, 'o', 'lu')
        redis.call('HSET', key, 'ra', ARGV[b + 3])
        if tonumber(h[5]) > 0 then
            redis.call('HINCRBY', key, 'a', -1)
        end
        redis.call('ZREM', P .. 'lease:' .. q, m)
        redis.call('ZADD', due_key(q, h[6]), ARGV[b + 3], m)
        if origin ~= '' and not wake[q] then
            wake[q] = true
            redis.call('PUBLISH', P .. 'wake', 'q:' .. origin .. ':' .. q)
        end
    end
end
return 0
