-- Every KEYS' value, one slot's.
return redis.call('MGET', unpack(KEYS))
