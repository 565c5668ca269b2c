-- Claims a project id for an org (the id is global).
-- KEYS: sc:project:ID.
-- ARGV: the org.
-- Reply: "" when the project is (now) that org's, else the org it already
--   belongs to (nothing done).
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then return current end
redis.call('SET', KEYS[1], ARGV[1])
return ''
