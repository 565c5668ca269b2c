-- The reservations of the layout before sc:{ORG}:reserved whose deadline has
-- passed: batch records by the first sorted set, single requests by the
-- second (their records are read next, one by one: legacy_read.lua).
-- KEYS: sc:{ORG}:deadlines, sc:{ORG}:reservations.
-- ARGV: the most of each to read.
-- Reply: {batch ids..., "", request ids...}.
-- uses: prelude, clock
local now = string.format('%.0f', redis_now())
local out = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
out[#out + 1] = ''
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))) do
  out[#out + 1] = id
end
return out
