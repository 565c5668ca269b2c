-- An org's records for one key, read at one version.
-- KEYS: sc:{ORG}:config, the key's, project's, org's and (optional) customer's records.
-- ARGV: none.
-- Reply: {version or "", key fields, project fields, org fields, customer fields}.
local out = {redis.call('GET', KEYS[1]) or ''}
for i = 2, 5 do
  if KEYS[i] then out[i] = redis.call('HGETALL', KEYS[i]) else out[i] = {} end
end
return out
