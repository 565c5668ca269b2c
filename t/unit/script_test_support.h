// Shared by the tests that run the real reserve, settle and sweep Lua scripts
// (lua_scripts_test.cpp, settle_batch_test.cpp) against the in-memory Redis
// of fake_redis_lua.h: the clock, a small policy, events, the fixture with
// one Redis and its Lua, and what a reservation adds to each counter.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "base/digest.h"
#include "http/envelope.h"
#include "fake_redis_lua.h"
#include "policy/policy.h"
#include "request/request.h"
#include "accounting/reservation.h"
#include "accounting/sweep.h"
#include "redis/keys.h"

namespace spendcap::test {

using spendcap_test::FakeRedis;
using spendcap_test::LuaRunner;
using spendcap_test::Reply;
using Event = std::vector<std::string>;
using Deadlines = std::vector<std::pair<std::string, double>>;

inline constexpr std::int64_t kNow = 1795000000;          // 2026-11-18T11:06:40Z
inline constexpr std::int64_t kDayExpire = 1798070400;    // 2026-11-19 + 35 days
inline constexpr std::int64_t kNextDayExpire = kDayExpire + 86400;
inline constexpr std::int64_t kMonthExpire = 1830643200;  // 2026-12-01 + 400 days
inline constexpr std::int64_t kMinuteExpire = 1795000080; // 11:07:00 + 60 s
inline constexpr Nanos kUsd = kNanosPerUsd;
inline constexpr const char *kHash = "e0f45c82d6ca5ee6f54cc819900039a64d865a336bec00b8ff16a10e40033839";

inline const std::string P = "sc:{acme}:";
inline const std::string kKeyDaily = P + "spend:key:k1:d:2026-11-18";
inline const std::string kKeyMonthly = P + "spend:key:k1:m:2026-11";
inline const std::string kKeyLife = P + "spend:key:k1:life";
inline const std::string kOrgMonthly = P + "spend:org:acme:m:2026-11";
inline const std::string kEvents = P + "events";
inline const std::string kBalance = P + "balance";
inline const std::string kHeld = P + "balance:held";
inline const std::string kCleared = P + "cleared";

// A policy: org acme, project p, key k1. `top` holds top-level sections
// (warn_at, plans, customers); `org_fields` lines under acme (4 spaces).
inline std::string policy_yaml(const std::string &key_limits, const std::string &top = "warn_at: [0.5]\n",
                               const std::string &org_fields = "", const std::string &project_limits = "") {
    std::string y = "models:\n  m: { input: 1, output: 2 }\n" + top + "orgs:\n  acme:\n" + org_fields +
                    "projects:\n  p:\n    org: acme\n";
    if (!project_limits.empty()) y += "    limits: " + project_limits + "\n";
    y += std::string("keys:\n  - id: k1\n    sha256: ") + kHash + "\n    project: p\n";
    if (!key_limits.empty()) y += "    limits: " + key_limits + "\n";
    return y;
}

inline Event warning(const std::string &scope, const std::string &id, const std::string &window,
                     const std::string &period, const std::string &fraction, const std::string &spent,
                     const std::string &cap) {
    return {"type", "spend_cap_warning_threshold_reached", "scope", scope, "id", id, "window", window,
            "period", period, "fraction", fraction, "spent", spent, "cap", cap};
}

inline Event reached(const std::string &scope, const std::string &id, const std::string &window,
                     const std::string &period, const std::string &spent, const std::string &cap) {
    return {"type", "spend_cap_reached", "scope", scope, "id", id, "window", window,
            "period", period, "spent", spent, "cap", cap};
}

inline Event low_balance(const std::string &balance, const std::string &threshold) {
    return {"type", "low_balance", "balance", balance, "threshold", threshold};
}

class ScriptTest : public ::testing::Test {
protected:
    FakeRedis redis;
    LuaRunner lua{redis};
    std::shared_ptr<const Policy> policy;
    // Requests whose settlement was sent: sending one again is a resend, and
    // says so as the glue does (its earlier send may have landed).
    std::set<std::string> sent_settlements;

