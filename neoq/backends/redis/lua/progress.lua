-- progress: ARGV[2] the id, ARGV[3] the lease's token, ARGV[4] the fraction, ARGV[5] '1' with a
-- note (ARGV[6]) or '0' without. Written only while that lease holds the job (fenced, as a
-- settle): a holder whose lease was lost writes nothing. The report stays once the job finishes.
local key = job_key(ARGV[2])
local h = redis.call('HMGET', key, 't', 's', 'lu')
if h[1] ~= ARGV[3] or h[2] ~= 'new' or not h[3] then
    return 0
end
if ARGV[5] == '1' then
    redis.call('HSET', key, 'pg', ARGV[4], 'pn', ARGV[6])
else
    redis.call('HSET', key, 'pg', ARGV[4])
    redis.call('HDEL', key, 'pn')
end
return 1
