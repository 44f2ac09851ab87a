-- rate_take: a start of a rate-limited queue's key. ARGV[2] the queue, ARGV[3] the key, ARGV[4]
-- the most starts in a window, ARGV[5] the window (microseconds). The window's starts are the
-- sorted set ``rate:<queue>:<key>`` (scored by when they were taken). Returns 0 when a start was
-- taken, else the microseconds until the window has room.
local now = now_us()
local starts = P .. 'rate:' .. ARGV[2] .. ':' .. ARGV[3]
local per = tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', starts, '-inf', '(' .. int(now - per))
if redis.call('ZCARD', starts) < tonumber(ARGV[4]) then
    redis.call('ZADD', starts, int(now), int(now) .. ':' .. redis.call('INCR', P .. 'starts'))
    redis.call('PEXPIRE', starts, math.ceil(per / 1000) + 1000)
    return 0
end
local oldest = redis.call('ZRANGE', starts, 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + per - now)