    // A settle command as the glue sends it: flagged when it is a resend.
    Reply send_settlement(std::vector<std::string> argv, const std::vector<std::string> &rids) {
        bool again = false;
        for (const std::string &rid : rids) again = !sent_settlements.insert(rid).second || again;
        if (again && !argv.empty()) argv.back() = kSentBefore;
        return lua.evalsha(argv);
    }

    // The same settle command sent again after a send that may have landed.
    static std::vector<std::string> resent(std::vector<std::string> argv) {
        argv.back() = kSentBefore;
        return argv;
    }

    ScriptTest() {
        redis.now = kNow;
        load_scripts(lua);
    }

public:
    // The reserve, settle and sweep scripts, known by their SHA-1.
    static void load_scripts(LuaRunner &runner) {
        for (const Script *s : {&scripts::reserve(), &scripts::settle(), &scripts::sweep(), &scripts::due(),
                                &scripts::release(), &scripts::legacy_due(), &scripts::legacy_read(),
                                &scripts::legacy_release(), &scripts::key_expired()})
            runner.add_script(sha1_hex(s->text), s->text);
    }
    // Runs a sequence of commands (a sweep) to its end against the fake.
    static void drive_into(LuaRunner &runner, Sequence &sequence) {
        std::optional<Command> c = sequence.start();
        for (int i = 0; c && i < 1000; ++i) c = sequence.next(runner.evalsha(c->argv));
        EXPECT_FALSE(c) << "the sequence did not end";
    }

protected:
    void use(const std::string &yaml) { policy = parse_policy(yaml, "test.yaml"); }

    Ledger ledger(const std::string &customer = "", std::int64_t now = kNow) {
        return ledger_of_key(kHash, customer, now);
    }
    // The ledger of the policy's key whose sha256 is `sha256`.
    Ledger ledger_of_key(const std::string &sha256, const std::string &customer = "", std::int64_t now = kNow) {
        const Key *key = policy->find_key(sha256);
        EXPECT_NE(key, nullptr) << sha256;
        if (key == nullptr) return Ledger{};
        return ledger_for(*policy, *key, customer, periods_at(now));
    }

    Reply reserve(const Ledger &l, Nanos cost, std::int64_t tokens = 0, const std::string &rid = "req-1",
                  bool dry_run = false, std::int64_t ttl_ms = kDefaultReservationTtlMs) {
        const std::vector<std::string> argv = reserve_command(l, Amounts{cost, tokens}, rid, dry_run, ttl_ms);
        EXPECT_FALSE(argv.empty());
        return as_the_glue_does(argv, [&] {
            return reserve_batch_command({ReserveItem{std::make_shared<const Ledger>(l), Amounts{cost, tokens}, rid,
                                                      dry_run}},
                                         rid, ttl_ms, false);
        });
    }
    // A reserve as the module's glue sends it: on {4} (a refusal while
    // reservations are past their deadline) it gives those back
    // (ReservationSweep, due only) and sends the batch again without the check.
    template <typename Again>
    Reply as_the_glue_does(const std::vector<std::string> &argv, Again again) {
        Reply reply = lua.evalsha(argv);
        if (reply == Reply::array({Reply::of_integer(4)})) {
            ++given_back_first;
            ReservationSweep due(argv.size() > 3 ? org_of(argv[3]) : "", kDueBatchesFirst, true);
            drive_into(lua, due);
            reply = lua.evalsha(again());
        }
        return reply;
    }
    // How many reserves met reservations past their deadline ({4}).
    int given_back_first = 0;
    // ORG of a key sc:{ORG}:...
    static std::string org_of(const std::string &key) {
        const std::size_t open = key.find('{'), close = key.find('}');
        return open == std::string::npos || close == std::string::npos ? "" : key.substr(open + 1, close - open - 1);
    }

