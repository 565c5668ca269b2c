// Redis keys (SPEC section 6) and the Lua scripts that reserve and settle a
// request's cost atomically, in one round trip each.
#include "reservation.h"

#include <algorithm>
#include <limits>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "request.h"

namespace spendcap {

namespace {


// Shared by both scripts. Amounts never pass through Lua numbers on their way
// to a check (Lua 5.1 numbers are doubles): the worker computes every
// threshold and delta in int64 and sends strings, and the scripts compare
// integer strings exactly, whatever their size.
constexpr const char *kLuaHelpers = R"lua(
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
  local ah, al = split(a)
  local bh, bl = split(b)
  local h, l = ah + bh, al + bl
  h, l = h + math.floor(l / 1e9), l % 1e9
  if h < 0 and l > 0 then h, l = h + 1, l - 1e9 end
  if h == 0 then return string.format('%.0f', l) end
  return string.format('%.0f', h) .. string.format('%09.0f', math.abs(l))
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
    local v = redis.pcall('INCRBY', keys[i], deltas[i])
    if type(v) == 'table' then
      for j = i - 1, 1, -1 do
        -- back to what it was; a counter back at 0 reads the same deleted,
        -- and one this script created must not stay without its expiry
        if redis.call('INCRBY', keys[j], neg(deltas[j])) == 0 then redis.call('DEL', keys[j]) end
      end
      return v
    end
    created[i] = v == tonumber(deltas[i])
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

-- spec: "FRACTION=THRESHOLD=THRESHOLD_MINUS_DELTA;..." A rise by delta from
-- `before` crosses THRESHOLD when before < THRESHOLD <= before + delta.
local function warn_crossings(prefix, stream, key, spec, cap, expire_at, before)
  for fraction, threshold, less_delta in string.gmatch(spec, '([^;=]+)=([^;=]+)=([^;=]+)') do
    if le(less_delta, before) and not le(threshold, before) then
      local rest, fields = describe(prefix, key, 'spend_cap_warning_threshold_reached',
        {'fraction', fraction, 'spent', redis.call('GET', key), 'cap', cap})
      if first_time(prefix .. 'warned:' .. rest .. ':' .. cap .. ':' .. fraction, expire_at) then
        append_event(stream, fields)
      end
    end
  end
end

-- Gives back a reservation whose request never settled: the record
-- sc:{ORG}:resv:RID holds "DELTA KEY\n" lines (KEY without the prefix) that
-- undo it. Deleting the record first makes it happen once; a counter that
-- has expired since (a rate's minute) is not recreated.
local function release(prefix, rid)
  local record_key = prefix .. 'resv:' .. rid
  local record = redis.call('GET', record_key)
  redis.call('ZREM', prefix .. 'reservations', rid)
  if not record then return 0 end
  redis.call('DEL', record_key)
  for delta, key in string.gmatch(record, '(%S+) ([^\n]+)\n') do
    if redis.call('EXISTS', prefix .. key) == 1 then redis.pcall('INCRBY', prefix .. key, delta) end
  end
  return 1
end

-- Releases at most `most` reservations of the org whose deadline (Redis's
-- clock, ms) has passed; returns how many, and the time.
local function release_expired(prefix, most)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local due = redis.call('ZRANGEBYSCORE', prefix .. 'reservations', '-inf', now, 'LIMIT', 0, most)
  local released = 0
  for _, rid in ipairs(due) do released = released + release(prefix, rid) end
  return released, now
end
)lua";

// KEYS: N counters, the reservation record, the settlement marker, the
//   reservations' deadlines (sorted set), the events stream, [sc:{ORG}:cleared].
// ARGV: N, prefix, the release record, dry_run, ttl (ms), request id, then
//   per counter: kind (s spend, S spend whose cap this request exceeds on its
//   own, so that its refusal says nothing about the spend, c count, b
//   balance), delta, check ("" none; s/c: the most the counter may hold
//   before this request; b: the least), expire_at (0 never), cap and warn
//   spec (spend counters); then R ceiling rows (0 = none), the counter they
//   decide, the check when no row applies, and per row: cleared_min, check,
//   cap, warn spec, kind.
// Reply: {1 reserved / 0 refused, refusing counter (0 none), its value,
//   ceiling row (0 none), after_1, ..., after_N (reserved only)}; {2}: this
//   request is already settled (a late resend): nothing done; an error reply
//   when Redis refused a write (nothing done either).
// Expired reservations of the org are released first, so that they never
// refuse a request. Only capped counters are read, and an expiry is set only
// on a new counter: this script runs once per request.
constexpr const char *kReserveBody = R"lua(
local n = tonumber(ARGV[1])
local prefix, record, dry_run, ttl, rid = ARGV[2], ARGV[3], ARGV[4] == '1', tonumber(ARGV[5]), ARGV[6]
local stream = KEYS[n + 4]
if redis.call('EXISTS', KEYS[n + 2]) == 1 then return {2} end
local _, now = release_expired(prefix, 8)

local kind, delta, check, expire_at, cap, warn = {}, {}, {}, {}, {}, {}
for i = 1, n do
  local a = 6 + 6 * (i - 1)
  kind[i], delta[i], check[i] = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  expire_at[i], cap[i], warn[i] = ARGV[a + 4], ARGV[a + 5], ARGV[a + 6]
end

local a = 7 + 6 * n
local rows, row = tonumber(ARGV[a]), 0
if ARGV[a + 1] then
  local i = tonumber(ARGV[a + 1])
  local cleared = int_at(KEYS[n + 5])
  if string.byte(cleared, 1) == 45 then cleared = '0' end  -- a refund never removes the ceiling
  check[i] = ARGV[a + 2]
  for r = 1, rows do
    local b = a + 3 + 5 * (r - 1)
    if le(ARGV[b], cleared) then
      row, check[i], cap[i], warn[i], kind[i] = r, ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
    end
  end
end

local refused, refused_value, before = 0, '0', {}
for i = 1, n do
  if check[i] ~= '' then
    local current = int_at(KEYS[i])
    local fits
    if kind[i] == 'b' then fits = le(check[i], current) else fits = le(current, check[i]) end
    if not fits and refused == 0 then
      refused, refused_value = i, current
      if kind[i] == 's' then  -- the cap is reached: the first refusal in its period says so
        local rest, fields = describe(prefix, KEYS[i], 'spend_cap_reached', {'spent', current, 'cap', cap[i]})
        if first_time(prefix .. 'reached:' .. rest .. ':' .. cap[i], expire_at[i]) then
          append_event(stream, fields)
        end
      end
      if not dry_run then return {0, i, int_reply(tonumber(current)), row} end
    end
    before[i] = current
  end
end

-- The record first: the settlement replaces exactly what it says, and a
-- sweep gives it back at the deadline.
-- (pcall: Redis 5/6 would hide an OOM refusal in a script error)
local set = redis.pcall('SET', KEYS[n + 1], record, 'PX', ttl + 86400000)
if set.err then return set end
local zadd = redis.pcall('ZADD', KEYS[n + 3], now + ttl, rid)
if type(zadd) == 'table' then
  redis.call('DEL', KEYS[n + 1])
  return zadd
end
local keys, deltas, expires, index = {}, {}, {}, {}
for i = 1, n do
  if delta[i] ~= '0' then
    keys[#keys + 1], deltas[#keys + 1], expires[#keys + 1] = KEYS[i], delta[i], expire_at[i]
    index[#keys] = i
  end
end
local values = {}
local err = add_all(keys, deltas, expires, values)
if err then
  redis.call('DEL', KEYS[n + 1])
  redis.call('ZREM', KEYS[n + 3], rid)
  return err
end

local reply = {1, refused, int_reply(tonumber(refused_value)), row}
for i = 1, n do reply[i + 4] = before[i] and int_reply(tonumber(before[i])) or 0 end
for m = 1, #keys do
  local i = index[m]
  reply[i + 4] = int_reply(values[m])
  if warn[i] ~= '' then
    warn_crossings(prefix, stream, KEYS[i], warn[i], cap[i], expire_at[i], before[i])
  end
end
return reply
)lua";

// Settles a batch of requests of one org in one call: their deltas are
// summed per counter by the worker, so each counter is written once per
// batch, whatever its size.
// KEYS: C counters, the events stream, the reservations' deadlines, then
//   per request: its reservation record and its settlement marker.
// ARGV: C, M requests, prefix, then per counter: kind (r rate, c other),
//   the batch's delta if every reservation is still recorded, expire_at, cap
//   and warn thresholds ("FRACTION=THRESHOLD;..."; "" none); then
//   low_balance ("" none), index of the balance counter, index of the held
//   counter; then per request: its id, K, and K pairs (counter index, what
//   to add on top when its reservation is no longer recorded: never made,
//   or given back at its deadline).
// Reply: 1 settled now, 0 already settled (a batch lands whole, so a resend
//   finds every marker), an error reply when Redis refused a write (nothing
//   done: send it again).
constexpr const char *kSettleBody = R"lua(
local c, m, prefix = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local stream, deadlines = KEYS[c + 1], KEYS[c + 2]
local settled = 0
for j = 1, m do settled = settled + redis.call('EXISTS', KEYS[c + 2 + 2 * j]) end
if settled == m then return 0 end
if settled > 0 then return redis.error_reply('ERR spend-cap: a settlement batch found partly settled') end

-- Everything is read before the first write.
local kind, live = {}, {}
for i = 1, c do
  kind[i] = ARGV[4 + 5 * (i - 1)]
  -- A rate counter whose minute has gone is left alone, not recreated.
  live[i] = kind[i] ~= 'r' or redis.call('EXISTS', KEYS[i]) == 1
end
-- What each counter gets: the batch's delta, plus the corrections of the
-- requests no longer reserved (summed exactly, so each is written once).
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
local warned, befores = {}, {}
for i = 1, c do
  plan(i, ARGV[5 + 5 * (i - 1)])
  if ARGV[8 + 5 * (i - 1)] ~= '' and live[i] then
    warned[#warned + 1] = i
    befores[i] = int_at(KEYS[i])
  end
end
local a = 4 + 5 * c
local low, balance_key, held_key = ARGV[a], KEYS[tonumber(ARGV[a + 1])], KEYS[tonumber(ARGV[a + 2])]
local p = a + 3
local records, rids = {}, {}
for j = 1, m do
  local record = KEYS[c + 1 + 2 * j]
  local corrections = tonumber(ARGV[p + 1])
  rids[j] = ARGV[p]
  if redis.call('EXISTS', record) == 1 then
    records[#records + 1] = record
  else
    for k = 1, corrections do plan(tonumber(ARGV[p + 2 * k]), ARGV[p + 2 * k + 1]) end
  end
  p = p + 2 + 2 * corrections
end

local keys, deltas, expires = {}, {}, {}
for _, i in ipairs(order) do
  if planned[i] ~= '0' then
    local n = #keys + 1
    keys[n], deltas[n], expires[n] = KEYS[i], planned[i], ARGV[6 + 5 * (i - 1)]
  end
end
local err = add_all(keys, deltas, expires, {})
if err then return err end
-- refused (OOM) only when nothing was added before it
local set = redis.pcall('SET', KEYS[c + 4], '1', 'EX', 86400)
if set.err then return set end
for j = 2, m do redis.call('SET', KEYS[c + 2 + 2 * j], '1', 'EX', 86400) end
if #records > 0 then redis.call('DEL', unpack(records)) end
redis.call('ZREM', deadlines, unpack(rids))

-- A cap's fraction is crossed when the batch took its counter from below
-- the threshold to at or above it.
for _, i in ipairs(warned) do
  local after = redis.call('GET', KEYS[i]) or '0'
  local before, cap, expire_at = befores[i], ARGV[7 + 5 * (i - 1)], ARGV[6 + 5 * (i - 1)]
  for fraction, threshold in string.gmatch(ARGV[8 + 5 * (i - 1)], '([^;=]+)=([^;=]+)') do
    if not le(threshold, before) and le(threshold, after) then
      local rest, fields = describe(prefix, KEYS[i], 'spend_cap_warning_threshold_reached',
        {'fraction', fraction, 'spent', after, 'cap', cap})
      if first_time(prefix .. 'warned:' .. rest .. ':' .. cap .. ':' .. fraction, expire_at) then
        append_event(stream, fields)
      end
    end
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

// KEYS: the reservations' deadlines of one org. ARGV: prefix, most.
// Reply: how many expired reservations were given back.
constexpr const char *kSweepBody = R"lua(
return (release_expired(ARGV[1], tonumber(ARGV[2])))
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

const Script &key_expired() {
    static const Script script = load(kKeyExpiredBody);
    return script;
}

const Script &sweep() {
    static const Script script = load(kSweepBody);
    return script;
}


std::string org_prefix(const std::string &org) { return "sc:{" + org + "}:"; }

std::string to_arg(std::int64_t v) { return std::to_string(v); }

// a - b for the script's strings, saturating rather than wrapping, and
// never INT64_MIN, so that every delta can be negated.
std::int64_t minus(std::int64_t a, std::int64_t b) {
    constexpr std::int64_t most = std::numeric_limits<std::int64_t>::max();
    std::int64_t out;
    if (__builtin_sub_overflow(a, b, &out)) return b > 0 ? -most : most;
    return std::max(out, -most);
}

const char *kind_arg(CounterKind kind) {
    switch (kind) {
    case CounterKind::spend: return "s";
    case CounterKind::balance: return "b";
    case CounterKind::rpm:
    case CounterKind::tpm: return "r";
    default: return "c";
    }
}

// A request larger than a whole cap is refused by it without the cap being
// reached: no spend_cap_reached for that one.
const char *spend_kind_arg(Nanos cap, Nanos estimate) { return estimate > cap ? "S" : "s"; }

// What a counter adds for `amounts` of one request.
std::int64_t delta_of(const Counter &c, const Amounts &amounts) {
    switch (c.kind) {
    case CounterKind::spend: return amounts.cost;
    case CounterKind::requests:
    case CounterKind::rpm: return amounts.requests;
    case CounterKind::tokens:
    case CounterKind::tpm: return amounts.tokens;
    case CounterKind::balance: return -amounts.cost;
    case CounterKind::held: return amounts.cost;
    }
    return 0;
}

// The most a counter may hold before a request adding `delta` (a negative
// cap, never produced by the policy, blocks rather than uncaps).
std::string max_before(std::int64_t cap, std::int64_t delta) {
    return to_arg(minus(std::max<std::int64_t>(cap, 0), delta));
}

// "0.5=T=T-delta;..." for a rise of `delta` on a counter capped at `cap`;
// empty when nothing can be crossed (no fractions, or no rise).
std::string warn_spec(const std::vector<WarnFraction> &warn_at, Nanos cap, std::int64_t delta) {
    std::string spec;
    if (delta <= 0) return spec;
    for (const WarnFraction &f : warn_at) {
        const Nanos threshold = warn_threshold(cap, f);
        if (!spec.empty()) spec += ';';
        spec += f.label + "=" + to_arg(threshold) + "=" + to_arg(minus(threshold, delta));
    }
    return spec;
}

Amounts non_negative(const Amounts &a) {
    return {std::max<Nanos>(a.cost, 0), std::max<std::int64_t>(a.tokens, 0),
            std::clamp<std::int64_t>(a.requests, 0, 1)};
}

// Whether a reservation holds counter i: a check reads it (a cap, a plan's
// ceiling, the balance) or it is the balance's hold. The others are left to
// the settlement, which gives them the real figure once.
bool reserved_here(const Ledger &ledger, std::size_t i) {
    const Counter &c = ledger.counters[i];
    return c.cap || c.kind == CounterKind::balance || c.kind == CounterKind::held || ledger.ceiling_counter == i;
}

// What a reservation adds to counter i: the estimate, or nothing.
std::int64_t reserved_delta(const Ledger &ledger, std::size_t i, const Amounts &estimate) {
    return reserved_here(ledger, i) ? delta_of(ledger.counters[i], estimate) : 0;
}

// The counters a reserve sends, in check order, so that the script neither
// reads nor writes the others and gets no arguments for them.
std::vector<std::size_t> reserved_counters(const Ledger &ledger) {
    std::vector<std::size_t> out;
    out.reserve(ledger.counters.size());
    for (std::size_t i = 0; i < ledger.counters.size(); ++i)
        if (reserved_here(ledger, i)) out.push_back(i);
    return out;
}

// The lines "DELTA KEY\n" (KEY without the org's prefix) that give a
// reservation back: the negated delta of every counter it changed.
std::string release_record(const Ledger &ledger, const Amounts &estimate, std::size_t prefix_size) {
    std::string record;
    record.reserve(ledger.counters.size() * 64);
    for (std::size_t i = 0; i < ledger.counters.size(); ++i) {
        const Counter &c = ledger.counters[i];
        const std::int64_t delta = reserved_delta(ledger, i, estimate);
        if (delta == 0) continue;
        record += to_arg(minus(0, delta));
        record += ' ';
        record.append(c.key, prefix_size, std::string::npos);
        record += '\n';
    }
    return record;
}

}  // namespace

const std::string &reserve_script() { return reserve().text; }
const std::string &reserve_script_sha1() { return reserve().sha1; }
const std::string &settle_script() { return settle().text; }
const std::string &settle_script_sha1() { return settle().sha1; }
const std::string &key_expired_script() { return key_expired().text; }
const std::string &sweep_script() { return sweep().text; }

std::vector<std::string> sweep_command(const std::string &org, std::int64_t most) {
    try {
        const std::string &sha1 = sweep().sha1;
        if (sha1.empty()) return {};
        const std::string prefix = org_prefix(org);
        return {"EVALSHA", sha1, "1", prefix + "reservations", prefix, to_arg(std::max<std::int64_t>(most, 1))};
    } catch (...) {
        return {};
    }
}

std::vector<std::string> key_expired_command(const std::string &org, const Key &key, std::int64_t now) {
    try {
        const std::string &sha1 = key_expired().sha1;
        if (sha1.empty() || !key.expires_at) return {};
        const std::int64_t kMarkerSeconds = 400 * 86400;  // a key still knocking a year on is news again
        return {"EVALSHA", sha1, "2",
                org_prefix(org) + "expired:" + key.id + ":" + to_arg(*key.expires_at),
                org_prefix(org) + "events",
                key.id, format_rfc3339(*key.expires_at), to_arg(now + kMarkerSeconds)};
    } catch (...) {
        return {};
    }
}

Nanos warn_threshold(Nanos cap, const WarnFraction &fraction) {
    const __int128 product = static_cast<__int128>(std::max<Nanos>(cap, 0)) * fraction.billionths;
    return static_cast<Nanos>((product + kNanosPerUsd - 1) / kNanosPerUsd);
}

Ledger ledger_for(const Policy &policy, const Key &key, const std::string &customer,
                  const Periods &periods) {
    const Project &project = policy.project_of(key);
    const Org &org = policy.org_of(key);
    const std::string prefix = org_prefix(org.id);
    Ledger ledger;
    ledger.org = org.id;
    ledger.periods = periods;
    ledger.warn_at = policy.warn_at;

    struct ScopeOf {
        Scope scope;
        std::string id;
        Limits limits;
    };
    std::vector<ScopeOf> scopes = {
        {Scope::key, key.id, key.limits},
        {Scope::project, project.id, project.limits},
        {Scope::org, org.id, policy.org_limits(org)},
    };
    if (!customer.empty()) scopes.push_back({Scope::customer, customer, policy.customers.limits_for(customer)});

    std::vector<Counter> &counters = ledger.counters;
    counters.reserve(scopes.size() * 9 + 3);
    auto add = [&](CounterKind kind, const ScopeOf &s, Window window, const std::string &key_name,
                   std::optional<std::int64_t> cap, std::int64_t expire_at) {
        counters.push_back(Counter{kind, s.scope, window, key_name, cap, expire_at});
    };
    auto scope_key = [&](const char *kind, const ScopeOf &s) {
        return prefix + kind + ":" + scope_name(s.scope) + ":" + s.id + ":";
    };
    for (const ScopeOf &s : scopes) {
        for (Window w : {Window::daily, Window::monthly, Window::lifetime})
            add(CounterKind::spend, s, w, scope_key("spend", s) + window_suffix(periods, w),
                s.limits.cost_cap(w), window_expire_at(periods, w));
        const std::vector<CeilingRow> *ceiling = s.scope == Scope::org ? policy.dynamic_ceiling(org) : nullptr;
        if (ceiling != nullptr) {
            ledger.ceiling_counter = counters.size() - 2;  // the monthly one
            const std::int64_t age = org.created_at ? periods.now - *org.created_at : 0;
            ledger.ceilings = ceilings_by_age(*ceiling, age);
        }
        for (Window w : {Window::daily, Window::monthly})
            add(CounterKind::requests, s, w, scope_key("reqs", s) + window_suffix(periods, w),
                s.limits.request_cap(w), window_expire_at(periods, w));
        for (Window w : {Window::daily, Window::monthly})
            add(CounterKind::tokens, s, w, scope_key("tokens", s) + window_suffix(periods, w),
                s.limits.token_cap(w), window_expire_at(periods, w));
    }
    if (org.prepaid) {
        ledger.balance = counters.size();
        counters.push_back(Counter{CounterKind::balance, Scope::org, Window::lifetime, prefix + "balance",
                                   std::nullopt, 0});
    }
    for (const ScopeOf &s : scopes) {
        if (s.limits.rpm)
            add(CounterKind::rpm, s, Window::daily, scope_key("rate", s) + "rpm:" + periods.minute,
                s.limits.rpm, periods.minute_expire_at);
        if (s.limits.tpm)
            add(CounterKind::tpm, s, Window::daily, scope_key("rate", s) + "tpm:" + periods.minute,
                s.limits.tpm, periods.minute_expire_at);
    }
    if (org.prepaid) {
        ledger.held = counters.size();
        counters.push_back(Counter{CounterKind::held, Scope::org, Window::lifetime, prefix + "balance:held",
                                   std::nullopt, 0});
        ledger.low_balance = org.low_balance_usd;
    }
    return ledger;
}

std::vector<std::string> reserve_command(const Ledger &ledger, const Amounts &estimate_in,
                                         const std::string &request_id, bool dry_run,
                                         std::int64_t ttl_ms) {
    try {
        const std::string &sha1 = reserve_script_sha1();
        if (ledger.counters.empty() || sha1.empty() || request_id.empty()) return {};
        Amounts estimate = non_negative(estimate_in);
        estimate.requests = 1;
        const std::string prefix = org_prefix(ledger.org);
        const std::vector<std::size_t> sent = reserved_counters(ledger);
        const std::size_t n = sent.size();
        const bool with_ceilings = ledger.ceiling_counter.has_value();

        std::vector<std::string> argv;
        argv.reserve(3 + n + 5 + 6 + 6 * n + 3 + 5 * ledger.ceilings.size());
        argv.emplace_back("EVALSHA");
        argv.push_back(sha1);
        argv.push_back(to_arg(static_cast<std::int64_t>(n + (with_ceilings ? 5 : 4))));
        for (std::size_t i : sent) argv.push_back(ledger.counters[i].key);
        argv.push_back(prefix + "resv:" + request_id);
        argv.push_back(prefix + "settled:" + request_id);
        argv.push_back(prefix + "reservations");
        argv.push_back(prefix + "events");
        if (with_ceilings) argv.push_back(prefix + "cleared");

        argv.push_back(to_arg(static_cast<std::int64_t>(n)));
        argv.push_back(prefix);
        argv.push_back(release_record(ledger, estimate, prefix.size()));
        argv.emplace_back(dry_run ? "1" : "0");
        argv.push_back(to_arg(std::clamp<std::int64_t>(ttl_ms, 1, kMaxReservationTtlMs)));
        argv.push_back(request_id);
        for (std::size_t i : sent) {
            const Counter &c = ledger.counters[i];
            const std::int64_t delta = reserved_delta(ledger, i, estimate);
            argv.emplace_back(c.kind == CounterKind::spend && c.cap ? spend_kind_arg(*c.cap, estimate.cost)
                                                                    : kind_arg(c.kind));
            argv.push_back(to_arg(delta));
            if (c.kind == CounterKind::balance)
                argv.push_back(to_arg(estimate.cost));
            else
                argv.push_back(c.cap ? max_before(*c.cap, delta) : "");
            argv.push_back(to_arg(std::max<std::int64_t>(c.expire_at, 0)));
            const bool warns = c.kind == CounterKind::spend && c.cap;
            argv.push_back(warns ? to_arg(*c.cap) : "");
            argv.push_back(warns ? warn_spec(ledger.warn_at, *c.cap, delta) : "");
        }
        argv.push_back(to_arg(static_cast<std::int64_t>(with_ceilings ? ledger.ceilings.size() : 0)));
        if (with_ceilings) {
            const auto at = std::find(sent.begin(), sent.end(), *ledger.ceiling_counter);
            argv.push_back(to_arg(static_cast<std::int64_t>(at - sent.begin() + 1)));
            argv.push_back(max_before(0, estimate.cost));  // no row applies: a cap of 0
            for (const CeilingRow &row : ledger.ceilings) {
                argv.push_back(to_arg(row.cleared_usd));
                argv.push_back(max_before(row.monthly_usd, estimate.cost));
                argv.push_back(to_arg(row.monthly_usd));
                argv.push_back(warn_spec(ledger.warn_at, row.monthly_usd, estimate.cost));
                argv.emplace_back(spend_kind_arg(row.monthly_usd, estimate.cost));
            }
        }
        return argv;
    } catch (...) {
        return {};
    }
}

ReserveOutcome decode_reserve_reply(const Ledger &ledger, const std::vector<long long> &reply) {
    ReserveOutcome outcome;
    try {
        // The reply names counters by their place among those the reserve sent.
        const std::vector<std::size_t> sent = reserved_counters(ledger);
        const std::size_t n = sent.size();
        if (reply.size() == 1 && reply[0] == 2) {
            outcome.error = "reserve script found the request already settled";
            return outcome;
        }
        if (reply.size() < 4 || (reply[0] != 0 && reply[0] != 1)) {
            outcome.error = "reserve script gave a malformed reply";
            return outcome;
        }
        if (reply[1] < 0 || static_cast<unsigned long long>(reply[1]) > n) {
            outcome.error = "reserve script named counter " + std::to_string(reply[1]) + " of " +
                            std::to_string(n);
            return outcome;
        }
        if (reply[3] < 0 || static_cast<unsigned long long>(reply[3]) > ledger.ceilings.size()) {
            outcome.error = "reserve script chose ceiling row " + std::to_string(reply[3]);
            return outcome;
        }
        if (reply[1] > 0) outcome.refused_by = sent[static_cast<std::size_t>(reply[1] - 1)];
        if (ledger.ceiling_counter)
            outcome.ceiling_cap = reply[3] > 0 ? ledger.ceilings[reply[3] - 1].monthly_usd : 0;
        if (reply[0] == 0) {
            if (!outcome.refused_by) {
                outcome.error = "reserve script refused without naming a counter";
                return outcome;
            }
            outcome.kind = ReserveOutcome::Kind::blocked;
            return outcome;
        }
        if (reply.size() != n + 4) {
            outcome.error = "reserve script replied " + std::to_string(reply.size() - 4) +
                            " counters, expected " + std::to_string(n);
            return outcome;
        }
        outcome.kind = ReserveOutcome::Kind::allowed;
        __int128 least = 0;
        for (std::size_t k = 0; k < n; ++k) {
            const std::size_t i = sent[k];
            const Counter &c = ledger.counters[i];
            if (c.kind != CounterKind::spend) continue;
            std::optional<Nanos> cap = c.cap;
            if (ledger.ceiling_counter == i) cap = outcome.ceiling_cap;
            if (!cap) continue;
            const __int128 remaining = static_cast<__int128>(*cap) - reply[k + 4];
            if (!outcome.tightest_index || remaining < least) {  // ties: first in check order
                outcome.tightest_index = i;
                outcome.tightest_cap = *cap;
                least = remaining;
            }
        }
        if (least < 0) least = 0;
        if (least > std::numeric_limits<Nanos>::max()) least = std::numeric_limits<Nanos>::max();
        outcome.tightest_remaining = static_cast<Nanos>(least);
        return outcome;
    } catch (...) {
        outcome = ReserveOutcome{};
        outcome.error = "reserve reply could not be decoded";
        return outcome;
    }
}

std::optional<SpendHeaders> spend_headers(const Ledger &ledger, const ReserveOutcome &outcome) {
    try {
        if (!outcome.tightest_index || *outcome.tightest_index >= ledger.counters.size()) return std::nullopt;
        const Counter &c = ledger.counters[*outcome.tightest_index];
        const std::int64_t reset = window_reset(ledger.periods, c.window);
        return SpendHeaders{format_usd(outcome.tightest_cap), format_usd(outcome.tightest_remaining),
                            reset != 0 ? format_rfc3339(reset) : std::string(),
                            std::string(scope_name(c.scope)) + ":" + window_name(c.window)};
    } catch (...) {
        return std::nullopt;
    }
}

CapRef cap_ref(const Ledger &ledger, std::size_t i) {
    const Counter &c = ledger.counters.at(i);
    CapRef cap{c.scope, c.window, window_reset(ledger.periods, c.window)};
    switch (c.kind) {
    case CounterKind::spend: cap.limit = LimitKind::spend; break;
    case CounterKind::requests: cap.limit = LimitKind::requests; break;
    case CounterKind::tokens: cap.limit = LimitKind::tokens; break;
    case CounterKind::rpm:
    case CounterKind::tpm:
        cap.limit = c.kind == CounterKind::rpm ? LimitKind::rpm : LimitKind::tpm;
        cap.reset_at = ledger.periods.minute_reset;
        cap.retry_after = ledger.periods.minute_retry_after();
        break;
    case CounterKind::balance:
    case CounterKind::held:
        cap.limit = LimitKind::balance;
        cap.reset_at = 0;
        break;
    }
    return cap;
}

std::vector<std::string> settle_command(const Ledger &ledger, const Amounts &estimate,
                                        const Amounts &real, const std::string &request_id,
                                        const std::optional<Nanos> &ceiling_cap) {
    try {
        std::vector<SettleItem> one;
        one.push_back(SettleItem{ledger, estimate, real, request_id, ceiling_cap});
        return settle_batch_command(one);
    } catch (...) {
        return {};
    }
}

namespace {

std::int64_t plus(std::int64_t a, std::int64_t b) {
    constexpr std::int64_t most = std::numeric_limits<std::int64_t>::max();
    std::int64_t out;
    if (__builtin_add_overflow(a, b, &out)) return b > 0 ? most : -most;
    return std::max(out, -most);
}

// "FRACTION=THRESHOLD;..." of a cost cap; empty without fractions.
std::string warn_thresholds(const std::vector<WarnFraction> &warn_at, Nanos cap) {
    std::string spec;
    for (const WarnFraction &f : warn_at) {
        if (!spec.empty()) spec += ';';
        spec += f.label + "=" + to_arg(warn_threshold(cap, f));
    }
    return spec;
}

}  // namespace

std::vector<std::string> settle_batch_command(const std::vector<SettleItem> &items) {
    try {
        const std::string &sha1 = settle_script_sha1();
        if (items.empty() || sha1.empty()) return {};
        const std::string &org = items.front().ledger.org;
        const std::string prefix = org_prefix(org);
        // A request settles once: an id already in the batch is what its
        // second settlement would be, nothing (its reservation and marker are
        // one; counted twice, the reservation would be given back twice).
        std::vector<const SettleItem *> batch;
        batch.reserve(items.size());
        std::unordered_set<std::string_view> ids;
        for (const SettleItem &item : items)
            if (ids.insert(item.request_id).second) batch.push_back(&item);

        struct Total {
            const Counter *counter;
            std::int64_t delta = 0;
            std::optional<Nanos> cap;  // for warnings
            const std::vector<WarnFraction> *warn_at;
        };
        std::vector<Total> totals;
        std::unordered_map<std::string_view, std::size_t> index;
        struct Correction {
            std::size_t counter;
            std::int64_t delta;
        };
        std::vector<std::vector<Correction>> corrections(batch.size());
        std::optional<std::size_t> balance, held;
        std::optional<Nanos> low_balance;

        for (std::size_t j = 0; j < batch.size(); ++j) {
            const SettleItem &item = *batch[j];
            const Ledger &ledger = item.ledger;
            if (ledger.org != org || ledger.counters.empty() || item.request_id.empty()) return {};
            Amounts estimate = non_negative(item.estimate);
            estimate.requests = 1;
            const Amounts real = non_negative(item.real);
            for (std::size_t i = 0; i < ledger.counters.size(); ++i) {
                const Counter &c = ledger.counters[i];
                const std::int64_t reserved = reserved_delta(ledger, i, estimate);
                // Replaces the reservation; without one (never made, or given
                // back at its deadline) adds the real amounts.
                std::int64_t if_reserved = minus(delta_of(c, real), reserved);
                std::int64_t if_unreserved = delta_of(c, real);
                if (c.kind == CounterKind::held) {
                    if_reserved = -reserved;  // the hold ends
                    if_unreserved = 0;        // nothing was held
                }
                if (c.kind == CounterKind::rpm || c.kind == CounterKind::tpm) if_unreserved = 0;  // minute gone
                auto [at, added] = index.emplace(c.key, totals.size());
                if (added) {
                    std::optional<Nanos> cap = c.kind == CounterKind::spend ? c.cap : std::nullopt;
                    if (ledger.ceiling_counter == i) cap = item.ceiling_cap;
                    totals.push_back(Total{&c, 0, cap, &ledger.warn_at});
                }
                Total &total = totals[at->second];
                // The plan's ceiling: the first request that knows the cap
                // it was held to (a fail-open one never learnt it).
                if (!total.cap && ledger.ceiling_counter == i && item.ceiling_cap) total.cap = item.ceiling_cap;
                total.delta = plus(total.delta, if_reserved);
                if (if_unreserved != if_reserved)
                    corrections[j].push_back(Correction{at->second, minus(if_unreserved, if_reserved)});
                if (ledger.balance == i) balance = at->second;
                if (ledger.held == i) held = at->second;
            }
            if (ledger.low_balance && real.cost > 0) low_balance = ledger.low_balance;
        }

        const std::size_t c = totals.size(), m = batch.size();
        std::vector<std::string> argv;
        argv.reserve(3 + c + 2 + 2 * m + 3 + 5 * c + 3 + 16 * m);
        argv.emplace_back("EVALSHA");
        argv.push_back(sha1);
        argv.push_back(to_arg(static_cast<std::int64_t>(c + 2 + 2 * m)));
        for (const Total &t : totals) argv.push_back(t.counter->key);
        argv.push_back(prefix + "events");
        argv.push_back(prefix + "reservations");
        for (const SettleItem *item : batch) {
            argv.push_back(prefix + "resv:" + item->request_id);
            argv.push_back(prefix + "settled:" + item->request_id);
        }

        argv.push_back(to_arg(static_cast<std::int64_t>(c)));
        argv.push_back(to_arg(static_cast<std::int64_t>(m)));
        argv.push_back(prefix);
        for (const Total &t : totals) {
            const CounterKind kind = t.counter->kind;
            argv.emplace_back(kind == CounterKind::rpm || kind == CounterKind::tpm ? "r" : "c");
            argv.push_back(to_arg(t.delta));
            argv.push_back(to_arg(std::max<std::int64_t>(t.counter->expire_at, 0)));
            argv.push_back(t.cap ? to_arg(*t.cap) : "");
            argv.push_back(t.cap ? warn_thresholds(*t.warn_at, *t.cap) : "");
        }
        const bool low = low_balance && balance && held;
        argv.push_back(low ? to_arg(*low_balance) : "");
        argv.push_back(low ? to_arg(static_cast<std::int64_t>(*balance + 1)) : "0");
        argv.push_back(low ? to_arg(static_cast<std::int64_t>(*held + 1)) : "0");
        for (std::size_t j = 0; j < m; ++j) {
            argv.push_back(batch[j]->request_id);
            argv.push_back(to_arg(static_cast<std::int64_t>(corrections[j].size())));
            for (const Correction &k : corrections[j]) {
                argv.push_back(to_arg(static_cast<std::int64_t>(k.counter + 1)));
                argv.push_back(to_arg(k.delta));
            }
        }
        return argv;
    } catch (...) {
        return {};
    }
}

}  // namespace spendcap
