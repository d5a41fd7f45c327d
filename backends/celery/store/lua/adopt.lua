-- A record for a message sent without taskservice (another tool's beat, send_task), before its claim.
-- KEYS: record, index; ARGV: id, now_us, now score, (unused), name, queue, max_retries, retry_backoff,
--       timeout ('' = none), prefix
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'name', ARGV[5], 'status', PENDING, 'enqueued_at', ARGV[2], 'queue', ARGV[6],
           'max_retries', ARGV[7], 'retry_backoff', ARGV[8])
if ARGV[9] ~= '' then redis.call('HSET', KEYS[1], 'timeout', ARGV[9]) end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('ZADD', ARGV[10] .. 'pending', ARGV[3], ARGV[1])
redis.call('HINCRBY', ARGV[10] .. 'counts', 'new>' .. PENDING, 1)
return 1