    // The part of a reserve reply for request `j` of its batch, as the module's
    // glue hands it to decode_reserve_reply (an array of integers): the reply
    // holds one array per request, or is {2} (not nested) when the batch's
    // tombstone was there, which every request of the batch gets.
    static std::optional<std::vector<long long>> part_of(const Reply &reply, std::size_t j = 0) {
        const std::vector<std::vector<long long>> parts = parts_of(reply);
        if (j >= parts.size()) return std::nullopt;
        return parts[j];
    }
    // Every request's part, in order, as split_reserve_reply splits the flat
    // reply (a {2} reply: one {2}).
    static std::vector<std::vector<long long>> parts_of(const Reply &reply) {
        const auto flat = reply.integers();
        if (!flat) return {};
        if (*flat == std::vector<long long>{2}) return {{2}};
        // as many parts as the reply holds: count them first
        std::size_t count = 0;
        for (std::size_t at = 0; at < flat->size(); at += 1 + static_cast<std::size_t>(std::max(0LL, (*flat)[at])))
            ++count;
        return split_reserve_reply(*flat, count).parts;
    }
    static bool is_tombstone_reply(const Reply &reply) { return reply == Reply::array({Reply::of_integer(2)}); }

    // The reply of a batch of one as the module's glue hands it on (an array
    // of integers): the request's part, or {2}.
    std::vector<long long> reserve_ints(const Ledger &l, Nanos cost, std::int64_t tokens = 0,
                                        const std::string &rid = "req-1", bool dry_run = false,
                                        std::int64_t ttl_ms = kDefaultReservationTtlMs) {
        const Reply reply = reserve(l, cost, tokens, rid, dry_run, ttl_ms);
        if (reply.type == Reply::Type::array && !is_tombstone_reply(reply))
            EXPECT_EQ(parts_of(reply).size(), 1u) << reply;  // one part: a batch of one
        const auto ints = part_of(reply);
        EXPECT_TRUE(ints.has_value()) << reply;
        return ints.value_or(std::vector<long long>{});
    }

    // A batch of requests, each (ledger, estimate, rid, dry_run), as one call.
    Reply reserve_batch(const std::vector<ReserveItem> &items, const std::string &batch_id,
                        std::int64_t ttl_ms = kDefaultReservationTtlMs) {
        const std::vector<std::string> argv = reserve_batch_command(items, batch_id, ttl_ms);
        EXPECT_FALSE(argv.empty());
        return as_the_glue_does(argv, [&] { return reserve_batch_command(items, batch_id, ttl_ms, false); });
    }

    ReserveOutcome reserved(const Ledger &l, Nanos cost, std::int64_t tokens = 0,
                            const std::string &rid = "req-1", bool dry_run = false) {
        return decode_reserve_reply(l, reserve_ints(l, cost, tokens, rid, dry_run));
    }

    // `reserve_answered`: false for a request whose reserve timed out, was
    // lost or never sent (then it leaves sc:{ORG}:settled:RID, and a
    // tombstone if its reserve never landed); an answered request whose
    // record holds no field for it counts as already settled.
    Reply settle(const Ledger &l, Amounts estimate, Amounts real, const std::string &rid = "req-1",
                 const std::optional<Nanos> &ceiling_cap = std::nullopt, bool reserve_answered = true) {
        const std::vector<std::string> argv = settle_command(l, estimate, real, rid, ceiling_cap, reserve_answered);
        EXPECT_FALSE(argv.empty());
        return send_settlement(argv, {rid});
    }

    // A whole sweep of the org (ReservationSweep); how many requests it gave back.
    Reply sweep(std::int64_t most, const std::string &org = "acme", bool due_only = false) {
        ReservationSweep sweeping(org, most, due_only);
        drive_into(lua, sweeping);
        return Reply::of_integer(sweeping.given_back());
    }

    // The org's reservation deadlines (keys::deadlines: one member per
    // batch, its batch id), by deadline.
    Deadlines deadlines() { return redis.zset(keys::deadlines("acme")); }

