// Redis keys (SPEC section 6) and the Lua scripts that reserve and settle a
// request's cost atomically, in one round trip each.
#include "reservation.h"

#include <algorithm>
#include <limits>

#include "request.h"

namespace spendcap {

namespace {


// Shared by both scripts. Amounts never pass through Lua numbers on their way
// to Redis (Lua 5.1 would print a large one as 1e+14, which INCRBY rejects):
// the worker computes every threshold and delta in int64 and sends strings,
// and the scripts compare integer strings exactly, whatever their size.
constexpr const char *kLuaHelpers = R"lua(
-- a <= b for integer strings as Redis writes them (no leading zeros, '-' sign)
local function le(a, b)
  local a_neg, b_neg = string.byte(a, 1) == 45, string.byte(b, 1) == 45
  if a_neg ~= b_neg then return a_neg end
  if #a ~= #b then return (#a < #b) ~= a_neg end
  if a_neg then return a >= b end
  return a <= b
end
)lua";

// KEYS: N counters, then the reservation record.
// ARGV: N, estimate, then per counter: kind ("s" spend / "r" requests),
//       threshold (the most the counter may hold before this request; "" = no cap),
//       expire_at (0 = never).
// Reply: {0, i, spent} blocked by counter i (1-based), nothing written;
//        {1, after_1, ..., after_N} reserved.
// Only capped counters are read, and an expiry is set only on a new counter:
// this script runs once per request, so every call in it is paid at full rate.
constexpr const char *kReserveBody = R"lua(
local n = tonumber(ARGV[1])
local estimate = ARGV[2]
for i = 1, n do
  local threshold = ARGV[3 * i + 1]
  if threshold ~= '' then
    local current = redis.call('GET', KEYS[i]) or '0'
    if not string.find(current, '^%-?%d+$') then
      return redis.error_reply('spend-cap: ' .. KEYS[i] .. ' does not hold an integer')
    end
    if not le(current, threshold) then return {0, i, tonumber(current)} end
  end
end
local reply = {1}
local first = tonumber(estimate)
for i = 1, n do
  local v, created
  if ARGV[3 * i] == 's' then
    v = redis.call('INCRBY', KEYS[i], estimate)
    created = v == first
  else
    v = redis.call('INCR', KEYS[i])
    created = v == 1
  end
  local expire_at = ARGV[3 * i + 2]
  if created and expire_at ~= '0' then redis.call('EXPIREAT', KEYS[i], expire_at) end
  reply[i + 1] = v
end
redis.call('SET', KEYS[n + 1], estimate, 'EX', 86400)
return reply
)lua";

// KEYS: N counters, the reservation record, the settlement marker.
// ARGV: N, cost - estimate (applied when a reservation was recorded), cost
//       (when none was), count_unreserved ("1"/"0"), then per counter: kind, expire_at.
// Reply: 1 settled now, 0 already settled.
constexpr const char *kSettleBody = R"lua(
local n = tonumber(ARGV[1])
if not redis.call('SET', KEYS[n + 2], '1', 'EX', 86400, 'NX') then return 0 end
local delta, count_requests = ARGV[3], ARGV[4] == '1'
if redis.call('GET', KEYS[n + 1]) then
  redis.call('DEL', KEYS[n + 1])
  delta, count_requests = ARGV[2], false
end
local first = tonumber(delta)
for i = 1, n do
  local v, created
  if ARGV[2 * i + 3] == 's' then
    if delta ~= '0' then
      v = redis.call('INCRBY', KEYS[i], delta)
      created = v == first
    end
  elseif count_requests then
    v = redis.call('INCR', KEYS[i])
    created = v == 1
  end
  local expire_at = ARGV[2 * i + 4]
  if created and expire_at ~= '0' then redis.call('EXPIREAT', KEYS[i], expire_at) end
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

std::string org_prefix(const std::string &org) { return "sc:{" + org + "}:"; }

const char *kind_arg(CounterKind kind) { return kind == CounterKind::spend ? "s" : "r"; }

std::string amount_arg(Nanos amount) { return std::to_string(amount > 0 ? amount : 0); }

}  // namespace

const std::string &reserve_script() { return reserve().text; }
const std::string &reserve_script_sha1() { return reserve().sha1; }
const std::string &settle_script() { return settle().text; }
const std::string &settle_script_sha1() { return settle().sha1; }

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
        const Nanos reserved = estimate > 0 ? estimate : 0;
        for (const Counter &c : counters) {
            argv.emplace_back(kind_arg(c.kind));
            // The counter may hold at most cap - delta before this request.
            // A negative cap (never produced by the policy) blocks rather than uncaps.
            const Nanos delta = c.kind == CounterKind::spend ? reserved : 1;
            argv.push_back(c.cap ? std::to_string(std::max<Nanos>(*c.cap, 0) - delta) : "");
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
                                        Nanos estimate,
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
        const Nanos settled = cost > 0 ? cost : 0;
        argv.push_back(std::to_string(counters.size()));
        argv.push_back(std::to_string(settled - (estimate > 0 ? estimate : 0)));
        argv.push_back(std::to_string(settled));
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
