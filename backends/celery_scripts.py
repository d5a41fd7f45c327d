"""The Lua scripts behind the Celery backend's task records: each state change is one atomic round trip.

Keys (``P`` is the key prefix, ``taskservice:`` by default):

``P task:ID``     hash: the record (name, status, timestamps in microseconds, attempts, error, ...)
``P lease:ID``    string: the token of the worker process running ID; it refreshes the expiry
``P unique:KEY``  string: the id of the task holding ``unique_key`` KEY
``P index``       sorted set: ids by enqueue time (``list_tasks``)
``P schedule``    sorted set: ids by due time; their broker message waits in the record's ``message``

A task is *active* (holds its unique_key) while ``pending``/``scheduled``/``retrying``, or
``running`` with a live lease: a running task whose worker died stops holding it once the lease
expires, and no longer counts as running elsewhere, so its redelivered message may run it.
"""

from __future__ import annotations

_ACTIVE = """
local prefix = ARGV[1]
local function active(id)
  local st = redis.call('HGET', prefix .. 'task:' .. id, 'status')
  if st == 'pending' or st == 'scheduled' or st == 'retrying' then return true end
  if st == 'running' then return redis.call('EXISTS', prefix .. 'lease:' .. id) == 1 end
  return false
end
local function release_unique(record, id)
  local key = redis.call('HGET', record, 'unique_key')
  if key and redis.call('GET', prefix .. 'unique:' .. key) == id then
    redis.call('DEL', prefix .. 'unique:' .. key)
  end
end
local function is_final(st)
  return st == 'succeeded' or st == 'failed' or st == 'cancelled'
end
"""

# KEYS: record, index, unique key (the record key when there is none), queue list or schedule set
# ARGV: prefix, id, ttl_ms, enqueued score, index cut-off score, message, due score ('' = now),
#       has unique ('1'/'0'), then field/value pairs of the record
INSERT = (
    _ACTIVE
    + """
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
"""
)

# KEYS: record, lease, Celery's meta key, index
# ARGV: prefix, id, now_us, lease token, lease_ms, STARTED meta, meta expiry s ('' = none),
#       ttl_ms, then the defaults for a record this worker creates (a message sent without
#       taskservice: beat of another tool, send_task): name, enqueued score, queue, max_retries,
#       retry_backoff, timeout ('' = none)
# Returns {verdict, ...}: {'run', attempts, max_retries, retry_backoff, timeout},
#   {'busy', lease_ms_left}, {'conflict', unique_key, holder}, or {final status}.
CLAIM = (
    _ACTIVE
    + """
local id = ARGV[2]
local st = redis.call('HGET', KEYS[1], 'status')
if is_final(st) then return {st} end
if st == 'running' then
  local left = redis.call('PTTL', KEYS[2])
  if left > 0 then return {'busy', tostring(left)} end
end
if not st then
  redis.call('HSET', KEYS[1], 'name', ARGV[9], 'enqueued_at', ARGV[3], 'queue', ARGV[11],
             'max_retries', ARGV[12], 'retry_backoff', ARGV[13])
  if ARGV[14] ~= '' then redis.call('HSET', KEYS[1], 'timeout', ARGV[14]) end
  redis.call('PEXPIRE', KEYS[1], ARGV[8])
  redis.call('ZADD', KEYS[4], ARGV[10], id)
end
local key = redis.call('HGET', KEYS[1], 'unique_key')
if key then
  local holder = redis.call('GET', prefix .. 'unique:' .. key)
  if holder and holder ~= id and active(holder) then return {'conflict', key, holder} end
  if holder ~= id then redis.call('SET', prefix .. 'unique:' .. key, id, 'PX', ARGV[8]) end
end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[3])
redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[5])
if ARGV[7] ~= '' then redis.call('SET', KEYS[3], ARGV[6], 'EX', ARGV[7]) else redis.call('SET', KEYS[3], ARGV[6]) end
local options = redis.call('HMGET', KEYS[1], 'max_retries', 'retry_backoff', 'timeout')
return {'run', tostring(attempts), options[1] or '0', options[2] or '1', options[3] or ''}
"""
)

