-- Fences a campaign whose Redis lost admissions: deletes its counter, so every issuer
-- answers "unprovisioned" until the campaign is restored from the durable record
-- (restore.lua). Lost admissions show as a counter below the highest sequence the
-- campaign topic holds, or as a holder the topic names that Redis does not record.
--
-- KEYS[1] admitted counter   KEYS[2] holders hash
-- ARGV[1] highest sequence on the topic
-- ARGV[2], ARGV[3] (optional) a user the topic says holds sequence ARGV[3]
-- Returns 1 when it fenced, 0 when Redis is not behind (or is already fenced).
local admitted = tonumber(redis.call('GET', KEYS[1]))
if not admitted then
  return 0
end
local lost = admitted < tonumber(ARGV[1])
if not lost and ARGV[2] then
  local held = redis.call('HGET', KEYS[2], ARGV[2]) or ''
  lost = not string.find(',' .. held .. ',', ',' .. ARGV[3] .. ',', 1, true)
end
if lost then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
