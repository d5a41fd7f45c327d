-- KEYS: record, schedule set, Celery's meta key
-- ARGV: prefix, id, now_us, (unused), REVOKED meta, meta expiry s ('' = none), dependency error template,
--       dependency meta template
-- Returns -1 unknown id, 0 already running or finished, 1 cancelled (it will never run), or
--   {1, {id, name, error}...} when tasks waiting for it (after=) failed with it.
-- A running task is never cancelled, even one whose lease lapsed: its holder may be alive (frozen,
-- cut off) and about to take the lease back, or the task is re-published and runs again.
local id = ARGV[2]
local f = redis.call('HMGET', KEYS[1], 'status', 'unique_key', 'dependents')
local st = f[1]
if not st then return -1 end
if not CLAIMABLE[st] then return 0 end
redis.call('HSET', KEYS[1], 'status', CANCELLED, 'finished_at', ARGV[3])
redis.call('HDEL', KEYS[1], 'message')
release_unique(KEYS[1], id, f[2])
if st == PENDING then redis.call('ZREM', prefix .. 'pending', id) end
count(st, CANCELLED)
local now_s, now_us = redis_now()
redis.call('ZADD', prefix .. 'finished', now_s, id)
redis.call('ZREM', KEYS[2], id)
if ARGV[6] ~= '' then redis.call('SET', KEYS[3], ARGV[5], 'EX', ARGV[6]) else redis.call('SET', KEYS[3], ARGV[5]) end
redis.call('PUBLISH', KEYS[3], ARGV[5])
if f[3] then
  local failed = settle_dependents(id, CANCELLED, now_s, now_us, ARGV[7], ARGV[8], ARGV[6])
  if #failed > 0 then return {1, failed} end
end
return 1
