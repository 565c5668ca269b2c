-- A string's value.
-- KEYS: the string.
-- ARGV: none.
-- Reply: its value (nil: none).
return redis.call('GET', KEYS[1])
