-- cancel_job: ARGV[2] the id. A waiting or running job becomes cancelled at once; a running one's
-- holder finds its lease lost at its next heartbeat and stops the handler. Returns 'missing',
-- 'finished' (left as it was), 'cancelled' or 'running' (it was running).
local now = now_us()
local id = ARGV[2]
local key = job_key(id)
local h = redis.call('HMGET', key, 's', 'q', 'f', 'lu', 'pr')
if not h[1] then
    return 'missing'
end
if h[1] ~= 'new' then
    return 'finished'
end
local q, m = h[2], member(id)
redis.call('HSET', key, 's', 'cancelled', 'fa', int(now))
redis.call('HDEL', key, 'o', 'lu')
redis.call('ZREM', due_key(q, h[5]), m)
redis.call('ZREM', P .. 'lease:' .. q, m)
local done = {}
add_done(done, q, 'cancelled', id, h[3])
finish_all(done, now)
if h[4] and tonumber(h[4]) > now then
    return 'running'
end
return 'cancelled'
