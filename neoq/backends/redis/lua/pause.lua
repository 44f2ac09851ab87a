-- pause_queue / resume_queue: ARGV[2] '1' to pause, '0' to resume, ARGV[3] the queue. A fetch
-- reads the paused set in its own script, so once this returns no claim of the queue is made
-- anywhere. Every listener hears ``p:<queue>`` (give back the jobs leased ahead for it, not
-- started) or, on resume, ``q:*:<queue>`` (look at it).
local paused = P .. 'paused'
if ARGV[2] == '1' then
    redis.call('SADD', paused, ARGV[3])
    redis.call('PUBLISH', P .. 'wake', 'p:' .. ARGV[3])
elseif redis.call('SREM', paused, ARGV[3]) == 1 then
    redis.call('PUBLISH', P .. 'wake', 'q:*:' .. ARGV[3])
end
return redis.call('SMEMBERS', paused)
