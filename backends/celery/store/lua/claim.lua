-- The worker's claim before a body runs: as few commands as the common path allows.
-- ARGV: prefix, id, now_us, lease token, lease_ms
-- Returns {'run', attempts, max_retries, retry_backoff, timeout or '', headers or ''}, {'busy', lease_ms_left},
--   {'conflict', unique_key, holder}, {'waiting'} (after= not settled), {'missing'} (no record: see ADOPT),
--   or {its final status}.
local id = ARGV[2]
local record_key, lease_key = prefix .. 'task:' .. id, prefix .. 'lease:' .. id
local record = redis.call('HMGET', record_key, 'status', 'unique_key', 'attempts', 'max_retries', 'retry_backoff',
                          'timeout', 'headers', 'after')
local st = record[1]
if not st then return {'missing'} end
if is_final(st) then return {st} end
if st == RUNNING then
  local left = redis.call('PTTL', lease_key)
  if left > 0 then return {'busy', tostring(left)} end
  -- its holder stopped refreshing (dead, cut off or frozen): this delivery takes over, and the
  -- old holder learns it lost the lease at its next refresh; its late result is refused
end
if record[8] then return {'waiting'} end
local key = record[2]
if key then
  local holder = redis.call('GET', prefix .. 'unique:' .. key)
  if holder ~= id then
    if holder and active(holder) then return {'conflict', key, holder} end
    redis.call('SET', prefix .. 'unique:' .. key, id)
  end
end
local attempts = (tonumber(record[3]) or 0) + 1
redis.call('HSET', record_key, 'status', RUNNING, 'started_at', ARGV[3], 'attempts', tostring(attempts),
           'holder', ARGV[4])
if attempts > 1 then redis.call('HDEL', record_key, 'progress', 'progress_message') end  -- a new attempt starts at 0
redis.call('SET', lease_key, ARGV[4], 'PX', ARGV[5])
-- pending -> running is counted by leaving the pending set (which also orders the oldest pending)
if st == PENDING then redis.call('ZREM', prefix .. 'pending', id) else count(st, RUNNING) end
return {'run', tostring(attempts), record[4] or '0', record[5] or '1', record[6] or '', record[7] or ''}
