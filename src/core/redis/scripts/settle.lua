-- Settles a batch of requests of one org in one call: their deltas are
-- summed per counter by the worker, so each counter is written once per
-- batch, whatever its size. Exactly once without a marker per request: a
-- request whose reserve was answered is settled while the org's
-- reservations hold it (a settlement deletes its field; a resend finds it
-- gone); one whose reserve was not answered (a timeout, a lost connection,
-- never sent) is noted in the sorted set `settled`, and its reserve batch in
-- `gone` if that never landed, so that a late arrival does nothing (both for
-- a day: the sweep empties them).
-- KEYS: C counters; the events stream; the reservations' deadlines;
--   sc:{ORG}:settlements; the reservations (hash); settled, released and
--   gone (sorted sets, scored by when an entry may go); the low_balance
--   marker; G markers hashes (of the counters' windows).
-- ARGV: C, M requests, G, the org prefix's length; per counter: kind (r rate,
--   c other), the batch's delta if every request is still reserved,
--   expire_at, cap and warn thresholds ("FRACTION=THRESHOLD;..."; "" none),
--   its markers hash (its place among the G; 0 none), its label for events
--   ("SCOPE ID WINDOW PERIOD[ MODEL]"; "" none), its forecast's period
--   ("START RESET" unix seconds; "" none); then low_balance ("" none), index of
--   the balance counter, of the held counter; then per request: its id, its
--   reserve's batch id ("" none sent), 1 if its reserve was answered, and
--   what to add on top when it is not reserved (never, or given back at its
--   deadline): "INDEX DELTA\n" lines (one argument, read only then: most
--   requests never need it); last, 1 if an earlier send of this same call
--   may have landed (its reply was lost, or WAIT did not confirm it), else 0.
-- A reservation that is not here when its request's first send arrives
-- never reached this Redis (a failover lost it before a replica had it):
-- the request is counted at its real cost, once (noted in `settled`).
-- Reply: 1 settled now, 0 already settled (a resend: a batch lands whole),
--   an error reply when Redis refused a write (nothing done: send it again).
-- uses: prelude, numbers, counters, events, warnings, clock, forecast
local c, m, g, plen = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local stream, deadlines, settlements = KEYS[c + 1], KEYS[c + 2], KEYS[c + 3]
local reserved, settled, released_set, gone = KEYS[c + 4], KEYS[c + 5], KEYS[c + 6], KEYS[c + 7]
local low_marker = KEYS[c + 8]
local per = 8  -- arguments per counter
local function arg(i, k) return ARGV[4 + per * (i - 1) + k] end
local a = 5 + per * c
local low, balance_key, held_key = ARGV[a], KEYS[tonumber(ARGV[a + 1])], KEYS[tonumber(ARGV[a + 2])]
local again = ARGV[#ARGV] == '1'
local rid, batch, answered, corrections = {}, {}, {}, {}
local asked = {}
local p = a + 3
for j = 1, m do
  rid[j], batch[j], answered[j], corrections[j] = ARGV[p], ARGV[p + 1], ARGV[p + 2] == '1', p + 3
  if batch[j] ~= '' then asked[#asked + 1] = j end
  p = p + 4
end

-- Everything is read before the first write.
local state, held, order_of_batches = {}, {}, {}
if #asked > 0 then
  local names = {}
  for x, j in ipairs(asked) do names[x] = rid[j] end
  local values = redis.call('HMGET', reserved, unpack(names))
  for x, j in ipairs(asked) do
    if values[x] then
      state[j] = 'reserved'
      local b = batch[j]
      if not held[b] then
        held[b] = {}
        order_of_batches[#order_of_batches + 1] = b
      end
      held[b][#held[b] + 1] = rid[j]
    end
  end
end
local done, released, tombstones, markers_due, noted = 0, {}, {}, {}, {}
for j = 1, m do
  if not state[j] then
    if redis.call('ZSCORE', settled, rid[j]) then
      state[j] = 'done'
    elseif redis.call('ZSCORE', released_set, rid[j]) then
      state[j] = 'unreserved'  -- given back at its deadline
      released[#released + 1] = rid[j]
    elseif answered[j] and again then
      state[j] = 'done'        -- its field went with an earlier send: a resend
    elseif answered[j] then
      state[j] = 'unreserved'  -- its reservation never reached this Redis
      noted[j] = true
    else
      state[j] = 'unreserved'  -- its reserve never landed (and now never will)
      if batch[j] ~= '' then tombstones[#tombstones + 1] = batch[j] end
    end
    if state[j] == 'done' then done = done + 1 end
  end
end
if done == m then return 0 end
if done > 0 then return redis.error_reply('ERR spend-cap: a settlement batch found partly settled') end

local kind, live = {}, {}
for i = 1, c do
  kind[i] = arg(i, 1)
  -- A rate counter whose minute has gone is left alone, not recreated.
  live[i] = kind[i] ~= 'r' or redis.call('EXISTS', KEYS[i]) == 1
end
-- What each counter gets: the batch's delta, plus the corrections of the
-- requests not reserved (summed exactly, so each is written once).
local planned, order = {}, {}
local function plan(i, delta)
  if delta == '0' or not live[i] then return end
  if planned[i] then
    planned[i] = add(planned[i], delta)
  else
    planned[i] = delta
    order[#order + 1] = i
  end
end
local warned, forecast = {}, {}
for i = 1, c do
  plan(i, arg(i, 2))
  if arg(i, 5) ~= '' and live[i] and tonumber(arg(i, 6)) > 0 then warned[#warned + 1] = i end
  if arg(i, 8) ~= '' and live[i] and tonumber(arg(i, 6)) > 0 then forecast[#forecast + 1] = i end
end
for j = 1, m do
  if state[j] == 'unreserved' then
    for i, delta in string.gmatch(ARGV[corrections[j]], '(%d+) (%S+)\n') do plan(tonumber(i), delta) end
  end
end

-- The counters (with the settlement count, so that there is always one)
-- all or nothing; the first write is among them, so nothing after it can
-- be refused for memory.
local keys, deltas, expires, at, values = {settlements}, {tostring(m)}, {'0'}, {}, {}
for _, i in ipairs(order) do
  if planned[i] ~= '0' then
    local n = #keys + 1
    keys[n], deltas[n], expires[n], at[i] = KEYS[i], planned[i], arg(i, 3), n
  end
end
local err = add_all(keys, deltas, expires, values)
if err then return err end
-- The reservations end: a batch whose last request settles leaves its deadline.
for _, b in ipairs(order_of_batches) do
  redis.call('HDEL', reserved, unpack(held[b]))
  if redis.call('HINCRBY', reserved, '#' .. b, -#held[b]) <= 0 then
    redis.call('HDEL', reserved, '@' .. b, '#' .. b)
    redis.call('ZREM', deadlines, b)
  end
end
if #released > 0 then redis.call('ZREM', released_set, unpack(released)) end
local later = nil
for j = 1, m do
  if not answered[j] or noted[j] then
    later = later or string.format('%.0f', redis_now() + 86400000)
    redis.call('ZADD', settled, later, rid[j])
  end
end
for _, b in ipairs(tombstones) do
  later = later or string.format('%.0f', redis_now() + 86400000)
  redis.call('ZADD', gone, later, b)
end

-- A cap's fraction is crossed when the batch took its counter from below
-- the threshold to at or above it; a counter the batch left alone crossed
-- nothing. Its value after is INCRBY's (exact below 2^53, read again above).
for _, i in ipairs(warned) do
  if at[i] then
    local v = values[at[i]]
    local after = (v < two53 and v > -two53) and string.format('%.0f', v) or redis.call('GET', KEYS[i])
    warn_between(stream, KEYS[c + 8 + tonumber(arg(i, 6))], string.sub(KEYS[i], plen + 1), arg(i, 7), arg(i, 5),
      arg(i, 4), arg(i, 3), add(after, neg(planned[i])), after)
  end
end
local now_s = nil
for _, i in ipairs(forecast) do
  if at[i] then
    local v = values[at[i]]
    local after = (v < two53 and v > -two53) and string.format('%.0f', v) or redis.call('GET', KEYS[i])
    now_s = now_s or math.floor(redis_now() / 1000)
    forecast_check(stream, KEYS[c + 8 + tonumber(arg(i, 6))], string.sub(KEYS[i], plen + 1), arg(i, 7), arg(i, 4),
      arg(i, 3), arg(i, 8), after, now_s)
  end
end
if low ~= '' then
  -- Settled spend alone lowers the real balance, so it crosses once per top-up.
  local b, h = redis.call('GET', balance_key) or '0', redis.call('GET', held_key) or '0'
  if is_int(b) and is_int(h) then
    local real = add(b, h)
    if not le(low, real) then
      if redis.call('SET', low_marker, '1', 'NX') then
        append_event(stream, {'type', 'low_balance', 'balance', real, 'threshold', low})
      end
    else
      redis.call('DEL', low_marker)
    end
  end
end
return 1
