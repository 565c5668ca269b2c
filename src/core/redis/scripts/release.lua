-- Gives back the reservations of batches whose deadline has passed, once:
-- each request still held has its lines undone and is noted in `released`
-- for a day (its late settlement then adds its real cost instead of
-- replacing a reservation); the batch leaves the deadlines. A batch whose
-- deadline is not past, or that is gone already, is left as it is.
-- KEYS: the reservations (hash), their deadlines, sc:{ORG}:released, then
--   every counter the batches' lines name (as due.lua read them).
-- ARGV: the org prefix's length, then the batch ids.
-- Reply: how many requests were given back.
-- uses: prelude, clock, release
local reserved, deadlines, released = KEYS[1], KEYS[2], KEYS[3]
local counters = counters_by_name(4, tonumber(ARGV[1]))
local now = redis_now()
local until_ms = string.format('%.0f', now + 86400000)
local given = 0
for x = 2, #ARGV do
  local b = ARGV[x]
  local deadline = redis.call('ZSCORE', deadlines, b)
  if deadline and tonumber(deadline) <= now then
    -- first a write Redis never refuses for memory, so that under maxmemory
    -- the increments after it run too (it refuses only a script's first write)
    redis.call('ZREM', deadlines, b)
    local ids = {}
    for id in string.gmatch(redis.call('HGET', reserved, '@' .. b) or '', '%S+') do ids[#ids + 1] = id end
    local lines = #ids > 0 and redis.call('HMGET', reserved, unpack(ids)) or {}
    for y, id in ipairs(ids) do
      if lines[y] then
        undo(lines[y], counters)
        redis.call('HDEL', reserved, id)
        redis.call('ZADD', released, until_ms, id)
        given = given + 1
      end
    end
    redis.call('HDEL', reserved, '@' .. b, '#' .. b)
  end
end
return given
