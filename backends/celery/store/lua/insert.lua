-- KEYS: record, index, unique key (the record key when there is none), queue list or schedule set
-- ARGV: prefix, id, (unused), enqueued score, status, message, due score ('' = now),
--       has unique ('1'/'0'), after ('' = none), dependency error template, dependency meta template,
--       meta expiry s, then field/value pairs of the record
-- Returns {'ok'}, {'conflict', holder}, {'notfound'} (after= names no task) or {'failed', its status}.
-- The record has no expiry while it is active: TASK_RESULT_TTL_S counts from when it finishes.
local id, status, after = ARGV[2], ARGV[5], ARGV[9]
local dependency
if after ~= '' then
  dependency = redis.call('HGET', prefix .. 'task:' .. after, 'status')
  if not dependency then return {'notfound'} end
end
local failing = dependency and is_final(dependency) and dependency ~= SUCCEEDED
if ARGV[8] == '1' and not failing then
  local holder = redis.call('GET', KEYS[3])
  if holder and holder ~= id and active(holder) then return {'conflict', holder} end
  redis.call('SET', KEYS[3], id)
end
redis.call('HSET', KEYS[1], unpack(ARGV, 13))
redis.call('ZADD', KEYS[2], ARGV[4], id)
count('new', status)
if failing then  -- the task it waits for already failed or was cancelled: decided at once
  local now_s, now_us = redis_now()
  redis.call('HSET', KEYS[1], 'status', FAILED, 'finished_at', now_us, 'attempts', '0',
             'error', plain_sub(plain_sub(ARGV[10], '\1', after), '\2', dependency))
  count(status, FAILED)
  redis.call('ZADD', prefix .. 'finished', now_s, id)
  local err = redis.call('HGET', KEYS[1], 'error')
  local meta = plain_sub(plain_sub(ARGV[11], '\3', cjson.encode(err)), '\4', cjson.encode(id))
  local meta_key = 'celery-task-meta-' .. id
  if ARGV[12] ~= '' then redis.call('SET', meta_key, meta, 'EX', ARGV[12]) else redis.call('SET', meta_key, meta) end
  redis.call('PUBLISH', meta_key, meta)
  return {'failed', dependency}
end
if status == PENDING then redis.call('ZADD', prefix .. 'pending', ARGV[4], id) end
if dependency and dependency ~= SUCCEEDED then  -- waits: the message is held until the dependency is final
  redis.call('HSET', KEYS[1], 'after', after, 'message', ARGV[6])
  redis.call('SADD', prefix .. 'waiting:' .. after, id)
  redis.call('HSET', prefix .. 'task:' .. after, 'dependents', '1')
elseif ARGV[7] == '' then
  redis.call('LPUSH', KEYS[4], ARGV[6])
else
  redis.call('HSET', KEYS[1], 'message', ARGV[6])
  redis.call('ZADD', KEYS[4], ARGV[7], id)
end
return {'ok'}
