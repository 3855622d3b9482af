-- Writes a campaign's limit unless it would drop below the admission counter (the
-- highest sequence handed out).
-- KEYS[1] limit, KEYS[2] admission counter, KEYS[3] deletion tombstone, KEYS[4] free
-- sequences (below the counter, given again); ARGV[1] the spec's limit, ARGV[2] '1' on
-- the campaign's first provisioning.
-- Creates the admission counter only on the first provisioning: a counter that vanished
-- later means Redis lost its data, and only an issuer may recreate it, from PostgreSQL.
-- The first provisioning also removes the tombstone of a deleted campaign of that name.
-- Returns {limit applied? (1/0), limit in force, admitted (the counter less the free
-- sequences) or -1 if the counter is missing}.
if ARGV[2] == '1' then
  redis.call('DEL', KEYS[3])
  redis.call('SET', KEYS[2], 0, 'NX')
end
local counter = tonumber(redis.call('GET', KEYS[2]) or '-1')
local admitted = counter
if counter >= 0 then
  admitted = counter - redis.call('ZCARD', KEYS[4])
end
if tonumber(ARGV[1]) < counter then
  return {0, tonumber(redis.call('GET', KEYS[1]) or '0'), admitted}
end
redis.call('SET', KEYS[1], ARGV[1])
return {1, tonumber(ARGV[1]), admitted}
