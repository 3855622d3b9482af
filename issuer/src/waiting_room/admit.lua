-- Lets users of a campaign's waiting room in: the twin of waiting_room/pace.rs, run by
-- every issuer several times a second. Atomic, and paced by Redis time, so however many
-- issuers run it nobody is admitted twice and no second admits more than the rate.
-- First drops tickets nobody polled within the timeout (not counting a gap in the runs),
-- and passes that expired.
--
-- KEYS[1] room queue    KEYS[2] room seen    KEYS[3] room passes   KEYS[4] room tickets
-- KEYS[5] room pace     KEYS[6] limit        KEYS[7] admitted (the coupon counter)
-- KEYS[8] free sequences (below the counter, given again: not admitted)
-- ARGV[1] rate (per second)  ARGV[2] most unexpired passes (0: unbounded)
-- ARGV[3] pass lifetime (ms)  ARGV[4] ticket timeout (ms)  ARGV[5] opens at (ms)
-- ARGV[6] most stale tickets dropped per run
-- Reply: {tickets still waiting, then the wait in ms of each user admitted now}
local time = redis.call('TIME')
local second, micros = tonumber(time[1]), tonumber(time[2])
local now = second * 1000 + math.floor(micros / 1000)
local rate, max_active = tonumber(ARGV[1]), tonumber(ARGV[2])
local pass_ms, timeout_ms, opens = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local function text(n) return string.format('%.0f', n) end
-- Runs come every 50 ms from each issuer; a second without one is a gap.
local RUN_GAP_MS = 1000

-- A gap in the runs (Redis unreachable, or no issuer running) is no one's abandonment:
-- polls failed meanwhile, so tickets are dropped again only a whole timeout after the
-- runs resumed. Until then nothing is stale (-1: below every poll time).
local last_run = tonumber(redis.call('HGET', KEYS[5], 'ran') or '0')
local resumed = tonumber(redis.call('HGET', KEYS[5], 'resumed') or '0')
if now - last_run > RUN_GAP_MS then
  resumed = now
  redis.call('HSET', KEYS[5], 'resumed', text(now))
end
redis.call('HSET', KEYS[5], 'ran', text(now))
local stale_before = -1
if now - resumed >= timeout_ms then
  stale_before = now - timeout_ms
end
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. text(stale_before),
  'LIMIT', 0, tonumber(ARGV[6]))
for _, ticket in ipairs(stale) do
  redis.call('ZREM', KEYS[1], ticket)
  redis.call('ZREM', KEYS[2], ticket)
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', text(now))

local waiting = redis.call('ZCARD', KEYS[1])
local limit = tonumber(redis.call('GET', KEYS[6]) or '0')
local admitted = tonumber(redis.call('GET', KEYS[7]) or '0') - redis.call('ZCARD', KEYS[8])
if now < opens or waiting == 0 or (limit > 0 and admitted >= limit) then
  return {waiting}
end

local pace = redis.call('HMGET', KEYS[5], 'second', 'used')
local used = 0
if tonumber(pace[1]) == second then
  used = tonumber(pace[2])
end
local ahead = math.max(1, math.ceil(rate / 10))
local grant = math.min(rate, math.floor(rate * micros / 1000000) + ahead) - used
if max_active > 0 then
  grant = math.min(grant, max_active - redis.call('ZCARD', KEYS[3]))
end
if grant <= 0 then
  return {waiting}
end

local reply = {0}
local popped = redis.call('ZPOPMIN', KEYS[1], grant)
for i = 1, #popped, 2 do
  local ticket = popped[i]
  local seen = tonumber(redis.call('ZSCORE', KEYS[2], ticket))
  redis.call('ZREM', KEYS[2], ticket)
  local entry = redis.call('HGET', KEYS[4], ticket)
  if entry and seen and seen >= stale_before then
    local joined, user = string.match(entry, '^(%d+) %d+ %d+ (.*)$')
    local number = redis.call('HINCRBY', KEYS[5], 'admitted', 1)
    local expires = now + pass_ms
    redis.call('ZADD', KEYS[3], text(expires), ticket)
    redis.call('HSET', KEYS[4], ticket, joined .. ' ' .. number .. ' ' .. text(expires) .. ' ' .. user)
    reply[#reply + 1] = math.max(0, now - math.max(tonumber(joined), opens))
  end
end
redis.call('HSET', KEYS[5], 'second', time[1], 'used', used + #reply - 1)
reply[1] = waiting - #popped / 2
return reply
