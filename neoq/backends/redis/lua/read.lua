-- get_job and list_jobs: ARGV[2] an id (get) or '' (list), ARGV[3] the queue or '', ARGV[4] the
-- status or '', ARGV[5] the limit. Rows of 14 values (rows.py), newest first. A list of one queue
-- reads its index (jobs:<queue>) from the newest down, 512 at a time, until it has the limit; a
-- list of every queue reads ids down from the latest (``seq``: ids are consecutive, and pruning
-- deletes the oldest first, so the newest ids are there).
local now = now_us()
local out = {}
if ARGV[2] ~= '' then
    row(ARGV[2], now, out)
    return out
end
local status, limit = ARGV[4], tonumber(ARGV[5])
local found = 0
local function take(id)
    local mark = #out
    if row(id, now, out) then
        if status == '' or out[mark + 5] == status then
            found = found + 1
        else
            for i = #out, mark + 1, -1 do
                out[i] = nil
            end
        end
    end
end
if ARGV[3] ~= '' then
    local index, start = P .. 'jobs:' .. ARGV[3], 0
    while found < limit do
        local ids = redis.call('ZREVRANGE', index, start, start + 511)
        if #ids == 0 then
            break
        end
        start = start + 512
        for _, id in ipairs(ids) do
            take(id)
            if found >= limit then
                break
            end
        end
    end
else
    local id = tonumber(redis.call('GET', P .. 'seq') or '0')
    while found < limit and id > 0 do
        take(int(id))
        id = id - 1
    end
end
return out
