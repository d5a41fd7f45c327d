-- Re-publish the tasks of workers that are gone, long before the broker's visibility timeout would.
-- Every message a worker took sits in the transport's unacknowledged set until its task ends; one
-- older than a lease whose task is running without a lease (its holder stopped refreshing), or still
-- pending (taken, never claimed), is pushed onto its queue again, once per lease period. The claim
-- makes a copy harmless: it runs only if nobody holds the task, otherwise it is parked or dropped.
-- A lease found missing is first only suspected: its holder gets ``grace`` seconds to take it back
-- (its refresh does, after Redis itself was unresponsive or the holder paused briefly), and only a
-- lease still missing after that is recovered.
-- ARGV: prefix, unacked index key, unacked hash key, min age s, limit, lease_ms, grace s
-- Returns the ids re-published.
local prefix = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local tags = redis.call('ZRANGEBYSCORE', ARGV[2], '-inf', string.format('%.6f', now - tonumber(ARGV[4])),
                        'LIMIT', 0, tonumber(ARGV[5]))
local published = {}
for _, tag in ipairs(tags) do
  local raw = redis.call('HGET', ARGV[3], tag)
  local ok, entry = false, nil
  if raw then ok, entry = pcall(cjson.decode, raw) end
  local envelope = ok and type(entry) == 'table' and entry[1] or nil
  local headers = type(envelope) == 'table' and envelope.headers or nil
  local id = type(headers) == 'table' and headers.id or nil
  if type(id) == 'string' then
    local record = prefix .. 'task:' .. id
    local f = redis.call('HMGET', record, 'status', 'queue', 'after')
    local st = f[1]
    local orphaned = false
    if st == RUNNING and redis.call('EXISTS', prefix .. 'lease:' .. id) == 0 then
      local suspect_key = prefix .. 'suspect:' .. id
      local since = redis.call('GET', suspect_key)
      if not since then
        redis.call('SET', suspect_key, string.format('%.6f', now), 'PX', 3 * tonumber(ARGV[6]))
      else
        orphaned = now - tonumber(since) >= tonumber(ARGV[7])
      end
    end
    if (orphaned or (st == PENDING and not f[3]))
       and redis.call('SET', prefix .. 'recovering:' .. id, '1', 'PX', ARGV[6], 'NX') then
      if type(envelope.properties) == 'table' then
        envelope.properties.delivery_tag = tag .. '.r' .. t[1] .. t[2]  -- its own entry in the unacked set
      end
      local queue = f[2] or (type(entry[3]) == 'string' and entry[3]) or 'celery'
      redis.call('RPUSH', queue, cjson.encode(envelope))  -- the next message taken from that queue
      published[#published + 1] = id
    end
  end
end
return published
