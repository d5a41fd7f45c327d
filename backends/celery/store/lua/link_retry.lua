-- Add a retry's id to the original's ``retried_as`` (a JSON list); nothing if the original expired.
-- KEYS: the original's record; ARGV: the retry's id
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local current = redis.call('HGET', KEYS[1], 'retried_as')
local ids = current and cjson.decode(current) or {}
table.insert(ids, ARGV[1])
redis.call('HSET', KEYS[1], 'retried_as', cjson.encode(ids))
return 1
