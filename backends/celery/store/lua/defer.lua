-- Park a delivered message for ``delay`` seconds of Redis's clock (a duplicate whose task runs elsewhere).
-- ARGV: prefix, id, delay s, message. Returns 1 parked, 0 dropped (the task is final or unknown).
local prefix, id = ARGV[1], ARGV[2]
local record = prefix .. 'task:' .. id
local st = redis.call('HGET', record, 'status')
if not st or FINAL[st] then return 0 end
local t = redis.call('TIME')
redis.call('HSET', record, 'message', ARGV[4])
redis.call('ZADD', prefix .. 'schedule', tonumber(t[1]) + tonumber(t[2]) / 1e6 + tonumber(ARGV[3]), id)
return 1
