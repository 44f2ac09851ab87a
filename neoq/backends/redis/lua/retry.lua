-- retry_job: ARGV[2] origin, ARGV[3] the id. A finished job is waiting again, due now, its
-- retries, attempts, error and finished_at reset. Returns {'missing'}, {'waiting'} (left as it
-- was), {'dup', id of the job holding the fingerprint} or {'ok'}. Its result, traceback and
-- progress go with its error.
local now = now_us()
local id = ARGV[3]
local key = job_key(id)
local h = redis.call('HMGET', key, 's', 'q', 'f', 'pr')
if not h[1] then
    return {'missing'}
end
if h[1] == 'new' then
    return {'waiting'}
end
local q, f = h[2], h[3]
local fps = P .. 'fp:' .. q
local other = redis.call('HGET', fps, f)
if other and other ~= id then
    return {'dup', other}
end
local ra = int(now)
redis.call('HSET', key, 's', 'new', 'ra', ra, 'r', 0, 'a', 0)
redis.call('HDEL', key, 'e', 'fa', 'o', 'lu', 'res', 'tb', 'pg', 'pn')
redis.call('ZREM', P .. 'done:' .. h[1], id)
redis.call('ZADD', due_key(q, h[4]), ra, member(id))
redis.call('HSET', fps, f, id)
redis.call('HINCRBY', P .. 'count:' .. q, h[1], -1)
redis.call('HINCRBY', P .. 'count:' .. q, 'new', 1)
redis.call('PUBLISH', P .. 'wake', 'q:' .. ARGV[2] .. ':' .. q)
return {'ok'}
