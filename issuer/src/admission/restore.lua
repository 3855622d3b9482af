-- Recreates a campaign's admission state from what PostgreSQL holds, atomically, unless
-- it exists already (another issuer restored it, or it was never lost) or the campaign
-- was deleted (the operator's tombstone is there).
-- The holders were written to the staging hash beforehand, in chunks. The sequences
-- below the counter that nobody holds (lost with Redis before reaching the topic) are
-- free: the admission script gives them again, lowest first.
--
-- KEYS: 1 admitted, 2 holders, 3 restoring (staging hash), 4 limit, 5 deleted (tombstone),
--       6 free (sorted set)
-- ARGV: 1 counter value (highest sequence issued), 2 limit to set if none is there,
--       3.. the free sequences
-- Returns 1 when restored, 0 when the campaign was already provisioned, 2 when deleted.
if redis.call('EXISTS', KEYS[5]) == 1 then
  redis.call('DEL', KEYS[3])
  return 2
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('DEL', KEYS[3])
  return 0
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('RENAME', KEYS[3], KEYS[2])
else
  redis.call('DEL', KEYS[2])
end
redis.call('DEL', KEYS[6])
for first = 3, #ARGV, 1000 do
  local scored = {}
  for i = first, math.min(first + 999, #ARGV) do
    scored[#scored + 1] = ARGV[i]
    scored[#scored + 1] = ARGV[i]
  end
  redis.call('ZADD', KEYS[6], unpack(scored))
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[4], ARGV[2], 'NX')
return 1
