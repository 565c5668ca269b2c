-- Forgets what late settlements and reserves no longer need to recognise:
-- the entries of `settled`, `released` and `gone` whose day has passed.
-- KEYS: sc:{ORG}:settled, sc:{ORG}:released, sc:{ORG}:gone.
-- ARGV: none.
-- Reply: how many entries went.
-- uses: prelude, clock
local now = string.format('%.0f', redis_now())
local gone = 0
for i = 1, 3 do gone = gone + redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now) end
return gone
