-- enqueue_tick: ARGV[2] origin, ARGV[3] the schedule's key, ARGV[4] the tick (microseconds),
-- ARGV[5] one job (as enqueue's). {'seen'} when the tick was recorded before; else as enqueue, the tick
-- recorded with its job (a duplicate job records nothing).
local ticks = P .. 'ticks:' .. ARGV[3]
if redis.call('ZSCORE', ticks, ARGV[4]) then
    return {'seen'}
end
local out = enqueue_jobs(now_us(), ARGV[2], ARGV[5])
if type(out) == 'number' then
    redis.call('ZADD', ticks, ARGV[4], ARGV[4])
    redis.call('SADD', P .. 'tickkeys', ARGV[3])
end
return out
