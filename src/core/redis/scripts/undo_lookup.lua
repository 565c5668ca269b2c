-- The new secret's lookup, when the org already holds a record of that id
-- (its sc:keyid:ID had been lost: it names that org again). KEYS: sc:key:SHA256.
redis.call('DEL', KEYS[1])
return 1
