-- Notes an org the API created, for every node's sweeper.
-- KEYS: sc:orgs.
-- ARGV: the org.
-- Reply: 1 new, 0 known.
return redis.call('SADD', KEYS[1], ARGV[1])
