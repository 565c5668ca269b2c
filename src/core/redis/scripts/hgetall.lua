-- A hash's fields.
-- KEYS: the hash.
-- ARGV: none.
-- Reply: HGETALL's ({} when none).
return redis.call('HGETALL', KEYS[1])
