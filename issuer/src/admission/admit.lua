-- Admits a batch of applies to one campaign, atomically: the only place the admission
-- rule runs against Redis (admission/rule.rs is its twin for the standalone issuer).
-- The applies are decided one after the other, in the order given, each exactly as if it
-- had been the only one in its call: one call admits a whole batch as cheaply as one.
--
-- A campaign without its counter is not provisioned (or fenced: its Redis lost
-- admissions) and answers nothing else, not even from its holders, which may be stale.
-- Then the per-user check comes first, then the stock; only when both pass is the user
-- recorded and given a sequence, so a repeated apply never burns stock. The sequence is
-- the lowest free one, if any (a restore found sequences nobody holds below the counter:
-- Redis lost admissions that never reached the topic), else the counter's next; the
-- campaign is sold out when the counter reached the limit and nothing is free.
--
-- A script re-sent after a dropped connection (as the cluster client does) carries the
-- same attempt ids and gets their first run's "admitted" answers: it never admits twice.
--
-- KEYS: 1 limit, 2 admitted (counter), 3 holders (hash), 4 pending (hash), 5 attempts (hash),
--       6 free (sorted set of sequences nobody holds below the counter)
-- ARGV: per apply, three values: user id, per-user limit, attempt id (unique per apply)
-- Returns one reply per apply, in order, each one of:
--   "admitted <sequence> <ordinal> <admitted-at-ms>"
--   "already <sequences held, comma separated>"
--   "sold_out"
--   "unprovisioned"   (no counter or no limit: never provisioned, deleted, or Redis lost
--                      its data; the issuer restores the campaign from PostgreSQL)
local limit = tonumber(redis.call('GET', KEYS[1]))
local admitted = tonumber(redis.call('GET', KEYS[2]))
local free = redis.call('ZCARD', KEYS[6])
local ms = nil
local replies = {}

local function admit(user, per_user_limit, attempt)
  local replay = redis.call('HGET', KEYS[5], attempt)
  if replay then
    return replay
  end
  if not limit or not admitted then
    return 'unprovisioned'
  end
  local held = redis.call('HGET', KEYS[3], user)
  local count = 0
  if held then
    local _, commas = string.gsub(held, ',', '')
    count = commas + 1
  end
  if count >= per_user_limit then
    return 'already ' .. held
  end
  local sequence
  if free > 0 then
    sequence = tonumber(redis.call('ZPOPMIN', KEYS[6])[1])
    free = free - 1
  elseif admitted >= limit then
    return 'sold_out'
  else
    sequence = redis.call('INCR', KEYS[2])
    admitted = sequence
  end
  local ordinal = count + 1
  if held then
    held = held .. ',' .. sequence
  else
    held = tostring(sequence)
  end
  redis.call('HSET', KEYS[3], user, held)
  if not ms then
    local now = redis.call('TIME')
    ms = string.format('%d', now[1] * 1000 + math.floor(now[2] / 1000))
  end
  redis.call('HSET', KEYS[4], sequence, ms .. ' ' .. ordinal .. ' ' .. user)
  local reply = 'admitted ' .. sequence .. ' ' .. ordinal .. ' ' .. ms
  redis.call('HSET', KEYS[5], attempt, reply)
  return reply
end

for i = 1, #ARGV, 3 do
  replies[#replies + 1] = admit(ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2])
end
if ms then
  redis.call('EXPIRE', KEYS[5], 600)
end
return replies
