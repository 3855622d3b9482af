-- Reads a ticket of a campaign's waiting room; polling a waiting ticket keeps its place.
--
-- KEYS[1] room queue    KEYS[2] room seen    KEYS[3] room passes
-- KEYS[4] room tickets  KEYS[5] limit        KEYS[6] admitted (the coupon counter)
-- KEYS[7] free sequences (below the counter, given again: not admitted)
-- ARGV[1] ticket
-- Reply: {} for an unknown ticket, else {held, entry, now ms, rank, limit, admitted}
-- with held 'waiting' (rank: tickets ahead), 'admitted' (unexpired pass) or 'lapsed'.
local ticket = ARGV[1]
local entry = redis.call('HGET', KEYS[4], ticket)
if not entry then
  return {}
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local now_text = string.format('%.0f', now)
local limit = redis.call('GET', KEYS[5]) or '0'
local counter = tonumber(redis.call('GET', KEYS[6]) or '0')
local admitted = string.format('%.0f', math.max(0, counter - redis.call('ZCARD', KEYS[7])))

local rank = redis.call('ZRANK', KEYS[1], ticket)
if rank then
  redis.call('ZADD', KEYS[2], 'XX', now_text, ticket)
  return {'waiting', entry, now_text, tostring(rank), limit, admitted}
end
local held = 'lapsed'
local expires = redis.call('ZSCORE', KEYS[3], ticket)
if expires and tonumber(expires) > now then
  held = 'admitted'
end
return {held, entry, now_text, '0', limit, admitted}
