-- get_job and list_jobs: ARGV[2] an id (get) or '' (list), ARGV[3] the queue or '', ARGV[4] the
-- status or '', ARGV[5] the limit. Rows of 14 values (rows.py), newest first; a list reads the
-- job index from the newest down, 512 at a time, until it has the limit.
local now = now_us()
local out = {}
if ARGV[2] ~= '' then
    row(ARGV[2], now, out)
    return out
end
local index = P .. 'jobs'
if ARGV[3] ~= '' then
    index = P .. 'jobs:' .. ARGV[3]
end
local status, limit = ARGV[4], tonumber(ARGV[5])
local found, start = 0, 0
while found < limit do
    local ids = redis.call('ZREVRANGE', index, start, start + 511)
    if #ids == 0 then
        break
    end
    start = start + 512
    for _, id in ipairs(ids) do
        if status == '' then
            if row(id, now, out) then
                found = found + 1
            end
        else
            local mark = #out
            if row(id, now, out) then
                if out[mark + 5] == status then
                    found = found + 1
                else
                    for i = #out, mark + 1, -1 do
                        out[i] = nil
                    end
                end
            end
        end
        if found >= limit then
            break
        end
    end
end
return out
