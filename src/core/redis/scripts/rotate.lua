-- A rotation: the current secret (the record's, else the file's) becomes the
-- old one, valid until ARGV[3] (milliseconds; old_until in whole seconds,
-- rounded up, for workers that read only that). A revoked key is not rotated.
-- KEYS: the key's record, sc:{ORG}:config, sc:{ORG}:events.
-- ARGV: the file's hash ("" none), the new hash, old_until_ms, id, grace seconds, need (exists | any),
--   old_until.
-- Reply: 0 no such record, -1 revoked (nothing done), else the record's fields.
-- uses: events
if ARGV[6] == 'exists' and redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HGET', KEYS[1], 'revoked') == '1' then return -1 end
local current = redis.call('HGET', KEYS[1], 'sha256') or ARGV[1]
redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'sha256', ARGV[2], 'old_sha256', current, 'old_until_ms', ARGV[3], 'old_until', ARGV[7])
if redis.call('HEXISTS', KEYS[1], 'source') == 0 then redis.call('HSET', KEYS[1], 'source', 'file') end
append_event(KEYS[3], {'type', 'key_rotated', 'id', ARGV[4], 'grace_seconds', ARGV[5], 'by', 'api'})
return redis.call('HGETALL', KEYS[1])
