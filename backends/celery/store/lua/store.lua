-- What the result backend stores, with Celery's meta in the same round trip.
-- ARGV: prefix, id, Celery's meta key, mode ('final' | 'retry' | 'progress' | 'meta'), meta,
--       meta expiry s ('' = none), ttl_ms, due score of a retry ('' = none), the record's changed
--       fields as a JSON object of strings (null: remove the field)
local id, meta_key, mode = ARGV[2], ARGV[3], ARGV[4]
local record_key = prefix .. 'task:' .. id
local record = redis.call('HMGET', record_key, 'status', 'unique_key', 'error', 'message')
local st = record[1]
-- Celery's rule, kept: once SUCCESS is stored nothing overwrites it (a lost worker's late report)
local success_stored
if st then
  success_stored = st == SUCCEEDED
else
  local current = redis.call('GET', meta_key)
  success_stored = current and string.find(current, '"status":%s*"SUCCESS"') ~= nil
end
if success_stored then return 0 end
if ARGV[6] ~= '' then redis.call('SET', meta_key, ARGV[5], 'EX', ARGV[6]) else redis.call('SET', meta_key, ARGV[5]) end
redis.call('PUBLISH', meta_key, ARGV[5])
if not st or mode == 'meta' or is_final(st) then return 1 end
if mode == 'progress' and st ~= RUNNING then return 1 end
-- only what changes: removing a field the record does not have is skipped (each call costs)
local present = {error = record[3], traceback = record[3], message = record[4]}
local set, drop = {}, {}
for name, value in pairs(cjson.decode(ARGV[9])) do
  if value ~= cjson.null then
    set[#set + 1] = name
    set[#set + 1] = value
  elseif present[name] ~= false then
    drop[#drop + 1] = name
  end
end
if #set > 0 then redis.call('HSET', record_key, unpack(set)) end
if #drop > 0 then redis.call('HDEL', record_key, unpack(drop)) end
-- the lease is left to expire: a final or retrying status already says nobody runs the task, and
-- a parked duplicate in the schedule set finds the final status and is dropped by the dispatcher
if mode == 'final' then
  if record[2] and redis.call('GET', prefix .. 'unique:' .. record[2]) == id then
    redis.call('DEL', prefix .. 'unique:' .. record[2])
  end
  redis.call('PEXPIRE', record_key, ARGV[7])
elseif mode == 'retry' and ARGV[8] ~= '' then
  redis.call('ZADD', prefix .. 'schedule', ARGV[8], id)
end
return 1
