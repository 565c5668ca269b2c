-- KEYS: sc:{ORG}:keys. ARGV: prefix, then the file's key ids of the org.
-- Reply: {id, fields, id, fields, ...}: the API's keys, then the file's.
local out, seen = {}, {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  seen[id] = true
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGETALL', ARGV[1] .. 'key:' .. id)
end
for i = 2, #ARGV do
  if not seen[ARGV[i]] then
    out[#out + 1] = ARGV[i]
    out[#out + 1] = redis.call('HGETALL', ARGV[1] .. 'key:' .. ARGV[i])
  end
end
return out
