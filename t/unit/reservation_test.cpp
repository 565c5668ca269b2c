// Redis keys, the argv of the reserve / settle scripts, and decoding replies.
// (The scripts themselves run against a real Redis; see the README.)
#include "reservation.h"

#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <vector>

#include "request.h"

using namespace spendcap;

namespace {

constexpr std::int64_t kNow = 1795000000;  // 2026-11-18T11:06:40Z
constexpr std::int64_t kDayExpire = 1798070400;    // 2026-11-19 + 35 days
constexpr std::int64_t kMonthExpire = 1830643200;  // 2026-12-01 + 400 days

struct Fixture {
    Policy policy;
    Key key;
    Periods periods = periods_at(kNow);

    Fixture() {
        Org acme;
        acme.id = "acme";
        acme.limits.monthly_usd = 1000 * kNanosPerUsd;
        policy.orgs["acme"] = acme;
        Project prod;
        prod.id = "acme-prod";
        prod.org = "acme";
        prod.limits.monthly_usd = 50 * kNanosPerUsd;
        policy.projects["acme-prod"] = prod;
        key.id = "key_prod_1";
        key.project = "acme-prod";
        key.limits.daily_usd = 2 * kNanosPerUsd;
        key.limits.monthly_usd = 10 * kNanosPerUsd;
        key.limits.lifetime_usd = 40 * kNanosPerUsd;
    }
};

Counter counter(CounterKind kind, Scope scope, Window window, std::string key,
                std::optional<std::int64_t> cap, std::int64_t expire_at) {
    return Counter{kind, scope, window, std::move(key), cap, expire_at};
}

}  // namespace

TEST(Counters, KeysInCheckOrder) {
    Fixture f;
    const std::vector<Counter> counters = counters_for(f.policy, f.key, f.periods);
    const std::vector<std::string> expected_keys = {
        "sc:{acme}:spend:key:key_prod_1:d:2026-11-18",
        "sc:{acme}:spend:key:key_prod_1:m:2026-11",
        "sc:{acme}:spend:key:key_prod_1:life",
        "sc:{acme}:reqs:key:key_prod_1:d:2026-11-18",
        "sc:{acme}:reqs:key:key_prod_1:m:2026-11",
        "sc:{acme}:reqs:key:key_prod_1:life",
        "sc:{acme}:spend:project:acme-prod:d:2026-11-18",
        "sc:{acme}:spend:project:acme-prod:m:2026-11",
        "sc:{acme}:spend:project:acme-prod:life",
        "sc:{acme}:reqs:project:acme-prod:d:2026-11-18",
        "sc:{acme}:reqs:project:acme-prod:m:2026-11",
        "sc:{acme}:reqs:project:acme-prod:life",
        "sc:{acme}:spend:org:acme:d:2026-11-18",
        "sc:{acme}:spend:org:acme:m:2026-11",
        "sc:{acme}:spend:org:acme:life",
        "sc:{acme}:reqs:org:acme:d:2026-11-18",
        "sc:{acme}:reqs:org:acme:m:2026-11",
        "sc:{acme}:reqs:org:acme:life",
    };
    ASSERT_EQ(counters.size(), expected_keys.size());
    const Scope scopes[] = {Scope::key, Scope::project, Scope::org};
    const Window windows[] = {Window::daily, Window::monthly, Window::lifetime};
    const std::int64_t expiries[] = {kDayExpire, kMonthExpire, 0};
    for (std::size_t i = 0; i < counters.size(); ++i) {
        const Counter &c = counters[i];
        EXPECT_EQ(c.key, expected_keys[i]);
        EXPECT_EQ(c.scope, scopes[i / 6]) << i;
        EXPECT_EQ(c.kind, (i % 6) < 3 ? CounterKind::spend : CounterKind::requests) << i;
        EXPECT_EQ(c.window, windows[i % 3]) << i;
        EXPECT_EQ(c.expire_at, expiries[i % 3]) << i;
        if (c.kind == CounterKind::requests) EXPECT_FALSE(c.cap.has_value()) << i;
    }
    // Spend caps per scope and window; absent ones are not checked.
    EXPECT_EQ(counters[0].cap, std::optional<std::int64_t>(2 * kNanosPerUsd));
    EXPECT_EQ(counters[1].cap, std::optional<std::int64_t>(10 * kNanosPerUsd));
    EXPECT_EQ(counters[2].cap, std::optional<std::int64_t>(40 * kNanosPerUsd));
    EXPECT_FALSE(counters[6].cap.has_value());
    EXPECT_EQ(counters[7].cap, std::optional<std::int64_t>(50 * kNanosPerUsd));
    EXPECT_FALSE(counters[8].cap.has_value());
    EXPECT_FALSE(counters[12].cap.has_value());
    EXPECT_EQ(counters[13].cap, std::optional<std::int64_t>(1000 * kNanosPerUsd));
    EXPECT_FALSE(counters[14].cap.has_value());
}