    // A batch's requests still held (keys::reserved: its "@BATCH" field
    // lists them; each request's field holds its release lines), and one
    // request's lines ("(nil)" when there are none).
    std::map<std::string, std::string> record(const std::string &batch) {
        const std::map<std::string, std::string> all = redis.hash(keys::reserved("acme"));
        std::map<std::string, std::string> out;
        const auto ids = all.find("@" + batch);
        if (ids == all.end()) return out;
        std::size_t at = 0;
        while (at < ids->second.size()) {
            std::size_t end = ids->second.find(' ', at);
            if (end == std::string::npos) end = ids->second.size();
            const std::string rid = ids->second.substr(at, end - at);
            const auto lines = all.find(rid);
            if (lines != all.end()) out[rid] = lines->second;
            at = end + 1;
        }
        return out;
    }
    std::string record(const std::string &batch, const std::string &rid) {
        const auto fields = record(batch);
        const auto it = fields.find(rid);
        return it == fields.end() ? std::string("(nil)") : it->second;
    }
    // A marker the scripts leave, wherever it lives: a field of a markers
    // hash (warnings, reached caps: the hash expires with its window), a
    // member of a sorted set scored by when it may go (settled, released,
    // gone), or a batch held in the org's reservations ("@BATCH").
    struct Marker {
        enum class Kind { hash_field, zset_member, batch } kind;
        std::string key, name;
    };
    // "SCOPE:ID:WINDOW[:PERIOD]:CAP:FRACTION" of a spend counter's warning
    static Marker warned_marker(const std::string &rest, const std::string &org = "acme") {
        const std::size_t fraction = rest.rfind(':'), cap = rest.rfind(':', fraction - 1);
        return counter_marker("warned:", rest.substr(0, cap), rest.substr(cap, fraction - cap), org, rest.substr(fraction + 1));
    }
    // "SCOPE:ID:WINDOW[:PERIOD]:CAP" of a spend counter's reached cap
    static Marker reached_marker(const std::string &rest, const std::string &org = "acme") {
        const std::size_t cap = rest.rfind(':');
        return counter_marker("reached:", rest.substr(0, cap), rest.substr(cap), org, "");
    }
    static Marker counter_marker(const std::string &type, const std::string &counter, const std::string &cap,
                                 const std::string &org, const std::string &fraction) {
        // the window: what follows SCOPE:ID: ("m:2026-11", "d:2026-11-18", "life")
        const std::size_t id_end = counter.find(':', counter.find(':') + 1);
        const std::string window = counter.substr(id_end + 1);
        return {Marker::Kind::hash_field, keys::markers(org, window),
                type + "spend:" + counter + cap + (fraction.empty() ? "" : ":" + fraction)};
    }
    static Marker settled_marker(const std::string &rid) {
        return {Marker::Kind::zset_member, keys::settled("acme"), rid};
    }
    static Marker released_marker(const std::string &rid) {
        return {Marker::Kind::zset_member, keys::released("acme"), rid};
    }
    static Marker gone_marker(const std::string &batch) {
        return {Marker::Kind::zset_member, keys::gone("acme"), batch};
    }
    static Marker batch_record(const std::string &batch) {
        return {Marker::Kind::batch, keys::reserved("acme"), "@" + batch};
    }
    bool has(const Marker &m) {
        if (m.kind == Marker::Kind::zset_member) {
            for (const auto &[member, score] : redis.zset(m.key))
                if (member == m.name) return true;
            return false;
        }
        return redis.hash(m.key).count(m.name) != 0;
    }
    std::string at(const Marker &m) { return has(m) ? "1" : "(nil)"; }
    // When it goes (unix seconds): its hash's expiry, or its score; -1 none.
    std::int64_t expire_at(const Marker &m) {
        if (!has(m)) return -1;
        if (m.kind == Marker::Kind::zset_member) {
            for (const auto &[member, score] : redis.zset(m.key))
                if (member == m.name) return static_cast<std::int64_t>(score) / 1000;
        }
        return redis.expire_at(m.key);
    }
    // A batch's deadline (Redis ms), -1 when it has none.
    double deadline_of(const std::string &batch) {
        for (const auto &[member, score] : deadlines())
            if (member == batch) return score;
        return -1;
    }

