-- One change to one record of an org, with its audit event, the org's
-- config version first (a version bumped for a change that then fails
-- only makes workers read the records again).
-- KEYS: the record, sc:{ORG}:config, sc:{ORG}:events, [a set to add ARGV[2] to].
-- ARGV: need (exists | absent | any), the set's member, event type, E, E
--   event field pairs, S, S field pairs to set, D, D fields to delete, then
--   a guard field and value: when the record's field already reads that
--   ("" for absent), the change is already made: nothing is done, no event.
-- Reply: 0 when `need` does not hold (nothing done), else {1 if the record
-- existed before / 0, the record's fields after, 1 changed / 0 already so}.
-- uses: events
local need = ARGV[1]
local exists = redis.call('EXISTS', KEYS[1]) == 1
if (need == 'exists' and not exists) or (need == 'absent' and exists) then return 0 end
local existed = exists and 1 or 0
local p = 4
local e = tonumber(ARGV[p])
local event = {'type', ARGV[3]}
for i = 1, 2 * e do event[#event + 1] = ARGV[p + i] end
p = p + 1 + 2 * e
local s = tonumber(ARGV[p])
local first_set = p + 1
p = p + 1 + 2 * s
local d = tonumber(ARGV[p])
local guard = ARGV[p + d + 1]
if guard ~= '' and (redis.call('HGET', KEYS[1], guard) or '') == ARGV[p + d + 2] then
  return {existed, redis.call('HGETALL', KEYS[1]), 0}
end
redis.call('INCR', KEYS[2])
if s > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, first_set, first_set + 2 * s - 1)) end
if d > 0 then redis.call('HDEL', KEYS[1], unpack(ARGV, p + 1, p + d)) end
if KEYS[4] and ARGV[2] ~= '' then redis.call('SADD', KEYS[4], ARGV[2]) end
append_event(KEYS[3], event)
return {existed, redis.call('HGETALL', KEYS[1]), 1}