TEST(Scripts, NamedByTheirSha1) {
    EXPECT_EQ(reserve_script_sha1(), sha1_hex(reserve_script()));
    EXPECT_EQ(settle_script_sha1(), sha1_hex(settle_script()));
    EXPECT_EQ(reserve_script_sha1().size(), 40u);
    EXPECT_NE(reserve_script_sha1(), settle_script_sha1());
    // Amounts reach Redis as the strings given, never as Lua numbers.
    EXPECT_NE(reserve_script().find("redis.call('INCRBY', KEYS[i], estimate)"), std::string::npos);
    EXPECT_NE(settle_script().find("redis.call('INCRBY', KEYS[i], delta)"), std::string::npos);
}

TEST(ReserveCommand, ArgvShape) {
    const std::vector<Counter> counters = {
        counter(CounterKind::spend, Scope::key, Window::daily, "sc:{acme}:spend:key:k1:d:2026-11-18",
                2'000'000'000, kDayExpire),
        counter(CounterKind::spend, Scope::key, Window::lifetime, "sc:{acme}:spend:key:k1:life",
                std::nullopt, 0),
        counter(CounterKind::requests, Scope::key, Window::monthly, "sc:{acme}:reqs:key:k1:m:2026-11",
                std::nullopt, kMonthExpire),
    };
    const std::vector<std::string> argv =
        reserve_command("acme", counters, 123456789012345, "0123abcd");
    const std::vector<std::string> expected = {
        "EVALSHA", reserve_script_sha1(), "4",
        "sc:{acme}:spend:key:k1:d:2026-11-18", "sc:{acme}:spend:key:k1:life",
        "sc:{acme}:reqs:key:k1:m:2026-11", "sc:{acme}:resv:0123abcd",
        "3", "123456789012345",
        "s", "-123454789012345", "1798070400",  // cap 2 USD minus the estimate
        "s", "", "0",
        "r", "", "1830643200",
    };
    EXPECT_EQ(argv, expected);
}

TEST(ReserveCommand, FullCounterSet) {
    Fixture f;
    const auto counters = counters_for(f.policy, f.key, f.periods);
    const auto argv = reserve_command("acme", counters, 5, "req-1");
    ASSERT_EQ(argv.size(), 3 + 18 + 1 + 2 + 18 * 3);
    EXPECT_EQ(argv[2], "19");
    EXPECT_EQ(argv[3], "sc:{acme}:spend:key:key_prod_1:d:2026-11-18");
    EXPECT_EQ(argv[21], "sc:{acme}:resv:req-1");
    EXPECT_EQ(argv[22], "18");
    EXPECT_EQ(argv[23], "5");
    EXPECT_EQ(argv[24], "s");
    EXPECT_EQ(argv[25], "1999999995");  // cap - estimate
    EXPECT_EQ(argv[26], "1798070400");
    EXPECT_EQ(argv[27 + 3 * 3], "r");  // the key's daily request counter
    EXPECT_EQ(argv[27 + 3 * 3 + 1], "");
}

TEST(ReserveCommand, NegativeAmountsNeverLoosenCaps) {
    const std::vector<Counter> counters = {
        counter(CounterKind::spend, Scope::org, Window::monthly, "k", -7, 0)};
    const auto argv = reserve_command("o", counters, -100, "r");
    ASSERT_EQ(argv.size(), 10u);
    EXPECT_EQ(argv[6], "0");  // estimate
    EXPECT_EQ(argv[8], "0");  // threshold: blocks anything above zero
}

TEST(ReserveCommand, NoCountersIsAnError) {
    EXPECT_TRUE(reserve_command("acme", {}, 5, "r").empty());
    EXPECT_TRUE(settle_command("acme", {}, 5, 5, "r", true).empty());
}

TEST(SettleCommand, ArgvShape) {
    const std::vector<Counter> counters = {
        counter(CounterKind::spend, Scope::project, Window::monthly,
                "sc:{acme}:spend:project:p:m:2026-11", 50, kMonthExpire),
        counter(CounterKind::requests, Scope::project, Window::lifetime,
                "sc:{acme}:reqs:project:p:life", std::nullopt, 0),
    };
    EXPECT_EQ(settle_command("acme", counters, 1000, 987654321098765, "req-9", true),
              (std::vector<std::string>{
                  "EVALSHA", settle_script_sha1(), "4",
                  "sc:{acme}:spend:project:p:m:2026-11", "sc:{acme}:reqs:project:p:life",
                  "sc:{acme}:resv:req-9", "sc:{acme}:settled:req-9",
                  "2", "987654321097765", "987654321098765", "1",
                  "s", "1830643200",
                  "r", "0"}));
    // A release: the reservation comes off, nothing goes on.
    const auto released = settle_command("acme", counters, 700, -3, "req-9", false);
    ASSERT_EQ(released.size(), 15u);
    EXPECT_EQ(released[8], "-700");
    EXPECT_EQ(released[9], "0");
    EXPECT_EQ(released[10], "0");
}

TEST(DecodeReserve, AllowedPicksTightestCostCap) {
    Fixture f;
    const auto counters = counters_for(f.policy, f.key, f.periods);
    std::vector<long long> reply(19, 0);
    reply[0] = 1;
    reply[1 + 0] = 1'500'000'000;   // key daily: 0.5 USD left of 2
    reply[1 + 1] = 9'800'000'000;   // key monthly: 0.2 USD left of 10  <- tightest
    reply[1 + 2] = 39'000'000'000;  // key lifetime: 1 USD left
    reply[1 + 3] = 999;             // request counters are not caps
    reply[1 + 7] = 49'900'000'000;  // project monthly: 0.1 USD left of 50
    reply[1 + 13] = 5;
    ReserveOutcome o = decode_reserve_reply(counters, reply);
    ASSERT_EQ(o.kind, ReserveOutcome::Kind::allowed) << o.error;
    ASSERT_TRUE(o.tightest_index.has_value());
    EXPECT_EQ(*o.tightest_index, 7u);
    EXPECT_EQ(o.tightest_remaining, 100'000'000);

    reply[1 + 7] = 0;
    o = decode_reserve_reply(counters, reply);
    ASSERT_EQ(o.kind, ReserveOutcome::Kind::allowed);
    EXPECT_EQ(o.tightest_index, std::optional<std::size_t>(1));
    EXPECT_EQ(o.tightest_remaining, 200'000'000);
}

TEST(DecodeReserve, TiesGoToTheFirstInCheckOrder) {
    const std::vector<Counter> counters = {
        counter(CounterKind::requests, Scope::key, Window::daily, "a", std::nullopt, 0),
        counter(CounterKind::spend, Scope::key, Window::daily, "b", 100, 0),
        counter(CounterKind::spend, Scope::org, Window::daily, "c", 300, 0),
    };
    ReserveOutcome o = decode_reserve_reply(counters, {1, 7, 60, 260});
    ASSERT_EQ(o.kind, ReserveOutcome::Kind::allowed);
    EXPECT_EQ(o.tightest_index, std::optional<std::size_t>(1));
    EXPECT_EQ(o.tightest_remaining, 40);
}

TEST(DecodeReserve, NoCostCapMeansNoTightest) {
    const std::vector<Counter> counters = {
        counter(CounterKind::spend, Scope::key, Window::daily, "a", std::nullopt, 0),
        counter(CounterKind::requests, Scope::key, Window::daily, "b", std::nullopt, 0),
    };
    ReserveOutcome o = decode_reserve_reply(counters, {1, 500, 3});
    ASSERT_EQ(o.kind, ReserveOutcome::Kind::allowed);
    EXPECT_FALSE(o.tightest_index.has_value());
    EXPECT_EQ(o.tightest_remaining, 0);
}

TEST(DecodeReserve, Blocked) {
    Fixture f;
    const auto counters = counters_for(f.policy, f.key, f.periods);
    ReserveOutcome o = decode_reserve_reply(counters, {0, 14, 999'999'000'000});
    ASSERT_EQ(o.kind, ReserveOutcome::Kind::blocked) << o.error;
    EXPECT_EQ(o.blocked_index, 13u);
    EXPECT_EQ(counters[o.blocked_index].scope, Scope::org);
    EXPECT_EQ(counters[o.blocked_index].window, Window::monthly);

    o = decode_reserve_reply(counters, {0, 1, 0});
    ASSERT_EQ(o.kind, ReserveOutcome::Kind::blocked);
    EXPECT_EQ(o.blocked_index, 0u);
}

TEST(DecodeReserve, MalformedRepliesAreErrors) {
    Fixture f;
    const auto counters = counters_for(f.policy, f.key, f.periods);
    const std::vector<std::vector<long long>> bad = {
        {},
        {0},
        {0, 0, 5},
        {0, 19, 5},
        {0, -1, 5},
        {0, 3},
        {1},
        {1, 2, 3},
        std::vector<long long>(20, 1),
        {2, 1, 1},
        {-1},
    };
    for (const auto &reply : bad) {
        ReserveOutcome o = decode_reserve_reply(counters, reply);
        EXPECT_EQ(o.kind, ReserveOutcome::Kind::error) << "reply size " << reply.size();
        EXPECT_FALSE(o.error.empty());
    }
    EXPECT_EQ(decode_reserve_reply(counters, {}).error, "reserve script replied with an empty array");
    EXPECT_EQ(decode_reserve_reply(counters, {1, 2, 3}).error,
              "reserve script replied 2 counters, expected 18");
}