    // The number of requests settled in the org (sc:{acme}:settlements).
    std::string settlements() { return at(P + "settlements"); }

    // Every counter of the ledger set to a value of its own kind, with no
    // expiry, so that "as before" can be compared exactly.
    static std::string preset_value(const Counter &c) {
        switch (c.kind) {
        case CounterKind::spend: return "1000000000";
        case CounterKind::requests: return "3";
        case CounterKind::tokens: return "70";
        case CounterKind::rpm: return "2";
        case CounterKind::tpm: return "50";
        case CounterKind::balance: return "50000000000";
        case CounterKind::held: return "1000000000";
        }
        return "";
    }
    static void preset_into(FakeRedis &r, const Ledger &l) {
        for (const Counter &c : l.counters) r.set(c.key, preset_value(c));
    }
    void preset(const Ledger &l) { preset_into(redis, l); }
    // Each counter's value as `expected` says it should be.
    template <typename F>
    void expect_counters(const Ledger &l, F expected, const char *when) {
        for (const Counter &c : l.counters) EXPECT_EQ(at(c.key), expected(c)) << c.key << " " << when;
    }

    // How many times the commands logged from `from` on wrote `key` (INCRBY).
    static std::size_t incrbys_in(const FakeRedis &r, const std::string &key, std::size_t from = 0) {
        std::size_t n = 0;
        for (std::size_t i = from; i < r.log.size(); ++i)
            if (r.log[i].size() >= 2 && r.log[i][0] == "INCRBY" && r.log[i][1] == key) ++n;
        return n;
    }
    std::size_t incrbys(const std::string &key, std::size_t from = 0) { return incrbys_in(redis, key, from); }

