-- Several strings of one slot, read at one moment.
-- KEYS: the strings.
-- ARGV: none.
-- Reply: MGET's.
return redis.call('MGET', unpack(KEYS))
