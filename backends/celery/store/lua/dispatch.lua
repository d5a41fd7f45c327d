-- Move due entries of the schedule set onto their queues: the ZREM and the LPUSH are one step, so
-- two dispatchers never push the same entry and a crash between them cannot lose one.
-- KEYS: schedule set; ARGV: prefix, now score, limit
-- Returns {moved, next due score or ''}.
local prefix = ARGV[1]
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local moved = 0
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  local record = prefix .. 'task:' .. id
  local fields = redis.call('HMGET', record, 'status', 'message', 'queue')
  local st, message, queue = fields[1], fields[2], fields[3]
  if message and st and not FINAL[st] then
    redis.call('LPUSH', queue or 'celery', message)
    redis.call('HDEL', record, 'message')
    moved = moved + 1
  end
end
local following = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {moved, following[2] or ''}
