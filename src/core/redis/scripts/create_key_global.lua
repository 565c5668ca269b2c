-- KEYS: sc:keyid:ID, sc:key:SHA256. ARGV: org, id, project. 0 when the id is
-- taken (nothing done), else 1.
if not redis.call('SET', KEYS[1], ARGV[1], 'NX') then return 0 end
redis.call('HSET', KEYS[2], 'id', ARGV[2], 'org', ARGV[1], 'project', ARGV[3])
return 1
