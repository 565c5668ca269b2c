-- An org as the management API shows it: its record and its cleared spend.
-- KEYS: the org's record (sc:{ORG}:org), its cleared spend (sc:{ORG}:cleared).
-- ARGV: none.
-- Reply: {the record's fields as HGETALL gives them ({} when none), the
--   cleared spend (nil when none)}.
return {redis.call('HGETALL', KEYS[1]), redis.call('GET', KEYS[2])}
