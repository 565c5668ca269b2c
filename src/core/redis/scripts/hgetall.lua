-- KEYS[1]'s fields (a hash as HGETALL gives it: {} when none).
return redis.call('HGETALL', KEYS[1])
