-- KEYS: the org's deadlines, and those of reservations made before batches
-- (sc:{ORG}:reservations). ARGV: prefix, most.
-- Reply: how many expired reservations were given back.
-- uses: prelude, reservations
local most = tonumber(ARGV[2])
local now = redis_now()
local released = release_expired(ARGV[1], KEYS[1], most, now)
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, most)
for _, rid in ipairs(old) do released = released + release(ARGV[1], KEYS[2], rid) end
return released
