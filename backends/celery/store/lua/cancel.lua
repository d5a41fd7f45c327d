-- KEYS: record, schedule set, Celery's meta key
-- ARGV: prefix, id, now_us, ttl_ms, REVOKED meta, meta expiry s ('' = none)
-- Returns -1 unknown id, 0 already running or finished, 1 cancelled (it will never run).
local id = ARGV[2]
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return -1 end
if st == RUNNING then
  -- a running task cannot be stopped; one whose worker died (lease gone) waits for redelivery
  if redis.call('EXISTS', prefix .. 'lease:' .. id) == 1 then return 0 end
elseif not CLAIMABLE[st] then
  return 0
end
redis.call('HSET', KEYS[1], 'status', CANCELLED, 'finished_at', ARGV[3])
redis.call('HDEL', KEYS[1], 'message')
release_unique(KEYS[1], id)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('ZREM', KEYS[2], id)
if ARGV[6] ~= '' then redis.call('SET', KEYS[3], ARGV[5], 'EX', ARGV[6]) else redis.call('SET', KEYS[3], ARGV[5]) end
redis.call('PUBLISH', KEYS[3], ARGV[5])
return 1
