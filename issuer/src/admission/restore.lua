-- Recreates a campaign's admission state from what PostgreSQL holds, atomically, unless
-- it exists already (another issuer restored it, or it was never lost) or the campaign
-- was deleted (the operator's tombstone is there).
-- The holders were written to the staging hash beforehand, in chunks.
--
-- KEYS: 1 admitted, 2 holders, 3 restoring (staging hash), 4 limit, 5 deleted (tombstone)
-- ARGV: 1 counter value (highest sequence issued), 2 limit to set if none is there
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
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[4], ARGV[2], 'NX')
return 1