    // The events but the forecasts, which depend on the clock's place in the
    // period (most tests are about something else: forecasts() has them).
    std::vector<Event> events() { return of_forecasts(false); }
    std::vector<Event> forecasts() { return of_forecasts(true); }
    std::vector<Event> of_forecasts(bool forecast) {
        std::vector<Event> out;
        for (Event &e : redis.events(kEvents)) {
            const bool is_forecast = e.size() > 1 && e[1] == "spend_cap_forecast_exhaustion";
            if (is_forecast == forecast) out.push_back(std::move(e));
        }
        return out;
    }
    std::string at(const std::string &key) { return redis.get(key).value_or("(nil)"); }
    std::int64_t expire_at(const std::string &key) { return redis.expire_at(key); }
    // Everything but the events stream and the keys under `marker_prefix`.
    std::map<std::string, FakeRedis::Value> without(const std::string &marker_prefix) {
        return without(std::vector<std::string>{marker_prefix});
    }
    // Everything but the events stream and the keys under any of `prefixes`
    // (e.g. the settlements counter and the settled: markers).
    std::map<std::string, FakeRedis::Value> without(const std::vector<std::string> &prefixes) {
        std::map<std::string, FakeRedis::Value> out;
        for (const auto &[k, v] : redis.data()) {
            if (k == kEvents) continue;
            bool skip = false;
            for (const std::string &prefix : prefixes) skip = skip || k.compare(0, prefix.size(), prefix) == 0;
            if (!skip) out[k] = v;
        }
        return out;
    }
};

// What a reservation of `cost` and `tokens` adds to a counter.
inline std::int64_t reserved_delta(const Counter &c, Nanos cost, std::int64_t tokens) {
    switch (c.kind) {
    case CounterKind::spend:
    case CounterKind::held: return cost;
    case CounterKind::requests:
    case CounterKind::rpm: return 1;
    case CounterKind::tokens:
    case CounterKind::tpm: return tokens;
    case CounterKind::balance: return -cost;
    }
    return 0;
}

// Whether a check reads counter `c` of `l`, so that a reservation adds its
// estimate to it: a cap (rates always have one), the plan's ceiling counter,
// the balance and its hold. Every other counter is left alone until the
// settlement, which adds the real figure once.
inline bool checked(const Ledger &l, const Counter &c) {
    const std::size_t i = static_cast<std::size_t>(&c - l.counters.data());
    return c.cap.has_value() || c.kind == CounterKind::balance || c.kind == CounterKind::held ||
           l.ceiling_counter == std::optional<std::size_t>(i);
}

// The ledger indices of the counters a reserve sends (KEYS and ARGV), in
// ledger order: exactly the checked ones. The reserve reply names a counter by
// its 1-based place in this list, and has one "after" per entry.
inline std::vector<std::size_t> sent_counters(const Ledger &l) {
    std::vector<std::size_t> out;
    for (std::size_t i = 0; i < l.counters.size(); ++i)
        if (checked(l, l.counters[i])) out.push_back(i);
    return out;
}

// The 1-based place of ledger counter `index` among those sent (0 if not sent),
// i.e. how the reserve reply numbers it.
inline long long sent_position(const Ledger &l, std::size_t index) {
    const std::vector<std::size_t> sent = sent_counters(l);
    const auto at = std::find(sent.begin(), sent.end(), index);
    return at == sent.end() ? 0 : static_cast<long long>(at - sent.begin() + 1);
}

// The reply's "after" of ledger counter `index` (which must have been sent).
inline long long after_of(const Ledger &l, const std::vector<long long> &reply, std::size_t index) {
    const long long k = sent_position(l, index);
    EXPECT_GT(k, 0) << l.counters[index].key << " was not sent";
    const std::size_t at = static_cast<std::size_t>(k + 3);
    EXPECT_LT(at, reply.size());
    return k > 0 && at < reply.size() ? reply[at] : -1;
}

// What a reservation of `cost` and `tokens` adds to counter `c` of `l`.
inline std::int64_t reserved_in(const Ledger &l, const Counter &c, Nanos cost, std::int64_t tokens) {
    return checked(l, c) ? reserved_delta(c, cost, tokens) : 0;
}

// The release lines a reservation stores as its request's field in its
// batch's record (the hash sc:{ORG}:resv:BATCH): "-DELTA KEY\n" (KEY without
// sc:{ORG}:) for every checked counter it changes, in ledger order.
inline std::string record_of(const Ledger &l, Nanos cost, std::int64_t tokens) {
    const std::string prefix = "sc:{" + l.org + "}:";
    std::string record;
    for (const Counter &c : l.counters) {
        const std::int64_t d = reserved_in(l, c, cost, tokens);
        if (d != 0) record += std::to_string(-d) + " " + c.key.substr(prefix.size()) + "\n";
    }
    return record;
}

// A prepaid org (lines under the org, for policy_yaml's org_fields).
inline constexpr const char *kPrepaid = "    prepaid: true\n    low_balance_usd: 5\n";

// A paid plan's ceilings (top-level lines) and an org on it.
inline constexpr const char *kPaidPlan =
    "warn_at: [0.5]\n"
    "plans:\n"
    "  paid:\n"
    "    ceilings:\n"
    "      - { cleared_usd: 0, age_days: 0, monthly_usd: 100 }\n"
    "      - { cleared_usd: 100, age_days: 14, monthly_usd: 1000 }\n"
    "      - { cleared_usd: 5000, age_days: 90, monthly_usd: 25000 }\n";

inline std::string paid_org(const std::string &created_at) {
    return "    plan: paid\n    created_at: " + created_at + "\n";
}

// An integer string plus `delta`.
inline std::string plus(const std::string &value, long long delta) {
    return std::to_string(std::stoll(value) + delta);
}

}  // namespace spendcap::test
