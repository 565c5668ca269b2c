-- The reservations whose deadline has passed (their workers died, or their
-- settlements were lost), with what gives each back: read first, so that
-- release.lua can name every counter it touches in its KEYS.
-- KEYS: the reservations' deadlines, the reservations (hash).
-- ARGV: the most batches to read.
-- Reply: per batch due: its id, the number N of its requests still held,
--   then N pairs of a request id and its release lines ("DELTA NAME\n").
-- uses: prelude, clock
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', redis_now()), 'LIMIT', 0,
  tonumber(ARGV[1]))
local out = {}
for _, b in ipairs(due) do
  local ids = {}
  for id in string.gmatch(redis.call('HGET', KEYS[2], '@' .. b) or '', '%S+') do ids[#ids + 1] = id end
  local lines = #ids > 0 and redis.call('HMGET', KEYS[2], unpack(ids)) or {}
  local held = {}
  for x, id in ipairs(ids) do
    if lines[x] then
      held[#held + 1] = id
      held[#held + 1] = lines[x]
    end
  end
  out[#out + 1] = b
  out[#out + 1] = #held / 2
  for _, v in ipairs(held) do out[#out + 1] = v end
end
return out
