-- KEYS: sc:key:SHA256 of a new secret. ARGV: org, id, project.
redis.call('HSET', KEYS[1], 'id', ARGV[2], 'org', ARGV[1], 'project', ARGV[3])
return 1
