local prefix = ARGV[1]
-- Redis's clock, the one every process compares against (a worker's own clock may run ahead)
local function redis_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1e6, t[1] .. string.format('%06d', tonumber(t[2]))
end
-- per-status counts are transitions ('pending>running'...) summed by ``TaskRecords.stats``
local function count(from, to)
  if from ~= to then redis.call('HINCRBY', prefix .. 'counts', from .. '>' .. to, 1) end
end
-- a task holds its unique_key from enqueue until it reaches a final status; a running task whose
-- worker died still holds it: the lease's expiry gets it re-published, not forgotten
local function active(id)
  local st = redis.call('HGET', prefix .. 'task:' .. id, 'status')
  return st ~= false and (CLAIMABLE[st] == true or st == RUNNING)
end
local function release_unique(record, id, key)
  if key and redis.call('GET', prefix .. 'unique:' .. key) == id then
    redis.call('DEL', prefix .. 'unique:' .. key)
  end
end
local function is_final(st)
  return FINAL[st] == true
end
-- the holder's token, or the prefix 'node|' a worker's main process stores with for its pool child
local function owns(holder, token)
  if holder == token then return true end
  return string.sub(token, -1) == '|' and string.sub(holder, 1, #token) == token
end
local function plain_sub(text, marker, value)
  local at = string.find(text, marker, 1, true)
  if not at then return text end
  return string.sub(text, 1, at - 1) .. value .. string.sub(text, at + #marker)
end
-- Tasks waiting for ``id`` (after=) once it is final: released if it succeeded, failed otherwise,
-- and so on down a chain. Returns {id, name, error} of each dependent that failed.
-- ``template`` is the error text with \1 for the dependency's id and \2 for its status; ``meta``
-- is Celery's FAILURE meta with \3 for the JSON-encoded error and \4 for the JSON-encoded id.
local function settle_dependents(id, status, now_s, now_us, template, meta, meta_expiry)
  local failed = {}
  local work = {{id, status}}
  while #work > 0 do
    local item = table.remove(work)
    local waiting_key = prefix .. 'waiting:' .. item[1]
    local members = redis.call('SMEMBERS', waiting_key)
    redis.call('DEL', waiting_key)
    for _, child in ipairs(members) do
      local key = prefix .. 'task:' .. child
      local f = redis.call('HMGET', key, 'status', 'message', 'queue', 'run_at', 'name', 'unique_key', 'after')
      local st = f[1]
      if st and CLAIMABLE[st] and f[7] == item[1] then
        redis.call('HDEL', key, 'after')
        if item[2] == SUCCEEDED then
          local run_at_s = f[4] and tonumber(f[4]) / 1e6 or nil
          if run_at_s and run_at_s > now_s then
            redis.call('ZADD', prefix .. 'schedule', run_at_s, child)
          elseif f[2] then
            redis.call('LPUSH', f[3] or 'celery', f[2])
            redis.call('HDEL', key, 'message')
          end
        else
          local err = plain_sub(plain_sub(template, '\1', item[1]), '\2', item[2])
          redis.call('HSET', key, 'status', FAILED, 'error', err, 'finished_at', now_us, 'attempts', '0')
          redis.call('HDEL', key, 'message')
          if st == PENDING then redis.call('ZREM', prefix .. 'pending', child) end
          release_unique(key, child, f[6])
          count(st, FAILED)
          redis.call('ZADD', prefix .. 'finished', now_s, child)
          redis.call('ZREM', prefix .. 'schedule', child)
          local child_meta = plain_sub(plain_sub(meta, '\3', cjson.encode(err)), '\4', cjson.encode(child))
          local meta_key = 'celery-task-meta-' .. child
          if meta_expiry ~= '' then
            redis.call('SET', meta_key, child_meta, 'EX', meta_expiry)
          else
            redis.call('SET', meta_key, child_meta)
          end
          redis.call('PUBLISH', meta_key, child_meta)
          failed[#failed + 1] = {child, f[5] or '', err}
          work[#work + 1] = {child, FAILED}
        end
      end
    end
  end
  return failed
end
