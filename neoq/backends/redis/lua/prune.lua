-- prune: ARGV[2] the most jobs to delete, ARGV[3..5] the cutoffs (microseconds, '' none) of
-- processed, failed and cancelled jobs, ARGV[6] the cutoff of cron tick records ('' none; a
-- schedule's latest tick is always kept). Returns how many jobs were deleted. The unique_for
-- windows (``uf:<queue>``) last opened before the failed jobs' cutoff are forgotten too, as on
-- the SQL stores (at most ARGV[2] a call).
local left = tonumber(ARGV[2])
local deleted = 0
local statuses = {'processed', 'failed', 'cancelled'}
for i, status in ipairs(statuses) do
    local cutoff = ARGV[2 + i]
    if cutoff ~= '' and left > 0 then
        local done = P .. 'done:' .. status
        local ids = redis.call('ZRANGEBYSCORE', done, '-inf', '(' .. cutoff, 'LIMIT', 0, left)
        for _, id in ipairs(ids) do
            local key = job_key(id)
            local q = redis.call('HGET', key, 'q')
            redis.call('ZREM', done, id)
            if q then
                redis.call('DEL', key)
                redis.call('ZREM', P .. 'jobs:' .. q, id)
                redis.call('HINCRBY', P .. 'count:' .. q, status, -1)
            end
            deleted = deleted + 1
        end
        left = left - #ids
    end
end
if ARGV[4] ~= '' then
    local closed = redis.call('ZRANGEBYSCORE', P .. 'ufat', '-inf', '(' .. ARGV[4], 'LIMIT', 0, tonumber(ARGV[2]))
    for _, member in ipairs(closed) do
        local cut = string.find(member, '\0', 1, true)  -- a queue name holds no NUL
        redis.call('HDEL', P .. 'uf:' .. string.sub(member, 1, cut - 1), string.sub(member, cut + 1))
        redis.call('ZREM', P .. 'ufat', member)
    end
end
if ARGV[6] ~= '' then
    for _, k in ipairs(redis.call('SMEMBERS', P .. 'tickkeys')) do
        local ticks = P .. 'ticks:' .. k
        local last = redis.call('ZRANGE', ticks, -1, -1, 'WITHSCORES')
        if #last > 0 then
            local cut = math.min(tonumber(ARGV[6]), tonumber(last[2]))
            redis.call('ZREMRANGEBYSCORE', ticks, '-inf', '(' .. int(cut))
        end
    end
end
return deleted
