-- Gives back one reservation record of the layout before sc:{ORG}:reserved,
-- once (deleting it first), as that layout's sweeper did: each request of a
-- batch record is undone and marked released:RID for a day (a single
-- request's string record only undone, as before).
-- KEYS: the sorted set that holds its deadline, the record sc:{ORG}:resv:ID,
--   R markers released:RID (those of the requests legacy_read.lua found),
--   then every counter their lines name.
-- ARGV: the org prefix's length, the record's id, R, then the R request ids
--   of the markers, in their order.
-- Reply: how many requests were given back.
-- uses: prelude, release
local zset, record, r = KEYS[1], KEYS[2], tonumber(ARGV[3])
local counters = counters_by_name(3 + r, tonumber(ARGV[1]))
local marker_of = {}
for k = 1, r do marker_of[ARGV[3 + k]] = KEYS[2 + k] end
redis.call('ZREM', zset, ARGV[2])
local kind = redis.call('TYPE', record)['ok']
local entries
if kind == 'hash' then
  entries = redis.call('HGETALL', record)
elseif kind == 'string' then
  entries = {'', redis.call('GET', record)}
else
  return 0
end
redis.call('DEL', record)
for x = 1, #entries, 2 do
  undo(entries[x + 1], counters)
  if marker_of[entries[x]] then redis.call('SET', marker_of[entries[x]], '1', 'EX', 86400) end
end
return #entries / 2
