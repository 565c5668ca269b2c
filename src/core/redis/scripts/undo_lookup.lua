-- Takes back a new secret's lookup when its key could not be created (the
-- id is taken, or the org already holds a record of that id).
-- KEYS: sc:key:SHA256.
-- ARGV: none.
-- Reply: 1.
redis.call('DEL', KEYS[1])
return 1
