-- Admits one user to one campaign, atomically: the only place the admission rule runs
-- against Redis (admission/rule.rs is its twin for the standalone issuer).
--
-- A campaign without its counter is not provisioned (or fenced: its Redis lost
-- admissions) and answers nothing else, not even from its holders, which may be stale.
-- Then the per-user check comes first, then the counter; only when both pass is the user
-- recorded and the counter incremented, so a repeated apply never burns stock.
--
-- A script re-sent after a dropped connection (as the cluster client does) carries the
-- same attempt id and gets its first run's "admitted" answer: it never admits twice.
--
-- KEYS: 1 limit, 2 admitted (counter), 3 holders (hash), 4 pending (hash), 5 attempts (hash)
-- ARGV: 1 user id, 2 per-user limit, 3 attempt id (unique per apply)
-- Returns one of:
--   "admitted <sequence> <ordinal> <admitted-at-ms>"
--   "already <sequences held, comma separated>"
--   "sold_out"
--   "unprovisioned"   (no counter or no limit: never provisioned, deleted, or Redis lost
--                      its data; the issuer restores the campaign from PostgreSQL)
local replay = redis.call('HGET', KEYS[5], ARGV[3])
if replay then
  return replay
end
local limit = tonumber(redis.call('GET', KEYS[1]))
local admitted = tonumber(redis.call('GET', KEYS[2]))
if not limit or not admitted then
  return 'unprovisioned'
end
local held = redis.call('HGET', KEYS[3], ARGV[1])
local count = 0
if held then
  local _, commas = string.gsub(held, ',', '')
  count = commas + 1
end
if count >= tonumber(ARGV[2]) then
  return 'already ' .. held
end
if admitted >= limit then
  return 'sold_out'
end
local sequence = redis.call('INCR', KEYS[2])
local ordinal = count + 1
if held then
  held = held .. ',' .. sequence
else
  held = tostring(sequence)
end
redis.call('HSET', KEYS[3], ARGV[1], held)
local now = redis.call('TIME')
local ms = string.format('%d', now[1] * 1000 + math.floor(now[2] / 1000))
redis.call('HSET', KEYS[4], sequence, ms .. ' ' .. ordinal .. ' ' .. ARGV[1])
local reply = 'admitted ' .. sequence .. ' ' .. ordinal .. ' ' .. ms
redis.call('HSET', KEYS[5], ARGV[3], reply)
redis.call('EXPIRE', KEYS[5], 600)
return reply
