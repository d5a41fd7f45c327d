-- Retention: remove records that finished more than TASK_RESULT_TTL_S ago (by Redis's clock), with
-- their entry in the listing index; active records are never in the finished set, so never removed.
-- ARGV: prefix, ttl s, limit. Returns how many were removed.
local prefix = ARGV[1]
local t = redis.call('TIME')
local cutoff = tonumber(t[1]) + tonumber(t[2]) / 1e6 - tonumber(ARGV[2])
local ids = redis.call('ZRANGEBYSCORE', prefix .. 'finished', '-inf', string.format('%.6f', cutoff),
                       'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  local record = prefix .. 'task:' .. id
  local st = redis.call('HGET', record, 'status')
  if st then redis.call('HINCRBY', prefix .. 'counts', st .. '>gone', 1) end
  redis.call('DEL', record)
  redis.call('ZREM', prefix .. 'index', id)
  redis.call('ZREM', prefix .. 'finished', id)
end
return #ids
