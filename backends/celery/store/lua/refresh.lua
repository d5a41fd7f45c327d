-- A worker process refreshes the leases of the attempts it runs.
-- ARGV: prefix, lease_ms, then id, token pairs. Returns the ids whose lease this process lost.
-- A lease that lapsed (a pause, Redis away for a while) is taken back if nobody took the task
-- over; one held by another token is never taken.
local prefix, lease_ms = ARGV[1], ARGV[2]
local lost = {}
for i = 3, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local lease_key = prefix .. 'lease:' .. id
  local current = redis.call('GET', lease_key)
  if current == token then
    redis.call('PEXPIRE', lease_key, lease_ms)
  else
    local f = current and {} or redis.call('HMGET', prefix .. 'task:' .. id, 'status', 'holder')
    if not current and f[1] == RUNNING and f[2] == token then
      redis.call('SET', lease_key, token, 'PX', lease_ms)
    else
      lost[#lost + 1] = id
    end
  end
end
return lost
