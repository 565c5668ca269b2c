-- Reserves a batch: the requests of one org that were ready in the same
-- event loop iteration, decided one after the other in arrival order, each
-- against the counters as the requests before it left them.
-- KEYS: C counters; the org's reservations (hash sc:{ORG}:reserved: per
--   request its release lines, per batch "@BATCH" its request ids and
--   "#BATCH" how many hold); their deadlines (sorted set); the events stream;
--   the org's config version; the batches whose settlements came first
--   (sorted set sc:{ORG}:gone); G markers hashes (of the counters' windows);
--   [the org's cleared spend, when a plan's ceiling decides a cap].
-- ARGV: C, M requests, H chains, G, ttl (ms), batch id, the org prefix's
--   length, check_due (1: a refusal that meets reservations past their
--   deadline answers {4}; c: decide and write nothing, not even an event,
--   for POST /keys/ID/check); per counter: kind (s spend, c count, r rate, b
--   balance, h held), what a request adds ($ its cost, - minus its cost, t
--   its tokens, 1 one), cap ("" none), expire_at (0 never), warn thresholds
--   ("FRACTION=THRESHOLD;..."; "" none), its markers hash (its place among
--   the G; 0 none), its label for events ("SCOPE ID WINDOW PERIOD"; "" none);
--   then R ceiling rows and the counter they decide (0 none), per row:
--   cleared_min, cap, warn thresholds; then per chain (the counters of one
--   key, in check order): K and K counter indices; then per request: its
--   id, dry_run, chain, cost, tokens, and its release lines ("DELTA NAME\n",
--   NAME a counter's key without the org's prefix); last, the org's config
--   version the batch's caps were read at ("" none).
-- Reply: {2} the batch's settlements came first (a late arrival): nothing
--   done; {3} sc:{ORG}:config holds another version (a record changed):
--   nothing done, the worker reads the records again; {4} a request would be
--   refused while reservations are past their deadline: nothing done, the
--   worker gives them back and sends the batch again; else one flat array
--   (a nested one costs Redis a table per request to convert): per request
--   the length L of its part, then the part {1 reserved / 0 refused,
--   refusing counter's place in its chain (0 none), that counter's value,
--   ceiling row (0 none), after_1, ..., after_K (reserved only)}; an error
--   reply when Redis refused a write (nothing done either).
-- A check is `current + delta <= cap` (the balance: `balance >= estimate`);
-- a request is reserved only if all pass (or in a dry run), and its deltas
-- then count for the requests after it. Numbers are read from their
-- strings once (a conversion costs more than the arithmetic).
-- uses: prelude, numbers, counters, events, warnings, clock
local c, m, h, g = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local ttl, batch, plen, check_due = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7]), ARGV[8] == '1'
local check_only = ARGV[8] == 'c'
local version = ARGV[#ARGV]
local reserved, deadlines, stream, config, gone = KEYS[c + 1], KEYS[c + 2], KEYS[c + 3], KEYS[c + 4], KEYS[c + 5]
if redis.call('ZSCORE', gone, batch) then return {2} end
local now = redis_now()

local per = 7  -- arguments per counter
local kind, what, cap, expire_at, warn, marks, label = {}, {}, {}, {}, {}, {}, {}
for i = 1, c do
  local a = 8 + per * (i - 1)
  kind[i], what[i], cap[i], expire_at[i], warn[i] = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
  local mark = tonumber(ARGV[a + 6])
  if mark > 0 then marks[i] = KEYS[c + 5 + mark] end
  label[i] = ARGV[a + 7]
end
local a = 9 + per * c
local rows, decided, row = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), 0
if decided > 0 then
  local cleared = int_at(KEYS[c + 6 + g])
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
  local values = redis.call('MGET', config, unpack(KEYS, 1, c))
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
-- refuse a request: when one would, nothing is done and the worker gives them
-- back first, then sends the batch again (with check_due off the second time).
local outcome = decide()
if not outcome then return {3} end
if check_only then return outcome.replies end
if outcome.refusals > 0 and check_due and #redis.call('ZRANGEBYSCORE', deadlines, '-inf', now, 'LIMIT', 0, 1) > 0 then
  return {4}
end
local replies, fields, sum, cur, start = outcome.replies, outcome.fields, outcome.sum, outcome.cur, outcome.start
for _, r in ipairs(outcome.reached) do
  local i, spent = r[1], r[2]
  if marks[i] and first_mark(marks[i], 'reached:' .. string.sub(KEYS[i], plen + 1) .. ':' .. cap[i], expire_at[i]) then
    append_event(stream, counter_event('spend_cap_reached', label[i], {'spent', spent, 'cap', cap[i]}))
  end
end
if #fields == 0 then return replies end

-- The record first: a settlement replaces exactly what it says, and a
-- release gives it back at the deadline. (pcall: Redis 5/6 would hide an OOM
-- refusal in a script error.)
local ids = {}
for x = 1, #fields, 2 do ids[#ids + 1] = fields[x] end
fields[#fields + 1], fields[#fields + 2] = '@' .. batch, table.concat(ids, ' ')
fields[#fields + 1], fields[#fields + 2] = '#' .. batch, tostring(#ids)
local set = redis.pcall('HSET', reserved, unpack(fields))
if type(set) == 'table' then return set end
local function take_back()
  for x = 1, #fields, 2 do fields[(x + 1) / 2] = fields[x] end
  redis.call('HDEL', reserved, unpack(fields, 1, #fields / 2))
end
local zadd = redis.pcall('ZADD', deadlines, string.format('%.0f', now + ttl), batch)
if type(zadd) == 'table' then
  take_back()
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
  take_back()
  redis.call('ZREM', deadlines, batch)
  return err
end
for i = 1, c do
  if warn[i] ~= '' and sum[i] and marks[i] then
    warn_between(stream, marks[i], string.sub(KEYS[i], plen + 1), label[i], warn[i], cap[i], expire_at[i],
      start[i], str(cur[i]))
  end
end
return replies
