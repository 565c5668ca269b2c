-- One reservation record of the layout before sc:{ORG}:reserved.
-- KEYS: sc:{ORG}:resv:ID (a batch's hash, or one request's string).
-- ARGV: none.
-- Reply: {request id, release lines, ...}: a string record is its own id's
--   ("" for the id: the caller knows it); none when it is gone.
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'hash' then return redis.call('HGETALL', KEYS[1]) end
if kind == 'string' then return {'', redis.call('GET', KEYS[1])} end
return {}
