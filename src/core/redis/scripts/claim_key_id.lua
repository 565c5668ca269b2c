-- A new API key's id, claimed for its org (the id is global: sc:keyid:ID
-- names the org that holds it).
-- KEYS: sc:keyid:ID.
-- ARGV: the org.
-- Reply: 1 claimed, 0 the id is taken (nothing done).
if not redis.call('SET', KEYS[1], ARGV[1], 'NX') then return 0 end
return 1
