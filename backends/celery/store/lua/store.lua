-- What the result backend stores, with Celery's meta in the same round trip.
-- ARGV: prefix, id, Celery's meta key, mode ('final' | 'retry' | 'progress' | 'meta'), meta,
--       meta expiry s ('' = none), holder token ('' = none; 'node|' = that node's main process),
--       retry delay s ('' = none), the record's changed fields as a JSON object of strings (null:
--       remove the field), dependency error template, dependency meta template
-- Returns 1 stored, 0 refused (the record is final already), -1 refused (a stale holder: another
--   attempt holds the task now), or {1, {id, name, error}...} when dependents failed with it.
local id, meta_key, mode, token = ARGV[2], ARGV[3], ARGV[4], ARGV[7]
local record_key = prefix .. 'task:' .. id
local record = redis.call('HMGET', record_key, 'status', 'unique_key', 'error', 'message', 'holder', 'dependents')
local st = record[1]
if st then
  -- a final record never changes, nor does Celery's meta for it: a lost worker's late report,
  -- or the result of an attempt whose task was taken over, is dropped
  if is_final(st) then return 0 end
  local holder = record[5]
  if holder and ((token == '' and st == RUNNING) or (token ~= '' and not owns(holder, token))) then return -1 end
else
  -- a message sent without taskservice and never claimed: Celery's rule, kept (SUCCESS stays)
  local current = redis.call('GET', meta_key)
  if current and string.find(current, '"status":%s*"SUCCESS"') ~= nil then return 0 end
end
if ARGV[6] ~= '' then redis.call('SET', meta_key, ARGV[5], 'EX', ARGV[6]) else redis.call('SET', meta_key, ARGV[5]) end
redis.call('PUBLISH', meta_key, ARGV[5])
if not st or mode == 'meta' then return 1 end
if mode == 'progress' and st ~= RUNNING then return 1 end
-- only what changes: removing a field the record does not have is skipped (each call costs)
local present = {error = record[3], traceback = record[3], message = record[4]}
local set, drop = {}, {}
local new_status, finished_us
for name, value in pairs(cjson.decode(ARGV[9])) do
  if value ~= cjson.null then
    set[#set + 1] = name
    set[#set + 1] = value
    if name == 'status' then new_status = value elseif name == 'finished_at' then finished_us = value end
  elseif present[name] ~= false then
    drop[#drop + 1] = name
  end
end
if #set > 0 then redis.call('HSET', record_key, unpack(set)) end
if #drop > 0 then redis.call('HDEL', record_key, unpack(drop)) end
if new_status then
  if st == PENDING then redis.call('ZREM', prefix .. 'pending', id) end  -- failed before any claim
  count(st, new_status)
end
-- the lease is left to expire: a final or retrying status already says nobody runs the task, and
-- a parked duplicate in the schedule set finds the final status and is dropped by the dispatcher
if mode == 'final' then
  release_unique(record_key, id, record[2])
  -- the retention counts from the finish the worker recorded (``TRIM``): a TIME call per task saved,
  -- at the price of a retention that is off by that worker's clock skew
  local finished_s = finished_us and tonumber(finished_us) / 1e6 or redis_now()
  redis.call('ZADD', prefix .. 'finished', finished_s, id)
  if record[6] then
    local now_s, now_us = redis_now()
    local failed = settle_dependents(id, new_status or st, now_s, now_us, ARGV[10], ARGV[11], ARGV[6])
    if #failed > 0 then return {1, failed} end
  end
elseif mode == 'retry' and ARGV[8] ~= '' then
  local now_s = redis_now()
  redis.call('ZADD', prefix .. 'schedule', now_s + tonumber(ARGV[8]), id)
end
return 1
