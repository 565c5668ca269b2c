-- KEYS[1]'s value (nil: none).
return redis.call('GET', KEYS[1])
