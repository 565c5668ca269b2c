-- What a key's identity needs, like the request path's read (records.h),
-- with the key's project read from its record when it has one.
-- KEYS: sc:{ORG}:config, the key's record, the org's record.
-- ARGV: prefix, the file's project ("" none), customer ("" none).
-- Reply: {version or "", key fields, project fields, org fields, customer fields, project}.
local key = redis.call('HGETALL', KEYS[2])
local project = redis.call('HGET', KEYS[2], 'project') or ARGV[2]
local customer = {}
if ARGV[3] ~= '' then customer = redis.call('HGETALL', ARGV[1] .. 'customer:' .. ARGV[3]) end
return {redis.call('GET', KEYS[1]) or '', key, redis.call('HGETALL', ARGV[1] .. 'project:' .. project),
  redis.call('HGETALL', KEYS[3]), customer, project}
