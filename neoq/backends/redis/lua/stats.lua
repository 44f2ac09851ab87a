-- stats: per queue, new (waiting), running, processed, failed, cancelled.
local now = int(now_us())
local out = {}
for _, q in ipairs(redis.call('SMEMBERS', P .. 'queues')) do
    local c = redis.call('HMGET', P .. 'count:' .. q, 'new', 'processed', 'failed', 'cancelled')
    local running = redis.call('ZCOUNT', P .. 'lease:' .. q, '(' .. now, '+inf')
    out[#out + 1] = q
    out[#out + 1] = (tonumber(c[1]) or 0) - running
    out[#out + 1] = running
    out[#out + 1] = tonumber(c[2]) or 0
    out[#out + 1] = tonumber(c[3]) or 0
    out[#out + 1] = tonumber(c[4]) or 0
end
return out
