-- The lookup of a new secret: which key, org and project it is.
-- KEYS: sc:key:SHA256 of the secret.
-- ARGV: org, id, project.
-- Reply: 1.
redis.call('HSET', KEYS[1], 'id', ARGV[2], 'org', ARGV[1], 'project', ARGV[3])
return 1
