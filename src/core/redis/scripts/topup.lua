-- A top-up of a prepaid org's balance, once per idempotency key.
-- KEYS: sc:{ORG}:topup:IDEMPOTENCY, sc:{ORG}:balance, sc:{ORG}:events,
-- sc:{ORG}:balance:held.
-- ARGV: amount (nano-USD), idempotency key.
-- Reply: {1 applied / 0 a replay, "AMOUNT BALANCE_AFTER HELD"} (the balance
-- with the reservations in flight drawn, and those: their sum is the settled
-- balance); {-1, Redis's error} when the balance would overflow or holds no
-- integer (nothing done).
-- uses: events
local prior = redis.call('GET', KEYS[1])
if prior then return {0, prior} end
local added = redis.pcall('INCRBY', KEYS[2], ARGV[1])
if type(added) == 'table' and added.err then return {-1, added.err} end
local after = redis.call('GET', KEYS[2])
local answer = ARGV[1] .. ' ' .. after .. ' ' .. (redis.call('GET', KEYS[4]) or '0')
redis.call('SET', KEYS[1], answer, 'EX', 34560000)
append_event(KEYS[3], {'type', 'topup', 'amount_nanousd', ARGV[1], 'idempotency_key', ARGV[2],
  'balance_nanousd', after, 'by', 'api'})
return {1, answer}
