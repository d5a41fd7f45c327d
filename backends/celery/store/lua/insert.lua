-- KEYS: record, index, unique key (the record key when there is none), queue list or schedule set
-- ARGV: prefix, id, ttl_ms, enqueued score, index cut-off score, message, due score ('' = now),
--       has unique ('1'/'0'), then field/value pairs of the record
local id = ARGV[2]
if ARGV[8] == '1' then
  local holder = redis.call('GET', KEYS[3])
  if holder and holder ~= id and active(holder) then return holder end
  redis.call('SET', KEYS[3], id, 'PX', ARGV[3])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 9))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], id)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[5])
if ARGV[7] == '' then
  redis.call('LPUSH', KEYS[4], ARGV[6])
else
  redis.call('HSET', KEYS[1], 'message', ARGV[6])
  redis.call('ZADD', KEYS[4], ARGV[7], id)
end
return false
