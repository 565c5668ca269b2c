// Redis keys (SPEC section 6) and the Lua scripts that reserve and settle a
// request's cost atomically, in one round trip each.
#include "reservation.h"

#include <limits>

#include "request.h"

namespace spendcap {

namespace {


// Shared by both scripts. Lua 5.1 numbers are doubles, exact only below 2^53
// (about 9 million USD in nano-USD), so amounts stay decimal strings: Redis
// gets them as given, and comparisons split them as hi * 1e9 + lo, two parts
// that are each exact as doubles.
constexpr const char *kLuaHelpers = R"lua(
local BASE = 1000000000
local MAX_HI, MAX_LO = 9223372036, 854775807 -- INT64_MAX, the most a Redis counter holds
local function is_int(s)
  return type(s) == 'string' and #s <= 20 and string.find(s, '^%-?%d+$') ~= nil
end
local function is_amount(s)
  return is_int(s) and string.sub(s, 1, 1) ~= '-'
end
local function negate(hi, lo)
  if lo > 0 then return -hi - 1, BASE - lo end
  return -hi, 0
end
local function split(s)
  local negative = string.sub(s, 1, 1) == '-'
  if negative then s = string.sub(s, 2) end
  local lo = tonumber(string.sub(s, -9))
  local hi = 0
  if #s > 9 then hi = tonumber(string.sub(s, 1, -10)) end
  if negative then return negate(hi, lo) end
  return hi, lo
end
local function add(a_hi, a_lo, b_hi, b_lo)
  local hi, lo = a_hi + b_hi, a_lo + b_lo
  if lo >= BASE then return hi + 1, lo - BASE end
  return hi, lo
end
local function greater(a_hi, a_lo, b_hi, b_lo)
  return a_hi > b_hi or (a_hi == b_hi and a_lo > b_lo)
end
local function not_integer(key)
  return redis.error_reply('spend-cap: ' .. key .. ' does not hold an integer')
end
)lua";

// KEYS: N counters, then the reservation record.
// ARGV: N, estimate, then per counter: kind ("s" spend / "r" requests), cap (-1 none), expire_at (0 none).
// Reply: {0, i, spent} blocked by counter i (1-based), nothing written;
//        {1, after_1, ..., after_N} reserved.
constexpr const char *kReserveBody = R"lua(
local n = tonumber(ARGV[1])
local estimate = ARGV[2]
if not is_amount(estimate) then return redis.error_reply('spend-cap: bad estimate') end
local e_hi, e_lo = split(estimate)
-- Check every counter before writing anything: a blocked request adds nothing,
-- and no write below can fail half way.
for i = 1, n do
  local at = 3 + (i - 1) * 3
  local current = redis.call('GET', KEYS[i]) or '0'
  if not is_int(current) then return not_integer(KEYS[i]) end
  local c_hi, c_lo = split(current)
  local d_hi, d_lo = 0, 1
  if ARGV[at] == 's' then d_hi, d_lo = e_hi, e_lo end
  local s_hi, s_lo = add(c_hi, c_lo, d_hi, d_lo)
  local cap = ARGV[at + 1]
  if not is_int(cap) then return redis.error_reply('spend-cap: bad cap') end
  if string.sub(cap, 1, 1) ~= '-' then
    local cap_hi, cap_lo = split(cap)
    if greater(s_hi, s_lo, cap_hi, cap_lo) then return {0, i, c_hi * BASE + c_lo} end
  end
  if greater(s_hi, s_lo, MAX_HI, MAX_LO) then
    return redis.error_reply('spend-cap: ' .. KEYS[i] .. ' would overflow')
  end
end
local reply = {1}
for i = 1, n do
  local at = 3 + (i - 1) * 3
  if ARGV[at] == 's' then
    reply[i + 1] = redis.call('INCRBY', KEYS[i], estimate)
  else
    reply[i + 1] = redis.call('INCR', KEYS[i])
  end
  if ARGV[at + 2] ~= '0' then redis.call('EXPIREAT', KEYS[i], ARGV[at + 2]) end
end
redis.call('SET', KEYS[n + 1], estimate, 'EX', 86400)
return reply
)lua";

