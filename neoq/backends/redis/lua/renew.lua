-- renew (the lease engine's heartbeat): ARGV[2] the lease (microseconds), ARGV[3] renew only
-- leases with less than this left, then id, queue, token of each lease. Returns the leases lost
-- as id, status pairs (status false: the job is gone).
local now = now_us()
local lease, below = tonumber(ARGV[2]), tonumber(ARGV[3])
local lost = {}
for b = 4, #ARGV, 3 do
    local id, q, token = ARGV[b], ARGV[b + 1], ARGV[b + 2]
    local key = job_key(id)
    local h = redis.call('HMGET', key, 't', 's', 'lu', 'pr')
    if not h[2] then
        lost[#lost + 1] = id
        lost[#lost + 1] = false
    elseif h[1] ~= token or h[2] ~= 'new' or not h[3] then
        lost[#lost + 1] = id
        lost[#lost + 1] = h[2]
    elseif tonumber(h[3]) - now < below then
        local expiry = int(now + lease)
        local m = member(id)
        redis.call('HSET', key, 'lu', expiry)
        redis.call('ZADD', due_key(q, h[4]), expiry, m)
        redis.call('ZADD', P .. 'lease:' .. q, expiry, m)
    end
end
return lost
