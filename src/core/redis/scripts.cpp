// The Lua that runs in Redis: every check, reservation and settlement is
// one script call, atomic, and all or nothing.
#include "redis/scripts.h"

#include "request/request.h"  // sha1_hex

namespace spendcap {

namespace {

// Shared by both scripts. Amounts never pass through Lua numbers on their way
// to a check (Lua 5.1 numbers are doubles): the worker computes every
// threshold and delta in int64 and sends strings, and the scripts compare
// integer strings exactly, whatever their size.
constexpr const char *kLuaHelpers = R"lua(
-- Globals read once: a global costs a table lookup each time, a local none.
local ARGV, KEYS, redis = ARGV, KEYS, redis
local type, tonumber, unpack, ipairs = type, tonumber, unpack, ipairs
local string, math = string, math

-- a <= b for integer strings as Redis writes them (no leading zeros, '-' sign)
local function le(a, b)
  local a_neg, b_neg = string.byte(a, 1) == 45, string.byte(b, 1) == 45
  if a_neg ~= b_neg then return a_neg end
  if #a ~= #b then return (#a < #b) ~= a_neg end
  if a_neg then return a >= b end
  return a <= b
end

local function is_int(v)
  return v == '0' or string.find(v, '^%-?[1-9]%d*$') ~= nil
end

local function int_at(key)
  local v = redis.call('GET', key) or '0'
  if not is_int(v) then
    error('spend-cap: ' .. key .. ' does not hold an integer')
  end
  return v
end

-- The exact sum of two integer strings (int64 range), as a string: each is
-- split into hi * 1e9 + lo, parts a double holds exactly.
local function split(s)
  local neg = string.byte(s, 1) == 45
  local digits = neg and string.sub(s, 2) or s
  local hi, lo = tonumber(string.sub(digits, 1, -10)) or 0, tonumber(string.sub(digits, -9))
  if neg then return -hi, -lo end
  return hi, lo
end

local function add(a, b)
  -- below 10^15 a double is exact: the common case, without splitting
  if #a < 16 and #b < 16 then return string.format('%.0f', tonumber(a) + tonumber(b)) end
  local ah, al = split(a)
  local bh, bl = split(b)
  local h, l = ah + bh, al + bl
  h, l = h + math.floor(l / 1e9), l % 1e9
  if h < 0 and l > 0 then h, l = h + 1, l - 1e9 end
  if h == 0 then return string.format('%.0f', l) end
  return string.format('%.0f', h) .. string.format('%09.0f', math.abs(l))
end

-- Within one script, values below 2^53 in size are kept as Lua numbers (a
-- double holds them, and a sum tells when it leaves that range), larger
-- ones as integer strings: num() and str() convert, nadd() and nle() are
-- add() and le().
local two53 = 9007199254740992
local function num(s)
  local v = tonumber(s)
  if v and v < two53 and v > -two53 then return v end
  return s
end
local function str(v)
  if type(v) == 'number' then return string.format('%.0f', v) end
  return v
end
local function nadd(a, b)
  if type(a) == 'number' and type(b) == 'number' then
    local r = a + b
    if r < two53 and r > -two53 then return r end
  end
  return num(add(str(a), str(b)))
end
local function nle(a, b)
  if type(a) == 'number' and type(b) == 'number' then return a <= b end
  return le(str(a), str(b))
end

-- A counter's value as a reply integer: a double near 2^63 would round
-- past int64 (undefined in Redis's conversion), so it is clamped below.
local function int_reply(v) return math.min(v, 9223372036854774784) end

-- The negation of an integer string (the worker never sends INT64_MIN).
local function neg(d)
  if d == '0' then return d end
  if string.byte(d, 1) == 45 then return string.sub(d, 2) end
  return '-' .. d
end

-- INCRBY keys[i] by deltas[i] for every i, all or nothing: an increment that
-- Redis refuses (it would overflow int64, the key holds no integer, OOM)
-- takes back those before it and its error is returned, so a script never
-- stops half-way. `values[i]` gets each counter's new value (a Lua number).
local function add_all(keys, deltas, expire_at, values)
  local created = {}
  for i = 1, #keys do
    -- a new counter is one whose value is the delta; a double cannot tell
    -- that past 2^53, so a delta that large asks first
    local fresh = #deltas[i] >= 16 and redis.call('EXISTS', keys[i]) == 0
    local v = redis.pcall('INCRBY', keys[i], deltas[i])
    if type(v) == 'table' then
      for j = i - 1, 1, -1 do
        -- back to what it was; a counter back at 0 reads the same deleted,
        -- and one this script created must not stay without its expiry
        if redis.call('INCRBY', keys[j], neg(deltas[j])) == 0 then redis.call('DEL', keys[j]) end
      end
      return v
    end
    created[i] = fresh or (#deltas[i] < 16 and v == tonumber(deltas[i]))
    values[i] = v
  end
  for i = 1, #keys do
    if created[i] and expire_at[i] ~= '0' then redis.call('EXPIREAT', keys[i], expire_at[i]) end
  end
  return nil
end

-- Events never stop a script: a stream key of the wrong type loses the event.
local function append_event(stream, fields)
  redis.pcall('XADD', stream, 'MAXLEN', '~', '10000', '*', unpack(fields))
end

-- True the first time a marker is set; it expires with its counter. A
-- marker Redis refuses (OOM) just loses its event.
local function first_time(marker, expire_at)
  local set = redis.pcall('SET', marker, '1', 'NX')
  if not set or set.err then return false end
  if expire_at ~= '0' then redis.call('EXPIREAT', marker, expire_at) end
  return true
end

local window_names = {d = 'daily', m = 'monthly', life = 'lifetime'}

-- A spend counter's key sc:{ORG}:spend:SCOPE:ID:W[:PERIOD] without its
-- prefix, and an event of `type` naming its scope, id, window and period,
-- followed by `extra` fields.
local function describe(prefix, key, type, extra)
  local rest = string.sub(key, #prefix + 7)
  local scope, id, w, period = string.match(rest, '^([^:]+):([^:]+):([^:]+):?(.*)$')
  local fields = {'type', type, 'scope', scope, 'id', id, 'window', window_names[w] or w, 'period', period}
  for _, v in ipairs(extra) do fields[#fields + 1] = v end
  return rest, fields
end

-- spec: "FRACTION=THRESHOLD;..." of a cost cap. A counter that went from
-- `before` to `after` crossed THRESHOLD when before < THRESHOLD <= after;
-- each crossing is told once per cap and period.
local function warn_between(prefix, stream, key, spec, cap, expire_at, before, after)
  for fraction, threshold in string.gmatch(spec, '([^;=]+)=([^;=]+)') do
    if not le(threshold, before) and le(threshold, after) then
      local rest, fields = describe(prefix, key, 'spend_cap_warning_threshold_reached',
        {'fraction', fraction, 'spent', after, 'cap', cap})
      if first_time(prefix .. 'warned:' .. rest .. ':' .. cap .. ':' .. fraction, expire_at) then
        append_event(stream, fields)
      end
    end
  end
end

-- Gives back the reservations of record `id` whose requests never settled.
-- A batch's record sc:{ORG}:resv:ID is a hash: per request id, "DELTA KEY\n"
-- lines (KEY without the prefix) that undo its reservation (a record made
-- before batches is a string: one request, id its own). Deleting the record
-- first makes it happen once; each request given back leaves
-- sc:{ORG}:released:RID for a day, so that its late settlement adds its real
-- cost. A counter that has expired since (a rate's minute) is not recreated.
local function release(prefix, deadlines, id)
  local record_key = prefix .. 'resv:' .. id
  redis.call('ZREM', deadlines, id)
  local kind = redis.call('TYPE', record_key)['ok']
  local entries
  if kind == 'hash' then
    entries = redis.call('HGETALL', record_key)
  elseif kind == 'string' then
    entries = {'', redis.call('GET', record_key)}
  else
    return 0
  end
  redis.call('DEL', record_key)
  for x = 1, #entries, 2 do
    for delta, key in string.gmatch(entries[x + 1], '(%S+) ([^\n]+)\n') do
      if redis.call('EXISTS', prefix .. key) == 1 then redis.pcall('INCRBY', prefix .. key, delta) end
    end
    if entries[x] ~= '' then redis.call('SET', prefix .. 'released:' .. entries[x], '1', 'EX', 86400) end
  end
  return #entries / 2
end

-- Redis's clock in ms.
local function redis_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Releases the records in `deadlines` whose deadline (`now`, Redis's clock,
-- ms) has passed, at most `most`; returns how many requests.
local function release_expired(prefix, deadlines, most, now)
  local due = redis.call('ZRANGEBYSCORE', deadlines, '-inf', now, 'LIMIT', 0, most)
  local released = 0
  for _, id in ipairs(due) do released = released + release(prefix, deadlines, id) end
  return released
end
)lua";

// Reserves a batch: the requests of one org that were ready in the same
// event loop iteration, decided one after the other in arrival order, each
// against the counters as the requests before it left them.
// KEYS: C counters, the batch's record sc:{ORG}:resv:BATCH, the deadlines
//   (sorted set sc:{ORG}:deadlines), the events stream, [sc:{ORG}:cleared].
// ARGV: C, M requests, H chains, prefix, ttl (ms), batch id; per counter:
//   kind (s spend, c count, r rate, b balance, h held), what a request adds
//   ($ its cost, - minus its cost, t its tokens, 1 one), cap ("" none),
//   expire_at (0 never), warn thresholds ("FRACTION=THRESHOLD;..."; "" none);
//   then R ceiling rows and the counter they decide (0 none), per row:
//   cleared_min, cap, warn thresholds; then per chain (the counters of one
//   key, in check order): K and K counter indices; then per request: its
//   id, dry_run, chain, cost, tokens, and its release record ("DELTA KEY\n"
//   lines); last, the org's config version the batch's caps were read at
//   ("" none: see records.h).
// Reply: {3} when sc:{ORG}:config holds another version (a record changed:
//   nothing done; the worker reads the records again); else one flat array (a nested one costs Redis a table per request to
//   convert): per request the length L of its part, then the part {1
//   reserved / 0 refused, refusing counter's place in its chain (0 none),
//   that counter's value, ceiling row (0 none), after_1, ..., after_K
//   (reserved only)}; {2}: its worker gave the batch up and settled its
//   requests (a late arrival): nothing done; an error reply when Redis
//   refused a write (nothing done either).
// A check is `current + delta <= cap` (the balance: `balance >= estimate`);
// a request is reserved only if all pass (or in a dry run), and its deltas
// then count for the requests after it. Expired reservations never refuse
// a request: if one is refused, the org's expired ones are given back and
// the batch decided again. Numbers are read from their strings once (a
// conversion costs more than the arithmetic).
constexpr const char *kReserveBody = R"lua(
local c, m, h = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local prefix, ttl, batch, version = ARGV[4], tonumber(ARGV[5]), ARGV[6], ARGV[#ARGV]
local record_key, deadlines, stream = KEYS[c + 1], KEYS[c + 2], KEYS[c + 3]
if redis.call('EXISTS', prefix .. 'gone:' .. batch) == 1 then return {2} end
local now = redis_now()

local kind, what, cap, expire_at, warn = {}, {}, {}, {}, {}
for i = 1, c do
  local a = 6 + 5 * (i - 1)
  kind[i], what[i], cap[i], expire_at[i], warn[i] = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
end
local a = 7 + 5 * c
local rows, decided, row = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), 0
if decided > 0 then
  local cleared = int_at(KEYS[c + 4])
  if string.byte(cleared, 1) == 45 then cleared = '0' end  -- a refund never removes the ceiling
  cap[decided], warn[decided] = '0', ''  -- no row applies: a cap of 0
  for r = 1, rows do
    local b = a + 2 + 3 * (r - 1)
    if le(ARGV[b], cleared) then row, cap[decided], warn[decided] = r, ARGV[b + 1], ARGV[b + 2] end
  end
end
local capn, two52 = {}, two53 / 2
for i = 1, c do
  if cap[i] ~= '' then capn[i] = num(cap[i]) end
end
local first = a + 2 + 3 * rows
local chains = {}
local p = first
for x = 1, h do
  local k, chain = tonumber(ARGV[p]), {}
  for q = 1, k do chain[q] = tonumber(ARGV[p + q]) end
  chains[x] = chain
  p = p + 1 + k
end
first = p
local function reply_int(v)
  if type(v) == 'number' then return int_reply(v) end
  return int_reply(tonumber(v))
end

-- Decides every request of the batch against the counters as Redis holds
-- them now, writing nothing (the cost caps it finds reached are listed, to
-- be told once the decisions are final). `small`: every counter, cap and
-- request amount is so far below 2^53 that no sum the batch can make
-- leaves the range a double holds exactly; the loop then does plain
-- arithmetic (a type() test per operation costs more than the rest of it),
-- otherwise every step goes through nadd()/nle().
local function decide()
  local cur, start = {}, {}
  -- One MGET for every counter (a nil is a missing key, or one of another
  -- type, which GET then refuses as before).
  -- with the config version first: caps read before a change never decide
  local values = redis.call('MGET', prefix .. 'config', unpack(KEYS, 1, c))
  if (values[1] or '') ~= version then return nil end
  local small = true
  for i = 1, c do
    local v = values[i + 1]
    if not v or not is_int(v) then v = int_at(KEYS[i]) end
    start[i] = v
    cur[i] = num(v)
    local x, k = cur[i], capn[i]
    if type(x) ~= 'number' or x >= two52 or x <= -two52 or (k and (type(k) ~= 'number' or k >= two52)) then
      small = false
    end
  end
  local costs, tokens_of, limit = {}, {}, two52 / (m + 1)
  for j = 1, m do
    local at = first + 6 * (j - 1)
    local cost, tokens = tonumber(ARGV[at + 3]), tonumber(ARGV[at + 4])
    if not (cost and tokens and cost < limit and cost > -limit and tokens < limit and tokens > -limit) then
      small = false
    end
    costs[j], tokens_of[j] = cost, tokens
  end
  if not small then
    for j = 1, m do
      local at = first + 6 * (j - 1)
      costs[j], tokens_of[j] = num(ARGV[at + 3]), num(ARGV[at + 4])
    end
  end

  local replies, n, nf, fields, sum, d = {}, 0, 0, {}, {}, {}
  local refusals, reached, told = 0, {}, {}
  local p = first
  for j = 1, m do
    local rid, dry, chain = ARGV[p], ARGV[p + 1] == '1', chains[tonumber(ARGV[p + 2])]
    local cost, tokens = costs[j], tokens_of[j]
    local minus_cost
    if small then minus_cost = -cost else minus_cost = num(neg(str(cost))) end
    local refused, refused_value, links = 0, 0, #chain
    for q = 1, links do
      local i = chain[q]
      local w = what[i]
      local delta = (w == '$' and cost) or (w == 't' and tokens) or (w == '1' and 1) or minus_cost
      d[q] = delta
      local fits, now_i, cap_i = true, cur[i], capn[i]
      if kind[i] == 'b' then
        -- the balance must cover the estimate
        if small then fits = cost <= now_i else fits = nle(cost, now_i) end
      elseif cap_i then
        if small then fits = now_i + delta <= cap_i else fits = nle(nadd(now_i, delta), cap_i) end
      end
      if not fits and refused == 0 then
        refused, refused_value = q, now_i
        refusals = refusals + 1
        -- The cap is reached: the first refusal in its period says so (not
        -- a request larger than the whole cap, which says nothing of the spend).
        if kind[i] == 's' and nle(delta, cap_i) and not told[i] then
          told[i] = true
          reached[#reached + 1] = {i, str(now_i)}
        end
        if not dry then break end
      end
    end
    if refused == 0 or dry then
      replies[n + 1], replies[n + 2], replies[n + 3] = 4 + links, 1, refused
      replies[n + 4], replies[n + 5] = reply_int(refused_value), row
      n = n + 5
      for q = 1, links do
        local i, delta = chain[q], d[q]
        local after = cur[i]
        if small then
          after = after + delta
          sum[i] = (sum[i] or 0) + delta
          replies[n + q] = after
        else
          if delta ~= 0 then
            after = nadd(after, delta)
            sum[i] = sum[i] and nadd(sum[i], delta) or delta
          end
          replies[n + q] = reply_int(after)
        end
        cur[i] = after
      end
      n = n + links
      fields[nf + 1], fields[nf + 2] = rid, ARGV[p + 5]
      nf = nf + 2
    else
      replies[n + 1], replies[n + 2], replies[n + 3] = 4, 0, refused
      replies[n + 4], replies[n + 5] = reply_int(refused_value), row
      n = n + 5
    end
    p = p + 6
  end
  return {replies = replies, fields = fields, sum = sum, cur = cur, start = start, reached = reached,
          refusals = refusals}
end

-- Reservations whose deadline has passed (their workers died) must never
-- refuse a request: when one is refused, the org's expired ones are given
-- back and the batch decided again. Otherwise the periodic sweep returns them.
local outcome = decide()
if not outcome then return {3} end
if outcome.refusals > 0 and release_expired(prefix, deadlines, 8, now) > 0 then outcome = decide() end
local replies, fields, sum, cur, start = outcome.replies, outcome.fields, outcome.sum, outcome.cur, outcome.start
for _, r in ipairs(outcome.reached) do
  local i, spent = r[1], r[2]
  local rest, event = describe(prefix, KEYS[i], 'spend_cap_reached', {'spent', spent, 'cap', cap[i]})
  if first_time(prefix .. 'reached:' .. rest .. ':' .. cap[i], expire_at[i]) then append_event(stream, event) end
end
if #fields == 0 then return replies end

-- The record first: a settlement replaces exactly what it says, and a sweep
-- gives it back at the deadline. (pcall: Redis 5/6 would hide an OOM
-- refusal in a script error.)
local set = redis.pcall('HSET', record_key, unpack(fields))
if type(set) == 'table' then return set end
redis.call('PEXPIRE', record_key, ttl + 86400000)
local zadd = redis.pcall('ZADD', deadlines, string.format('%.0f', now + ttl), batch)
if type(zadd) == 'table' then
  redis.call('DEL', record_key)
  return zadd
end
local keys, deltas, expires = {}, {}, {}
for i = 1, c do
  if sum[i] then sum[i] = str(sum[i]) end
  if sum[i] and sum[i] ~= '0' then
    local n = #keys + 1
    keys[n], deltas[n], expires[n] = KEYS[i], sum[i], expire_at[i]
  end
end
local err = add_all(keys, deltas, expires, {})
if err then
  redis.call('DEL', record_key)
  redis.call('ZREM', deadlines, batch)
  return err
end
for i = 1, c do
  if warn[i] ~= '' and sum[i] then
    warn_between(prefix, stream, KEYS[i], warn[i], cap[i], expire_at[i], start[i], str(cur[i]))
  end
end
return replies
)lua";

// Settles a batch of requests of one org in one call: their deltas are
// summed per counter by the worker, so each counter is written once per
// batch, whatever its size. Exactly once without a marker per request: a
// request whose reserve was answered is settled while its record holds it
// (a settlement deletes it; a resend finds it gone); one whose reserve was
// not answered (a timeout, a lost connection, never sent) gets a marker
// sc:{ORG}:settled:RID, and its reserve batch a tombstone sc:{ORG}:gone:BATCH
// if that never landed, so that a late arrival does nothing.
// KEYS: C counters, the events stream, the deadlines, sc:{ORG}:settlements.
// ARGV: C, M requests, prefix; per counter: kind (r rate, c other), the
//   batch's delta if every request is still reserved, expire_at, cap and
//   warn thresholds ("FRACTION=THRESHOLD;..."; "" none); then low_balance
//   ("" none), index of the balance counter, of the held counter; then per
//   request: its id, its reserve's batch id ("" none sent), 1 if its
//   reserve was answered, and what to add on top when it is not reserved
//   (never, or given back at its deadline): "INDEX DELTA\n" lines (one
//   argument, read only then: most requests never need it).
// Reply: 1 settled now, 0 already settled (a resend: a batch lands whole),
//   an error reply when Redis refused a write (nothing done: send it again).
constexpr const char *kSettleBody = R"lua(
local c, m, prefix = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local stream, deadlines, settlements = KEYS[c + 1], KEYS[c + 2], KEYS[c + 3]
local a = 4 + 5 * c
local low, balance_key, held_key = ARGV[a], KEYS[tonumber(ARGV[a + 1])], KEYS[tonumber(ARGV[a + 2])]
local rid, batch, answered, corrections = {}, {}, {}, {}
local members, batches = {}, {}
local p = a + 3
for j = 1, m do
  rid[j], batch[j], answered[j], corrections[j] = ARGV[p], ARGV[p + 1], ARGV[p + 2] == '1', p + 3
  if batch[j] ~= '' then
    if not members[batch[j]] then
      members[batch[j]] = {}
      batches[#batches + 1] = batch[j]
    end
    local list = members[batch[j]]
    list[#list + 1] = j
  end
  p = p + 4
end

-- Everything is read before the first write.
local state, held = {}, {}
for _, b in ipairs(batches) do
  local names = {}
  for x, j in ipairs(members[b]) do names[x] = rid[j] end
  local values = redis.call('HMGET', prefix .. 'resv:' .. b, unpack(names))
  held[b] = {}
  for x, j in ipairs(members[b]) do
    if values[x] then
      state[j] = 'reserved'
      held[b][#held[b] + 1] = rid[j]
    end
  end
end
local done, released, tombstones = 0, {}, {}
for j = 1, m do
  if not state[j] then
    if not answered[j] and redis.call('EXISTS', prefix .. 'settled:' .. rid[j]) == 1 then
      state[j] = 'done'
    elseif redis.call('EXISTS', prefix .. 'released:' .. rid[j]) == 1 then
      state[j] = 'unreserved'  -- given back at its deadline
      released[#released + 1] = prefix .. 'released:' .. rid[j]
    elseif answered[j] then
      state[j] = 'done'        -- its record went with its settlement: a resend
    else
      state[j] = 'unreserved'  -- its reserve never landed (and now never will)
      if batch[j] ~= '' then tombstones[#tombstones + 1] = prefix .. 'gone:' .. batch[j] end
    end
    if state[j] == 'done' then done = done + 1 end
  end
end
if done == m then return 0 end
if done > 0 then return redis.error_reply('ERR spend-cap: a settlement batch found partly settled') end

local kind, live = {}, {}
for i = 1, c do
  kind[i] = ARGV[4 + 5 * (i - 1)]
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
local warned = {}
for i = 1, c do
  plan(i, ARGV[5 + 5 * (i - 1)])
  if ARGV[8 + 5 * (i - 1)] ~= '' and live[i] then warned[#warned + 1] = i end
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
    keys[n], deltas[n], expires[n], at[i] = KEYS[i], planned[i], ARGV[6 + 5 * (i - 1)], n
  end
end
local err = add_all(keys, deltas, expires, values)
if err then return err end
for _, b in ipairs(batches) do
  if #held[b] > 0 then
    local record = prefix .. 'resv:' .. b
    redis.call('HDEL', record, unpack(held[b]))
    if redis.call('EXISTS', record) == 0 then redis.call('ZREM', deadlines, b) end
  end
end
if #released > 0 then redis.call('DEL', unpack(released)) end
for j = 1, m do
  if not answered[j] then redis.call('SET', prefix .. 'settled:' .. rid[j], '1', 'EX', 86400) end
end
for _, t in ipairs(tombstones) do redis.call('SET', t, '1', 'EX', 86400) end

-- A cap's fraction is crossed when the batch took its counter from below
-- the threshold to at or above it; a counter the batch left alone crossed
-- nothing. Its value after is INCRBY's (exact below 2^53, read again above).
for _, i in ipairs(warned) do
  if at[i] then
    local v = values[at[i]]
    local after = (v < two53 and v > -two53) and string.format('%.0f', v) or redis.call('GET', KEYS[i])
    warn_between(prefix, stream, KEYS[i], ARGV[8 + 5 * (i - 1)], ARGV[7 + 5 * (i - 1)], ARGV[6 + 5 * (i - 1)],
      add(after, neg(planned[i])), after)
  end
end
if low ~= '' then
  -- Settled spend alone lowers the real balance, so it crosses once per top-up.
  local b, h = redis.call('GET', balance_key) or '0', redis.call('GET', held_key) or '0'
  if is_int(b) and is_int(h) then
    local real = add(b, h)
    local marker = prefix .. 'low_balance'
    if not le(low, real) then
      if redis.call('SET', marker, '1', 'NX') then
        append_event(stream, {'type', 'low_balance', 'balance', real, 'threshold', low})
      end
    else
      redis.call('DEL', marker)
    end
  end
end
return 1
)lua";

// KEYS: the org's deadlines, and those of reservations made before batches
// (sc:{ORG}:reservations). ARGV: prefix, most.
// Reply: how many expired reservations were given back.
constexpr const char *kSweepBody = R"lua(
local most = tonumber(ARGV[2])
local now = redis_now()
local released = release_expired(ARGV[1], KEYS[1], most, now)
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, most)
for _, rid in ipairs(old) do released = released + release(ARGV[1], KEYS[2], rid) end
return released
)lua";

// KEYS: the marker sc:{ORG}:expired:KEY_ID:EXPIRES_AT, the events stream.
// ARGV: key id, expires_at (RFC 3339).
constexpr const char *kKeyExpiredBody = R"lua(
if first_time(KEYS[1], ARGV[3]) then
  append_event(KEYS[2], {'type', 'key_expired', 'id', ARGV[1], 'expires_at', ARGV[2]})
end
return 1
)lua";

// A script's text and the SHA-1 EVALSHA names it by, built once; empty (so
// the caller refuses to send it) if that ever failed.
struct Script {
    std::string text;
    std::string sha1;
};

Script load(const char *body) noexcept {
    try {
        Script script;
        script.text = std::string(kLuaHelpers) + body;
        script.sha1 = sha1_hex(script.text);
        return script;
    } catch (...) {
        return {};
    }
}

const Script &reserve() {
    static const Script script = load(kReserveBody);
    return script;
}

const Script &settle() {
    static const Script script = load(kSettleBody);
    return script;
}

const Script &sweep() {
    static const Script script = load(kSweepBody);
    return script;
}

const Script &key_expired() {
    static const Script script = load(kKeyExpiredBody);
    return script;
}

}  // namespace

const std::string &reserve_script() { return reserve().text; }
const std::string &reserve_script_sha1() { return reserve().sha1; }
const std::string &settle_script() { return settle().text; }
const std::string &settle_script_sha1() { return settle().sha1; }
const std::string &sweep_script() { return sweep().text; }
const std::string &sweep_script_sha1() { return sweep().sha1; }
const std::string &key_expired_script() { return key_expired().text; }
const std::string &key_expired_script_sha1() { return key_expired().sha1; }

}  // namespace spendcap
