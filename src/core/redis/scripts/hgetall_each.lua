-- Several hashes of one slot, read at one moment.
-- KEYS: the hashes (an org's key records).
-- ARGV: none.
-- Reply: per KEY its fields as HGETALL gives them ({} when none).
local out = {}
for i = 1, #KEYS do out[i] = redis.call('HGETALL', KEYS[i]) end
return out
