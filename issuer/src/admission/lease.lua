-- The lease on re-publishing a campaign's unconfirmed winners, so that one issuer sends
-- a backlog instead of every replica sending it again.
--
-- KEYS[1] the lease
-- ARGV[1] the issuer asking   ARGV[2] the lease's length in ms, or 0 to give it up
-- Returns 1 when ARGV[1] holds the lease afterwards (taken, or kept and extended), 0
-- when another issuer holds it or it was given up.
local holder = redis.call('GET', KEYS[1])
if ARGV[2] == '0' then
  if holder == ARGV[1] then
    redis.call('DEL', KEYS[1])
  end
  return 0
end
if holder and holder ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
