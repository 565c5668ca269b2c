-- A set's members.
-- KEYS: the set (an org's sc:{ORG}:keys).
-- ARGV: none.
-- Reply: its members ({} when none).
return redis.call('SMEMBERS', KEYS[1])
