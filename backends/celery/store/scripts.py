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

The two scripts a worker runs for every task (``CLAIM``, ``STORE``) derive their keys from the
prefix and the id instead of taking them as ``KEYS``: every argument costs on both sides of a
call that is on every task's path. That, like the keys the other scripts derive, ties the layout
to one Redis server (not Redis Cluster), which is what Celery's Redis transport supports anyway.
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

# The worker's claim before a body runs: as few commands as the common path allows.
# ARGV: prefix, id, now_us, lease token, lease_ms
# Returns {'run', attempts, max_retries, retry_backoff, timeout or ''}, {'busy', lease_ms_left},
#   {'conflict', unique_key, holder}, {'missing'} (no record: see ADOPT), or {its final status}.
CLAIM = (
    _ACTIVE
    + """
local id = ARGV[2]
local record_key, lease_key = prefix .. 'task:' .. id, prefix .. 'lease:' .. id
local record = redis.call('HMGET', record_key, 'status', 'unique_key', 'attempts', 'max_retries', 'retry_backoff',
                          'timeout')
local st = record[1]
if not st then return {'missing'} end
if is_final(st) then return {st} end
if st == 'running' then
  local left = redis.call('PTTL', lease_key)
  if left > 0 then return {'busy', tostring(left)} end
end
local key = record[2]
if key then
  local holder = redis.call('GET', prefix .. 'unique:' .. key)
  if holder ~= id then
    if holder and active(holder) then return {'conflict', key, holder} end
    redis.call('SET', prefix .. 'unique:' .. key, id, 'PX', math.max(redis.call('PTTL', record_key), 1000))
  end
end
local attempts = (tonumber(record[3]) or 0) + 1
redis.call('HSET', record_key, 'status', 'running', 'started_at', ARGV[3], 'attempts', tostring(attempts))
redis.call('SET', lease_key, ARGV[4], 'PX', ARGV[5])
return {'run', tostring(attempts), record[4] or '0', record[5] or '1', record[6] or ''}
"""
)

# A record for a message sent without taskservice (another tool's beat, send_task), before its claim.
# KEYS: record, index; ARGV: id, now_us, now score, ttl_ms, name, queue, max_retries, retry_backoff,
#       timeout ('' = none)
ADOPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'name', ARGV[5], 'status', 'pending', 'enqueued_at', ARGV[2], 'queue', ARGV[6],
           'max_retries', ARGV[7], 'retry_backoff', ARGV[8])
if ARGV[9] ~= '' then redis.call('HSET', KEYS[1], 'timeout', ARGV[9]) end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
"""

# What the result backend stores, with Celery's meta in the same round trip.
# ARGV: prefix, id, Celery's meta key, mode ('final' | 'retry' | 'progress' | 'meta'), meta,
#       meta expiry s ('' = none), ttl_ms, due score of a retry ('' = none), the record's changed
#       fields as a JSON object of strings (null: remove the field)
STORE = (
    _ACTIVE
    + """
local id, meta_key, mode = ARGV[2], ARGV[3], ARGV[4]
local record_key = prefix .. 'task:' .. id
local record = redis.call('HMGET', record_key, 'status', 'unique_key', 'error', 'message')
local st = record[1]
-- Celery's rule, kept: once SUCCESS is stored nothing overwrites it (a lost worker's late report)
local success_stored
if st then
  success_stored = st == 'succeeded'
else
  local current = redis.call('GET', meta_key)
  success_stored = current and string.find(current, '"status":%s*"SUCCESS"') ~= nil
end
if success_stored then return 0 end
if ARGV[6] ~= '' then redis.call('SET', meta_key, ARGV[5], 'EX', ARGV[6]) else redis.call('SET', meta_key, ARGV[5]) end
redis.call('PUBLISH', meta_key, ARGV[5])
if not st or mode == 'meta' or is_final(st) then return 1 end
if mode == 'progress' and st ~= 'running' then return 1 end
-- only what changes: removing a field the record does not have is skipped (each call costs)
local present = {error = record[3], traceback = record[3], message = record[4]}
local set, drop = {}, {}
for name, value in pairs(cjson.decode(ARGV[9])) do
  if value ~= cjson.null then
    set[#set + 1] = name
    set[#set + 1] = value
  elseif present[name] ~= false then
    drop[#drop + 1] = name
  end
end
if #set > 0 then redis.call('HSET', record_key, unpack(set)) end
if #drop > 0 then redis.call('HDEL', record_key, unpack(drop)) end
-- the lease is left to expire: a final or retrying status already says nobody runs the task, and
-- a parked duplicate in the schedule set finds the final status and is dropped by the dispatcher
if mode == 'final' then
  if record[2] and redis.call('GET', prefix .. 'unique:' .. record[2]) == id then
    redis.call('DEL', prefix .. 'unique:' .. record[2])
  end
  redis.call('PEXPIRE', record_key, ARGV[7])
elseif mode == 'retry' and ARGV[8] ~= '' then
  redis.call('ZADD', prefix .. 'schedule', ARGV[8], id)
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