# What the result backend stores, with Celery's meta in the same round trip.
# KEYS: record, lease, Celery's meta key, schedule set
# ARGV: prefix, id, mode ('final' | 'retry' | 'progress' | 'meta'), meta, meta expiry s ('' = none),
#       ttl_ms, due score of a retry ('' = none), number of field/value pairs N, the 2N pair items,
#       then names of fields to delete
STORE = (
    _ACTIVE
    + """
local id = ARGV[2]
local mode = ARGV[3]
local st = redis.call('HGET', KEYS[1], 'status')
-- Celery's rule, kept: once SUCCESS is stored nothing overwrites it (a lost worker's late report)
local success_stored
if st then
  success_stored = st == 'succeeded'
else
  local current = redis.call('GET', KEYS[3])
  success_stored = current and string.find(current, '"status":%s*"SUCCESS"') ~= nil
end
if success_stored then return 0 end
if ARGV[5] ~= '' then redis.call('SET', KEYS[3], ARGV[4], 'EX', ARGV[5]) else redis.call('SET', KEYS[3], ARGV[4]) end
redis.call('PUBLISH', KEYS[3], ARGV[4])
if not st or mode == 'meta' or is_final(st) then return 1 end
if mode == 'progress' and st ~= 'running' then return 1 end
local pairs_n = tonumber(ARGV[8])
if pairs_n > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, 9, 8 + 2 * pairs_n)) end
if #ARGV > 8 + 2 * pairs_n then redis.call('HDEL', KEYS[1], unpack(ARGV, 9 + 2 * pairs_n)) end
if mode == 'final' then
  release_unique(KEYS[1], id)
  redis.call('DEL', KEYS[2])
  redis.call('ZREM', KEYS[4], id)
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
elseif mode == 'retry' then
  redis.call('DEL', KEYS[2])
  if ARGV[7] ~= '' then redis.call('ZADD', KEYS[4], ARGV[7], id) end
end
return 1
"""
)

# KEYS: record, schedule set, Celery's meta key
# ARGV: prefix, id, now_us, ttl_ms, REVOKED meta, meta expiry s ('' = none)
# Returns -1 unknown id, 0 already running or finished, 1 cancelled (it will never run).
CANCEL = (
    _ACTIVE
    + """
local id = ARGV[2]
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return -1 end
if st == 'running' then
  -- a running task cannot be stopped; one whose worker died (lease gone) waits for redelivery
  if redis.call('EXISTS', prefix .. 'lease:' .. id) == 1 then return 0 end
elseif st ~= 'pending' and st ~= 'scheduled' and st ~= 'retrying' then
  return 0
end
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', ARGV[3])
redis.call('HDEL', KEYS[1], 'message')
release_unique(KEYS[1], id)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('ZREM', KEYS[2], id)
if ARGV[6] ~= '' then redis.call('SET', KEYS[3], ARGV[5], 'EX', ARGV[6]) else redis.call('SET', KEYS[3], ARGV[5]) end
redis.call('PUBLISH', KEYS[3], ARGV[5])
return 1
"""
)

# Move due entries of the schedule set onto their queues: the ZREM and the LPUSH are one step, so
# two dispatchers never push the same entry and a crash between them cannot lose one.
# KEYS: schedule set; ARGV: prefix, now score, limit
# Returns {moved, next due score or ''}.
DISPATCH = """
local prefix = ARGV[1]
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local moved = 0
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  local record = prefix .. 'task:' .. id
  local fields = redis.call('HMGET', record, 'status', 'message', 'queue')
  local st, message, queue = fields[1], fields[2], fields[3]
  if message and st and st ~= 'succeeded' and st ~= 'failed' and st ~= 'cancelled' then
    redis.call('LPUSH', queue or 'celery', message)
    redis.call('HDEL', record, 'message')
    moved = moved + 1
  end
end
local following = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {moved, following[2] or ''}
"""
