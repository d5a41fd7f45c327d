local prefix = ARGV[1]
local function active(id)
  local st = redis.call('HGET', prefix .. 'task:' .. id, 'status')
  if CLAIMABLE[st] then return true end
  if st == RUNNING then return redis.call('EXISTS', prefix .. 'lease:' .. id) == 1 end
  return false
end
local function release_unique(record, id)
  local key = redis.call('HGET', record, 'unique_key')
  if key and redis.call('GET', prefix .. 'unique:' .. key) == id then
    redis.call('DEL', prefix .. 'unique:' .. key)
  end
end
local function is_final(st)
  return FINAL[st] == true
end