// KEYS: N counters, the reservation record, the settlement marker.
// ARGV: N, cost, count_unreserved ("1"/"0"), then per counter: kind, expire_at.
// Reply: 1 settled now, 0 already settled.
constexpr const char *kSettleBody = R"lua(
local n = tonumber(ARGV[1])
if redis.call('EXISTS', KEYS[n + 2]) == 1 then return 0 end
local cost = ARGV[2]
if not is_amount(cost) then return redis.error_reply('spend-cap: bad cost') end
local reserved = redis.call('GET', KEYS[n + 1])
local r_hi, r_lo = 0, 0
if reserved then
  if not is_int(reserved) then return not_integer(KEYS[n + 1]) end
  r_hi, r_lo = split(reserved)
end
local k_hi, k_lo = split(cost)
local m_hi, m_lo = negate(r_hi, r_lo)
local net_hi, net_lo = add(k_hi, k_lo, m_hi, m_lo)
-- Check before writing, so that no error leaves a half-applied settlement.
for i = 1, n do
  if ARGV[2 + 2 * i] == 's' then
    local current = redis.call('GET', KEYS[i]) or '0'
    if not is_int(current) then return not_integer(KEYS[i]) end
    local c_hi, c_lo = split(current)
    local s_hi, s_lo = add(c_hi, c_lo, net_hi, net_lo)
    if greater(s_hi, s_lo, MAX_HI, MAX_LO) then
      return redis.error_reply('spend-cap: ' .. KEYS[i] .. ' would overflow')
    end
  end
end
local count_requests = (not reserved) and ARGV[3] == '1'
for i = 1, n do
  local kind, expire_at = ARGV[2 + 2 * i], ARGV[3 + 2 * i]
  if kind == 's' then
    if reserved then redis.call('DECRBY', KEYS[i], reserved) end
    redis.call('INCRBY', KEYS[i], cost)
  elseif count_requests then
    redis.call('INCR', KEYS[i])
  end
  if expire_at ~= '0' then redis.call('EXPIREAT', KEYS[i], expire_at) end
end
redis.call('DEL', KEYS[n + 1])
redis.call('SET', KEYS[n + 2], '1', 'EX', 86400)
return 1
)lua";

const std::string &empty_string() {
    static const std::string kEmpty;
    return kEmpty;
}

std::string org_prefix(const std::string &org) { return "sc:{" + org + "}:"; }

const char *kind_arg(CounterKind kind) { return kind == CounterKind::spend ? "s" : "r"; }

std::string amount_arg(Nanos amount) { return std::to_string(amount > 0 ? amount : 0); }

}  // namespace

const std::string &reserve_script() {
    try {
        static const std::string script = std::string(kLuaHelpers) + kReserveBody;
        return script;
    } catch (...) {
        return empty_string();
    }
}

const std::string &reserve_script_sha1() {
    try {
        static const std::string sha1 = sha1_hex(reserve_script());
        return sha1;
    } catch (...) {
        return empty_string();
    }
}

const std::string &settle_script() {
    try {
        static const std::string script = std::string(kLuaHelpers) + kSettleBody;
        return script;
    } catch (...) {
        return empty_string();
    }
}

const std::string &settle_script_sha1() {
    try {
        static const std::string sha1 = sha1_hex(settle_script());
        return sha1;
    } catch (...) {
        return empty_string();
    }
}

std::vector<Counter> counters_for(const Policy &policy, const Key &key, const Periods &periods) {
    try {
        const Project &project = policy.project_of(key);
        const Org &org = policy.org_of(key);
        const std::string prefix = org_prefix(org.id);
        struct ScopeOf {
            Scope scope;
            const std::string &id;
            const Limits &limits;
        };
        const ScopeOf scopes[] = {
            {Scope::key, key.id, key.limits},
            {Scope::project, project.id, project.limits},
            {Scope::org, org.id, org.limits},
        };
        std::vector<Counter> counters;
        counters.reserve(3 * 2 * 3);
        for (const ScopeOf &s : scopes) {
            for (CounterKind kind : {CounterKind::spend, CounterKind::requests}) {
                for (Window window : {Window::daily, Window::monthly, Window::lifetime}) {
                    Counter c{kind, s.scope, window, {}, std::nullopt, 0};
                    c.key = prefix + (kind == CounterKind::spend ? "spend:" : "reqs:") +
                            scope_name(s.scope) + ":" + s.id + ":" + window_suffix(periods, window);
                    // Requests are counted but not capped in this release.
                    if (kind == CounterKind::spend) c.cap = s.limits.cost_cap(window);
                    c.expire_at = window_expire_at(periods, window);
                    counters.push_back(std::move(c));
                }
            }
        }
        return counters;
    } catch (...) {
        return {};  // never empty otherwise: callers treat empty as an error
    }
}

