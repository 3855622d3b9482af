-- Joins a user to a campaign's waiting room, or answers the place they hold already.
-- Redis time decides whether the join is in the pre-queue (before the opening: the
-- secret-keyed score the issuer derived) or a FIFO arrival behind every pre-queue score.
--
-- KEYS[1] room queue    KEYS[2] room seen    KEYS[3] room passes
-- KEYS[4] room tickets  KEYS[5] room pace
-- ARGV[1] ticket  ARGV[2] user id  ARGV[3] pre-queue score  ARGV[4] opens at (ms; 0: no pre-queue)
-- Reply: 'waiting' (queued already; counts as a poll), 'admitted' (holds an unexpired
-- pass), 'joined' (queued now).
local FIFO_BASE = 4503599627370496 -- 2^52, as in waiting_room/order.rs

local ticket = ARGV[1]
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local now_text = string.format('%.0f', now)

if redis.call('ZSCORE', KEYS[1], ticket) then
  redis.call('ZADD', KEYS[2], now_text, ticket)
  return 'waiting'
end
local expires = redis.call('ZSCORE', KEYS[3], ticket)
if expires and tonumber(expires) > now then
  return 'admitted'
end

local score = ARGV[3]
if now >= tonumber(ARGV[4]) then
  score = string.format('%.0f', FIFO_BASE + redis.call('HINCRBY', KEYS[5], 'fifo', 1))
end
redis.call('ZADD', KEYS[1], score, ticket)
redis.call('ZADD', KEYS[2], now_text, ticket)
redis.call('HSET', KEYS[4], ticket, now_text .. ' 0 0 ' .. ARGV[2])
return 'joined'
