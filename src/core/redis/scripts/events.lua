-- KEYS: sc:{ORG}:events. ARGV: start ("-" or "(" .. after), count.
return redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
