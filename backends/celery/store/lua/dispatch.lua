-- Move due entries of the schedule set onto their queues: the ZREM and the LPUSH are one step, so
-- two dispatchers never push the same entry and a crash between them cannot lose one. "Due" is by
-- Redis's clock, so a worker whose clock runs ahead fires nothing early.
-- KEYS: schedule set; ARGV: prefix, limit
-- Returns {moved, next due score or '', Redis's time now}.
local prefix = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%.6f', now), 'LIMIT', 0, tonumber(ARGV[2]))
local moved = 0
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  local record = prefix .. 'task:' .. id
  local fields = redis.call('HMGET', record, 'status', 'message', 'queue', 'after')
  local st, message, queue = fields[1], fields[2], fields[3]
  if message and st and not FINAL[st] and not fields[4] then
    redis.call('LPUSH', queue or 'celery', message)
    redis.call('HDEL', record, 'message')
    moved = moved + 1
  end
end
local following = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {moved, following[2] or '', string.format('%.6f', now)}