std::vector<std::string> reserve_command(const std::string &org,
                                         const std::vector<Counter> &counters,
                                         Nanos estimate,
                                         const std::string &request_id) {
    try {
        const std::string &sha1 = reserve_script_sha1();
        if (counters.empty() || sha1.empty()) return {};
        std::vector<std::string> argv;
        argv.reserve(3 + counters.size() * 4 + 3);
        argv.emplace_back("EVALSHA");
        argv.push_back(sha1);
        argv.push_back(std::to_string(counters.size() + 1));
        for (const Counter &c : counters) argv.push_back(c.key);
        argv.push_back(org_prefix(org) + "resv:" + request_id);
        argv.push_back(std::to_string(counters.size()));
        argv.push_back(amount_arg(estimate));
        for (const Counter &c : counters) {
            argv.emplace_back(kind_arg(c.kind));
            // A negative cap (never produced by the policy) blocks rather than uncaps.
            argv.push_back(c.cap ? amount_arg(*c.cap) : "-1");
            argv.push_back(std::to_string(c.expire_at > 0 ? c.expire_at : 0));
        }
        return argv;
    } catch (...) {
        return {};
    }
}

ReserveOutcome decode_reserve_reply(const std::vector<Counter> &counters,
                                    const std::vector<long long> &reply) {
    ReserveOutcome outcome;
    try {
        if (reply.empty()) {
            outcome.error = "reserve script replied with an empty array";
            return outcome;
        }
        if (reply[0] == 0) {
            if (reply.size() != 3 || reply[1] < 1 ||
                static_cast<unsigned long long>(reply[1]) > counters.size()) {
                outcome.error = "reserve script replied blocked without a valid counter";
                return outcome;
            }
            outcome.kind = ReserveOutcome::Kind::blocked;
            outcome.blocked_index = static_cast<std::size_t>(reply[1] - 1);
            return outcome;
        }
        if (reply[0] != 1) {
            outcome.error = "reserve script replied " + std::to_string(reply[0]);
            return outcome;
        }
        if (reply.size() != counters.size() + 1) {
            outcome.error = "reserve script replied " + std::to_string(reply.size() - 1) +
                            " counters, expected " + std::to_string(counters.size());
            return outcome;
        }
        outcome.kind = ReserveOutcome::Kind::allowed;
        __int128 least = 0;
        for (std::size_t i = 0; i < counters.size(); ++i) {
            const Counter &c = counters[i];
            if (c.kind != CounterKind::spend || !c.cap) continue;
            const __int128 remaining = static_cast<__int128>(*c.cap) - reply[i + 1];
            if (!outcome.tightest_index || remaining < least) {  // ties: first in check order
                outcome.tightest_index = i;
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

std::vector<std::string> settle_command(const std::string &org,
                                        const std::vector<Counter> &counters,
                                        Nanos cost,
                                        const std::string &request_id,
                                        bool count_unreserved) {
    try {
        const std::string &sha1 = settle_script_sha1();
        if (counters.empty() || sha1.empty()) return {};
        const std::string prefix = org_prefix(org);
        std::vector<std::string> argv;
        argv.reserve(3 + counters.size() * 3 + 5);
        argv.emplace_back("EVALSHA");
        argv.push_back(sha1);
        argv.push_back(std::to_string(counters.size() + 2));
        for (const Counter &c : counters) argv.push_back(c.key);
        argv.push_back(prefix + "resv:" + request_id);
        argv.push_back(prefix + "settled:" + request_id);
        argv.push_back(std::to_string(counters.size()));
        argv.push_back(amount_arg(cost));
        argv.emplace_back(count_unreserved ? "1" : "0");
        for (const Counter &c : counters) {
            argv.emplace_back(kind_arg(c.kind));
            argv.push_back(std::to_string(c.expire_at > 0 ? c.expire_at : 0));
        }
        return argv;
    } catch (...) {
        return {};
    }
}

}  // namespace spendcap
