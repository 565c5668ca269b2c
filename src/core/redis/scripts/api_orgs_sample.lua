-- A sample of the orgs the API created, for the sweeper.
-- KEYS: sc:orgs.
-- ARGV: how many.
-- Reply: an array of org ids.
return redis.call('SRANDMEMBER', KEYS[1], ARGV[1])
