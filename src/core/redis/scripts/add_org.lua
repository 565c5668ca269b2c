-- KEYS: sc:orgs (every org the API created: the sweeper reads it). ARGV: the org.
return redis.call('SADD', KEYS[1], ARGV[1])
