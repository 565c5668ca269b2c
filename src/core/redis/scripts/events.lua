-- A page of an org's events.
-- KEYS: sc:{ORG}:events.
-- ARGV: start ("-" or "(" .. after), count.
-- Reply: XRANGE's.
return redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
