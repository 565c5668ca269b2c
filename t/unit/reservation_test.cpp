// The Redis side of a request in C++: the ledger of counters a key touches,
// warning thresholds, the EVALSHA argv of the reserve / settle scripts, and
// decoding the reserve reply. (The scripts themselves run in
// lua_scripts_test.cpp, against an in-memory Redis.)
#include "base/digest.h"
#include "accounting/reservation.h"
#include "accounting/sweep.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <map>
#include <sstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "http/envelope.h"
#include "request/request.h"

namespace spendcap {
namespace {

constexpr std::int64_t kNow = 1795000000;          // 2026-11-18T11:06:40Z
constexpr std::int64_t kDayReset = 1795046400;     // 2026-11-19T00:00:00Z
constexpr std::int64_t kMonthReset = 1796083200;   // 2026-12-01T00:00:00Z
constexpr std::int64_t kDayExpire = 1798070400;    // 2026-11-19 + 35 days
constexpr std::int64_t kMonthExpire = 1830643200;  // 2026-12-01 + 400 days
constexpr std::int64_t kMinuteReset = 1795000020;  // 11:07:00
constexpr std::int64_t kMinuteExpire = 1795000080; // 11:07:00 + 60 s
constexpr Nanos kUsd = kNanosPerUsd;
constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();

constexpr const char *kHashA = "e0f45c82d6ca5ee6f54cc819900039a64d865a336bec00b8ff16a10e40033839";

const char *kPolicy = R"(models:
  m: { input: 1, output: 2 }
warn_at: [0.8, 0.5]
customers:
  default_limits: { monthly_usd: 1, rpm: 30 }
  overrides:
    cust_42: { monthly_usd: 5, daily_tokens: 7 }
orgs:
  acme:
    limits: { monthly_usd: 1000, tpm: 900 }
projects:
  acme-prod:
    org: acme
    limits: { monthly_usd: 50, daily_requests: 100 }
keys:
  - id: key_prod_1
    sha256: e0f45c82d6ca5ee6f54cc819900039a64d865a336bec00b8ff16a10e40033839
    project: acme-prod
    limits: { daily_usd: 2, monthly_usd: 10, lifetime_usd: 40, monthly_requests: 5000, daily_tokens: 100000, rpm: 60 }
)";

// Paid plan ceilings (SPEC section 2) and a prepaid org.
const char *kPlanPolicy = R"(models:
  m: { input: 1, output: 2 }
warn_at: [0.5]
plans:
  paid:
    limits: { rpm: 10 }
    ceilings:
      - { cleared_usd: 0, age_days: 0, monthly_usd: 100 }
      - { cleared_usd: 100, age_days: 14, monthly_usd: 1000 }
      - { cleared_usd: 5000, age_days: 90, monthly_usd: 25000 }
orgs:
  acme:
    plan: paid
    created_at: 2026-10-19T11:06:40Z
    prepaid: true
    low_balance_usd: 5
  young:
    plan: paid
    created_at: 2026-11-04T11:06:41Z
  fourteen:
    plan: paid
    created_at: 2026-11-04T11:06:40Z
  own:
    plan: paid
    limits: { monthly_usd: 7 }
projects:
  p_acme: { org: acme }
  p_young: { org: young }
  p_fourteen: { org: fourteen }
  p_own: { org: own }
keys:
  - { id: k_acme, sha256: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa, project: p_acme }
  - { id: k_young, sha256: bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb, project: p_young }
  - { id: k_fourteen, sha256: cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc, project: p_fourteen }
  - { id: k_own, sha256: dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd, project: p_own }
)";

Ledger ledger_of(const Policy &policy, const std::string &sha256, const std::string &customer = "",
                 std::int64_t now = kNow) {
    const Key *key = policy.find_key(sha256);
    if (!key) throw std::runtime_error("no key " + sha256);
    return ledger_for(policy, *key, customer, periods_at(now));
}

const char *kind_name(CounterKind k) {
    switch (k) {
    case CounterKind::spend: return "spend";
    case CounterKind::requests: return "requests";
    case CounterKind::tokens: return "tokens";
    case CounterKind::rpm: return "rpm";
    case CounterKind::tpm: return "tpm";
    case CounterKind::balance: return "balance";
    case CounterKind::held: return "held";
    }
    return "?";
}

// One line per counter, for readable comparisons: "KIND SCOPE WINDOW KEY cap=.. exp=..".
// Rates and the balance have no calendar window.
std::string line(const Counter &c) {
    const bool windowed = c.kind == CounterKind::spend || c.kind == CounterKind::requests ||
                          c.kind == CounterKind::tokens;
    return std::string(kind_name(c.kind)) + " " + scope_name(c.scope) + " " +
           (windowed ? window_name(c.window) : "-") + " " + c.key +
           " cap=" + (c.cap ? std::to_string(*c.cap) : "none") + " exp=" + std::to_string(c.expire_at);
}

std::vector<std::string> lines(const Ledger &l) {
    std::vector<std::string> out;
    for (const Counter &c : l.counters) out.push_back(line(c));
    return out;
}

std::string expiry(std::int64_t at) { return std::to_string(at); }

// The seven calendar counters of one scope, as lines.
std::vector<std::string> scope_lines(const std::string &scope, const std::string &id,
                                     std::optional<Nanos> spend_d, std::optional<Nanos> spend_m,
                                     std::optional<Nanos> spend_life, std::optional<std::int64_t> reqs_d,
                                     std::optional<std::int64_t> reqs_m, std::optional<std::int64_t> tokens_d,
                                     std::optional<std::int64_t> tokens_m) {
    const std::string p = "sc:{acme}:";
    auto cap = [](const std::optional<std::int64_t> &c) { return c ? std::to_string(*c) : std::string("none"); };
    const std::string d = ":d:2026-11-18", m = ":m:2026-11";
    const std::string de = " exp=" + expiry(kDayExpire), me = " exp=" + expiry(kMonthExpire);
    return {
        "spend " + scope + " daily " + p + "spend:" + scope + ":" + id + d + " cap=" + cap(spend_d) + de,
        "spend " + scope + " monthly " + p + "spend:" + scope + ":" + id + m + " cap=" + cap(spend_m) + me,
        "spend " + scope + " lifetime " + p + "spend:" + scope + ":" + id + ":life cap=" + cap(spend_life) + " exp=0",
        "requests " + scope + " daily " + p + "reqs:" + scope + ":" + id + d + " cap=" + cap(reqs_d) + de,
        "requests " + scope + " monthly " + p + "reqs:" + scope + ":" + id + m + " cap=" + cap(reqs_m) + me,
        "tokens " + scope + " daily " + p + "tokens:" + scope + ":" + id + d + " cap=" + cap(tokens_d) + de,
        "tokens " + scope + " monthly " + p + "tokens:" + scope + ":" + id + m + " cap=" + cap(tokens_m) + me,
    };
}

std::vector<std::string> concat(std::vector<std::vector<std::string>> parts) {
    std::vector<std::string> out;
    for (auto &part : parts) out.insert(out.end(), part.begin(), part.end());
    return out;
}

const std::string kRateSuffix = ":2026-11-18T11:06 cap=";

// ---------------------------------------------------------------------------
// ledger_for

TEST(Ledger, KeyProjectOrgThenRatesInCheckOrder) {
    const auto policy = parse_policy(kPolicy, "test.yaml");
    const Ledger l = ledger_of(*policy, kHashA);
    const std::vector<std::string> expected = concat({
        scope_lines("key", "key_prod_1", 2 * kUsd, 10 * kUsd, 40 * kUsd, std::nullopt, 5000, 100000, std::nullopt),
        scope_lines("project", "acme-prod", std::nullopt, 50 * kUsd, std::nullopt, 100, std::nullopt,
                    std::nullopt, std::nullopt),
        scope_lines("org", "acme", std::nullopt, 1000 * kUsd, std::nullopt, std::nullopt, std::nullopt,
                    std::nullopt, std::nullopt),
        {"rpm key - sc:{acme}:rate:key:key_prod_1:rpm" + kRateSuffix + "60 exp=" + expiry(kMinuteExpire),
         "tpm org - sc:{acme}:rate:org:acme:tpm" + kRateSuffix + "900 exp=" + expiry(kMinuteExpire)},
    });
    EXPECT_EQ(lines(l), expected);
    EXPECT_EQ(l.org, "acme");
    EXPECT_EQ(l.key_id, "key_prod_1");
    EXPECT_FALSE(l.balance.has_value());
    EXPECT_FALSE(l.held.has_value());
    EXPECT_FALSE(l.low_balance.has_value());
    EXPECT_FALSE(l.ceiling_counter.has_value());
    EXPECT_TRUE(l.ceilings.empty());
    ASSERT_EQ(l.warn_at.size(), 2u);  // ascending, as the policy keeps them
    EXPECT_EQ(l.warn_at[0].label, "0.5");
    EXPECT_EQ(l.warn_at[1].label, "0.8");
    EXPECT_EQ(l.periods.now, kNow);
    EXPECT_EQ(l.periods.day, "2026-11-18");
    EXPECT_EQ(l.periods.minute, "2026-11-18T11:06");
}

TEST(Ledger, ACustomerScopeComesLastWithItsOverrideOverTheDefaults) {
    const auto policy = parse_policy(kPolicy, "test.yaml");
    const Ledger l = ledger_of(*policy, kHashA, "cust_42");
    ASSERT_EQ(l.counters.size(), 4u * 7 + 3);
    const std::vector<std::string> all = lines(l);
    const std::vector<std::string> customer(all.begin() + 21, all.begin() + 28);
    // monthly_usd 5 and daily_tokens 7 from the override; rpm 30 kept from the defaults.
    EXPECT_EQ(customer, scope_lines("customer", "cust_42", std::nullopt, 5 * kUsd, std::nullopt, std::nullopt,
                                    std::nullopt, 7, std::nullopt));
    EXPECT_EQ(std::vector<std::string>(all.begin() + 28, all.end()),
              (std::vector<std::string>{
                  "rpm key - sc:{acme}:rate:key:key_prod_1:rpm" + kRateSuffix + "60 exp=" + expiry(kMinuteExpire),
                  "tpm org - sc:{acme}:rate:org:acme:tpm" + kRateSuffix + "900 exp=" + expiry(kMinuteExpire),
                  "rpm customer - sc:{acme}:rate:customer:cust_42:rpm" + kRateSuffix + "30 exp=" +
                      expiry(kMinuteExpire)}));
    // The key, project and org counters are the same as without a customer.
    const std::vector<std::string> without = lines(ledger_of(*policy, kHashA));
    ASSERT_EQ(without.size(), 23u);
    EXPECT_EQ(std::vector<std::string>(all.begin(), all.begin() + 21),
              std::vector<std::string>(without.begin(), without.begin() + 21));
}

TEST(Ledger, ACustomerWithoutAnOverrideGetsTheDefaults) {
    const auto policy = parse_policy(kPolicy, "test.yaml");
    const Ledger l = ledger_of(*policy, kHashA, "cust_7");
    ASSERT_EQ(l.counters.size(), 31u);
    const std::vector<std::string> all = lines(l);
    EXPECT_EQ(std::vector<std::string>(all.begin() + 21, all.begin() + 28),
              scope_lines("customer", "cust_7", std::nullopt, kUsd, std::nullopt, std::nullopt, std::nullopt,
                          std::nullopt, std::nullopt));
    EXPECT_EQ(l.counters.back().key, "sc:{acme}:rate:customer:cust_7:rpm:2026-11-18T11:06");
    EXPECT_EQ(l.counters.back().cap, 30);
}

TEST(Ledger, NoCustomersSectionMeansAnUncappedCustomerScope) {
    const auto policy = parse_policy(R"(models:
  m: { input: 1, output: 2 }
orgs:
  acme:
projects:
  p: { org: acme }
keys:
  - { id: k, sha256: e0f45c82d6ca5ee6f54cc819900039a64d865a336bec00b8ff16a10e40033839, project: p }
)",
                                     "test.yaml");
    EXPECT_EQ(ledger_of(*policy, kHashA).counters.size(), 21u);
    const Ledger l = ledger_of(*policy, kHashA, "c1");
    ASSERT_EQ(l.counters.size(), 28u);
    for (const Counter &c : l.counters) EXPECT_FALSE(c.cap.has_value()) << c.key;
    EXPECT_EQ(l.counters[21].key, "sc:{acme}:spend:customer:c1:d:2026-11-18");
    EXPECT_TRUE(l.warn_at.empty());
}

TEST(Ledger, APrepaidOrgAddsItsBalanceBeforeTheRatesAndItsHeldCounterLast) {
    const auto policy = parse_policy(kPlanPolicy, "plans.yaml");
    const Ledger l = ledger_of(*policy, std::string(64, 'a'));
    ASSERT_EQ(l.counters.size(), 24u);
    EXPECT_EQ(l.balance, std::optional<std::size_t>(21));
    EXPECT_EQ(l.held, std::optional<std::size_t>(23));
    EXPECT_EQ(l.low_balance, 5 * kUsd);
    const std::vector<std::string> all = lines(l);
    EXPECT_EQ(std::vector<std::string>(all.begin() + 21, all.end()),
              (std::vector<std::string>{
                  "balance org - sc:{acme}:balance cap=none exp=0",
                  "rpm org - sc:{acme}:rate:org:acme:rpm" + kRateSuffix + "10 exp=" + expiry(kMinuteExpire),
                  "held org - sc:{acme}:balance:held cap=none exp=0"}));
}

TEST(Ledger, APaidPlansCeilingsAreFilteredByAccountAge) {
    const auto policy = parse_policy(kPlanPolicy, "plans.yaml");
    // acme: 30 days old, rows 1 and 2; its monthly counter is the one they cap.
    const Ledger acme = ledger_of(*policy, std::string(64, 'a'));
    ASSERT_EQ(acme.ceiling_counter, std::optional<std::size_t>(15));
    EXPECT_EQ(acme.counters[15].key, "sc:{acme}:spend:org:acme:m:2026-11");
    EXPECT_EQ(acme.counters[15].kind, CounterKind::spend);
    EXPECT_FALSE(acme.counters[15].cap.has_value());
    ASSERT_EQ(acme.ceilings.size(), 2u);
    EXPECT_EQ(acme.ceilings[0].monthly_usd, 100 * kUsd);
    EXPECT_EQ(acme.ceilings[1].cleared_usd, 100 * kUsd);
    EXPECT_EQ(acme.ceilings[1].monthly_usd, 1000 * kUsd);
    // One second short of 14 days: row 1 only; exactly 14 days: rows 1 and 2.
    const Ledger young = ledger_of(*policy, std::string(64, 'b'));
    ASSERT_EQ(young.ceiling_counter, std::optional<std::size_t>(15));
    ASSERT_EQ(young.ceilings.size(), 1u);
    EXPECT_EQ(young.ceilings[0].monthly_usd, 100 * kUsd);
    EXPECT_FALSE(young.balance.has_value());
    EXPECT_EQ(ledger_of(*policy, std::string(64, 'c')).ceilings.size(), 2u);
    // 90 days later every row's age holds.
    EXPECT_EQ(ledger_of(*policy, std::string(64, 'a'), "", kNow + 60 * 86400).ceilings.size(), 3u);
}

TEST(Ledger, AnOrgsOwnMonthlyCapReplacesTheCeilings) {
    const auto policy = parse_policy(kPlanPolicy, "plans.yaml");
    const Ledger own = ledger_of(*policy, std::string(64, 'd'));
    EXPECT_FALSE(own.ceiling_counter.has_value());
    EXPECT_TRUE(own.ceilings.empty());
    EXPECT_EQ(own.counters[15].cap, 7 * kUsd);
}

TEST(Ledger, AFutureCreatedAtIsABrandNewAccount) {
    const auto policy = parse_policy(kPlanPolicy, "plans.yaml");
    // acme was created 30 days before kNow: 31 days earlier it "is" created tomorrow.
    const Ledger l = ledger_of(*policy, std::string(64, 'a'), "", kNow - 31 * 86400);
    ASSERT_EQ(l.ceiling_counter, std::optional<std::size_t>(15));
    ASSERT_EQ(l.ceilings.size(), 1u);
    EXPECT_EQ(l.ceilings[0].monthly_usd, 100 * kUsd);
}

// `age_days * 86400` would overflow int64.
TEST(Ledger, AHugeAgeDaysNeverQualifies) {
    const auto policy = parse_policy(R"(models:
  m: { input: 1, output: 2 }
plans:
  paid:
    ceilings:
      - { cleared_usd: 0, age_days: 0, monthly_usd: 100 }
      - { cleared_usd: 0, age_days: 106751991167301, monthly_usd: 100000 }
orgs:
  acme: { plan: paid, created_at: 2026-10-19T11:06:40Z }
projects:
  p: { org: acme }
keys:
  - { id: k, sha256: e0f45c82d6ca5ee6f54cc819900039a64d865a336bec00b8ff16a10e40033839, project: p }
)",
                                     "test.yaml");
    EXPECT_EQ(ledger_of(*policy, kHashA).ceilings.size(), 1u);
}

// ---------------------------------------------------------------------------
// warn_threshold

WarnFraction fraction(const char *label, std::int64_t billionths) { return WarnFraction{label, billionths}; }

TEST(WarnThreshold, IsTheCeilingOfCapTimesFraction) {
    EXPECT_EQ(warn_threshold(10 * kUsd, fraction("0.5", 500'000'000)), 5 * kUsd);  // exact
    EXPECT_EQ(warn_threshold(3, fraction("0.5", 500'000'000)), 2);                  // 1.5 -> 2
    EXPECT_EQ(warn_threshold(2, fraction("0.5", 500'000'000)), 1);
    EXPECT_EQ(warn_threshold(1, fraction("0.5", 500'000'000)), 1);  // 0.5 -> 1
    EXPECT_EQ(warn_threshold(100, fraction("0.95", 950'000'000)), 95);
    EXPECT_EQ(warn_threshold(101, fraction("0.95", 950'000'000)), 96);  // 95.95
    EXPECT_EQ(warn_threshold(20, fraction("0.95", 950'000'000)), 19);   // exactly 19, not 19.000...1
    EXPECT_EQ(warn_threshold(kUsd, fraction("0.000000001", 1)), 1);
    EXPECT_EQ(warn_threshold(kUsd + 1, fraction("0.000000001", 1)), 2);
    EXPECT_EQ(warn_threshold(1, fraction("0.000000001", 1)), 1);
}

TEST(WarnThreshold, EdgeCaps) {
    EXPECT_EQ(warn_threshold(0, fraction("0.5", 500'000'000)), 0);
    EXPECT_EQ(warn_threshold(0, fraction("1", kUsd)), 0);
    EXPECT_EQ(warn_threshold(-5, fraction("0.5", 500'000'000)), 0);  // never below 0
    EXPECT_EQ(warn_threshold(12345, fraction("1", kUsd)), 12345);   // fraction 1 is the cap
    EXPECT_EQ(warn_threshold(kMax, fraction("1", kUsd)), kMax);
    // INT64_MAX * 0.95 = 8762203435012037016.65: no overflow, rounded up.
    EXPECT_EQ(warn_threshold(kMax, fraction("0.95", 950'000'000)), 8762203435012037017LL);
    EXPECT_EQ(warn_threshold(kMax, fraction("0.000000001", 1)), 9223372037LL);
    EXPECT_EQ(warn_threshold(kMax, fraction("0.999999999", 999'999'999)), 9223372027631403771LL);
}

// ---------------------------------------------------------------------------
// reserve_command / settle_command: exact argv

Counter counter(CounterKind kind, Scope scope, Window window, std::string key, std::optional<std::int64_t> cap,
                std::int64_t expire_at) {
    return Counter{kind, scope, window, std::move(key), cap, expire_at};
}

Ledger small_ledger() {
    Ledger l;
    l.org = "acme";
    l.periods = periods_at(kNow);
    l.warn_at = {fraction("0.5", 500'000'000)};
    l.counters = {
        counter(CounterKind::spend, Scope::key, Window::daily, "sc:{acme}:spend:key:k1:d:2026-11-18", 2 * kUsd,
                kDayExpire),
        counter(CounterKind::requests, Scope::key, Window::monthly, "sc:{acme}:reqs:key:k1:m:2026-11", 100,
                kMonthExpire),
        counter(CounterKind::spend, Scope::key, Window::lifetime, "sc:{acme}:spend:key:k1:life", std::nullopt, 0),
    };
    return l;
}

std::vector<std::string> keys_of(const Command &c) {
    const std::size_t n = std::stoul(c.argv.at(2));
    return {c.argv.begin() + 3, c.argv.begin() + 3 + static_cast<std::ptrdiff_t>(n)};
}
std::vector<std::string> args_of(const Command &c) {
    const std::size_t n = std::stoul(c.argv.at(2));
    return {c.argv.begin() + 3 + static_cast<std::ptrdiff_t>(n), c.argv.end()};
}
Reply strings(std::vector<std::string> items) {
    std::vector<Reply> out;
    for (std::string &item : items) out.push_back(Reply::bulk(std::move(item)));
    return Reply::array(std::move(out));
}

TEST(ReservationSweep, EveryCommandNamesTheKeysItTouches) {
    ReservationSweep sweep("acme", 8);
    std::optional<Command> c = sweep.start();
    ASSERT_TRUE(c);
    EXPECT_EQ(c->argv[1], scripts::sweep().sha1);
    EXPECT_EQ(keys_of(*c), (std::vector<std::string>{"sc:{acme}:settled", "sc:{acme}:released", "sc:{acme}:gone"}));
    c = sweep.next(Reply::of_integer(0));
    ASSERT_TRUE(c);
    EXPECT_EQ(c->argv[1], scripts::due().sha1);
    EXPECT_EQ(keys_of(*c), (std::vector<std::string>{"sc:{acme}:reserved:deadlines", "sc:{acme}:reserved"}));
    EXPECT_EQ(args_of(*c), (std::vector<std::string>{"8"}));
    // Two batches due: the release names every counter their lines name, once.
    Reply due = strings({"b1", "", "r1", "-5 spend:key:k1:d:2026-11-18\n-1 reqs:key:k1:m:2026-11\n", "b2", "",
                         "r2", "-7 spend:key:k1:d:2026-11-18\n"});
    due.elements[1] = Reply::of_integer(1);
    due.elements[5] = Reply::of_integer(1);
    c = sweep.next(due);
    ASSERT_TRUE(c);
    EXPECT_EQ(c->argv[1], scripts::release().sha1);
    EXPECT_EQ(keys_of(*c), (std::vector<std::string>{"sc:{acme}:reserved", "sc:{acme}:reserved:deadlines",
                                                     "sc:{acme}:released", "sc:{acme}:spend:key:k1:d:2026-11-18",
                                                     "sc:{acme}:reqs:key:k1:m:2026-11"}));
    EXPECT_EQ(args_of(*c), (std::vector<std::string>{"10", "b1", "b2"}));
    // Then the layout before: a batch record and a single request's record.
    c = sweep.next(Reply::of_integer(2));
    ASSERT_TRUE(c);
    EXPECT_EQ(c->argv[1], scripts::legacy_due().sha1);
    EXPECT_EQ(keys_of(*c), (std::vector<std::string>{"sc:{acme}:deadlines", "sc:{acme}:reservations"}));
    c = sweep.next(strings({"b0", "", "r0"}));
    ASSERT_TRUE(c);
    EXPECT_EQ(c->argv[1], scripts::legacy_read().sha1);
    EXPECT_EQ(keys_of(*c), (std::vector<std::string>{"sc:{acme}:resv:b0"}));
    c = sweep.next(strings({"r5", "-1 x\n"}));
    ASSERT_TRUE(c);
    EXPECT_EQ(c->argv[1], scripts::legacy_release().sha1);
    EXPECT_EQ(keys_of(*c), (std::vector<std::string>{"sc:{acme}:deadlines", "sc:{acme}:resv:b0",
                                                     "sc:{acme}:released:r5", "sc:{acme}:x"}));
    EXPECT_EQ(args_of(*c), (std::vector<std::string>{"10", "b0", "1", "r5"}));
    c = sweep.next(Reply::of_integer(1));
    ASSERT_TRUE(c);
    EXPECT_EQ(keys_of(*c), (std::vector<std::string>{"sc:{acme}:resv:r0"}));
    c = sweep.next(Reply::array({}));  // gone meanwhile: only its deadline goes
    ASSERT_TRUE(c);
    EXPECT_EQ(keys_of(*c), (std::vector<std::string>{"sc:{acme}:reservations", "sc:{acme}:resv:r0"}));
    EXPECT_EQ(args_of(*c), (std::vector<std::string>{"10", "r0", "0"}));
    EXPECT_FALSE(sweep.next(Reply::of_integer(0)));
    EXPECT_EQ(sweep.given_back(), 3);
    // Every command of one org stays in its slot (the global ones excepted).
    for (const char *k : {"sc:{acme}:settled", "sc:{acme}:resv:r0"}) EXPECT_EQ(std::string(k).rfind("sc:{acme}:", 0), 0u);
}

TEST(ReservationSweep, DueOnlyAndWhatItSkips) {
    ReservationSweep due("acme", 0, true);
    std::optional<Command> c = due.start();
    ASSERT_TRUE(c);
    EXPECT_EQ(c->argv[1], scripts::due().sha1);
    EXPECT_EQ(args_of(*c), (std::vector<std::string>{"1"}));  // at least one
    EXPECT_FALSE(due.next(Reply::array({})));                  // nothing due: done
    ReservationSweep malformed("acme", 4, true);
    malformed.start();
    // lines without a name, an error reply, a count past the reply: nothing released
    Reply bad = strings({"b1", "", "r1", "-5\n"});
    bad.elements[1] = Reply::of_integer(1);
    EXPECT_FALSE(malformed.next(bad));
    ReservationSweep error("acme", 4, true);
    error.start();
    EXPECT_FALSE(error.next(Reply::error("ERR boom")));
    ReservationSweep overlong("acme", 4, true);
    overlong.start();
    Reply longer = strings({"b1", ""});
    longer.elements[1] = Reply::of_integer(3);
    EXPECT_FALSE(overlong.next(longer));
}

TEST(ReservationSweep, CountersNamed) {
    std::vector<std::string> keys;
    EXPECT_TRUE(counters_named("o", "", keys));
    EXPECT_TRUE(keys.empty());
    EXPECT_TRUE(counters_named("o", "-1 a\n-2 b\n-3 a\n", keys));
    EXPECT_EQ(keys, (std::vector<std::string>{"sc:{o}:a", "sc:{o}:b"}));
    for (const char *bad : {"-1 a", "-1\n", " a\n", "-1 \n"}) {
        std::vector<std::string> k;
        EXPECT_FALSE(counters_named("o", bad, k)) << bad;
    }
}

// A reserve argv taken apart (reserve.lua's header): KEYS are C counters,
// the org's reservations, their deadlines, the events stream, the config
// version, the gone batches, G markers hashes and, with a plan's ceiling,
// sc:{ORG}:cleared; ARGV is C, M, H, G, ttl, batch id, the prefix's length,
// check_due, 7 fields per counter, R and the decided counter, 3 fields per
// row, the chains (K and K indices), then 6 fields per request, then the
// config version.
struct ReserveArgs {
    std::size_t counters = 0, requests = 0, chains_count = 0, markers = 0;
    std::vector<std::string> keys;                  // all KEYS
    std::string prefix_length, ttl, batch, version, check_due;
    std::vector<std::vector<std::string>> fields;   // per counter: kind, amount, cap, expire_at, warn
    std::vector<std::string> marks, labels;         // per counter: its markers hash (index), its label
    std::size_t rows = 0, decided = 0;
    std::vector<std::vector<std::string>> ceiling;  // per row: cleared_min, cap, warn
    std::vector<std::vector<std::size_t>> chains;   // 1-based counter indices
    std::vector<std::vector<std::string>> items;    // per request: id, dry_run, chain, cost, tokens, record
    bool ok = false;  // every part where it should be, nothing left over
};

ReserveArgs parse_reserve(const std::vector<std::string> &argv) {
    ReserveArgs a;
    if (argv.size() < 3 || argv[0] != "EVALSHA" || argv[1] != scripts::reserve().sha1) return a;
    const std::size_t numkeys = std::stoul(argv[2]);
    std::size_t p = 3 + numkeys;
    if (p + 8 > argv.size()) return a;
    a.keys.assign(argv.begin() + 3, argv.begin() + static_cast<std::ptrdiff_t>(p));
    a.counters = std::stoul(argv[p]);
    a.requests = std::stoul(argv[p + 1]);
    a.chains_count = std::stoul(argv[p + 2]);
    a.markers = std::stoul(argv[p + 3]);
    a.ttl = argv[p + 4];
    a.batch = argv[p + 5];
    a.prefix_length = argv[p + 6];
    a.check_due = argv[p + 7];
    p += 8;
    if (p + 7 * a.counters + 2 > argv.size()) return a;
    for (std::size_t i = 0; i < a.counters; ++i, p += 7) {
        a.fields.emplace_back(argv.begin() + static_cast<std::ptrdiff_t>(p),
                              argv.begin() + static_cast<std::ptrdiff_t>(p + 5));
        a.marks.push_back(argv[p + 5]);
        a.labels.push_back(argv[p + 6]);
        if (std::stoul(argv[p + 5]) > a.markers) return a;
    }
    a.rows = std::stoul(argv[p]);
    a.decided = std::stoul(argv[p + 1]);
    p += 2;
    if (numkeys != a.counters + 5 + a.markers + (a.decided > 0 ? 1 : 0)) return a;
    if (a.decided > a.counters || p + 3 * a.rows > argv.size()) return a;
    for (std::size_t r = 0; r < a.rows; ++r, p += 3)
        a.ceiling.emplace_back(argv.begin() + static_cast<std::ptrdiff_t>(p),
                               argv.begin() + static_cast<std::ptrdiff_t>(p + 3));
    for (std::size_t x = 0; x < a.chains_count; ++x) {
        if (p >= argv.size()) return a;
        const std::size_t k = std::stoul(argv[p++]);
        if (p + k > argv.size()) return a;
        std::vector<std::size_t> chain;
        for (std::size_t q = 0; q < k; ++q) {
            const std::size_t index = std::stoul(argv[p++]);
            if (index < 1 || index > a.counters) return a;
            chain.push_back(index);
        }
        a.chains.push_back(chain);
    }
    // then the org's config version, last
    if (p + 6 * a.requests + 1 != argv.size()) return a;
    a.version = argv.back();
    for (std::size_t j = 0; j < a.requests; ++j, p += 6) {
        a.items.emplace_back(argv.begin() + static_cast<std::ptrdiff_t>(p),
                             argv.begin() + static_cast<std::ptrdiff_t>(p + 6));
        const std::size_t chain = std::stoul(a.items.back()[2]);
        if (chain < 1 || chain > a.chains_count) return a;
    }
    a.ok = true;
    return a;
}

std::shared_ptr<const Ledger> shared(const Ledger &l) { return std::make_shared<const Ledger>(l); }

TEST(ReserveCommand, ArgvShape) {
    const Ledger l = small_ledger();
    EXPECT_EQ(reserve_command(l, Amounts{300'000'000, 40}, "rid", false),
              (std::vector<std::string>{
                  // only the checked counters: the uncapped lifetime spend gets no KEYS entry
                  "EVALSHA", scripts::reserve().sha1, "7",
                  "sc:{acme}:spend:key:k1:d:2026-11-18", "sc:{acme}:reqs:key:k1:m:2026-11",
                  // the org's reservations, their deadlines, the events, the config
                  // version, the gone batches (no markers: these counters have no label)
                  "sc:{acme}:reserved", "sc:{acme}:reserved:deadlines", "sc:{acme}:events", "sc:{acme}:config",
                  "sc:{acme}:gone",
                  // C, M, H, G, ttl (ms), batch id (a batch of one is its request's id),
                  // the prefix's length, check_due
                  "2", "1", "1", "0", "900000", "rid", "10", "1",
                  // kind, what a request adds, cap, expire_at, warn thresholds
                  // (fraction=threshold), markers hash (0 none), label
                  "s", "$", "2000000000", "1798070400", "0.5=1000000000", "0", "",
                  "c", "1", "100", "1830643200", "", "0", "",  // thresholds only for cost caps
                  "0", "0",                           // no ceiling rows, no counter they decide
                  "2", "1", "2",                      // one chain: both counters, in check order
                  // the request: id, dry run, chain, cost, tokens, and the release record
                  // "DELTA KEY\n" undoing each checked counter it changes, without the prefix
                  // (the uncapped lifetime spend is not reserved: nothing to undo)
                  "rid", "0", "1", "300000000", "40",
                  "-300000000 spend:key:k1:d:2026-11-18\n-1 reqs:key:k1:m:2026-11\n",
                  // last, the org's config version its caps were read at ("" none: records.h)
                  ""}));
    // The estimate always counts one request, whatever it says.
    EXPECT_EQ(reserve_command(l, Amounts{300'000'000, 40, 0}, "rid", false),
              reserve_command(l, Amounts{300'000'000, 40}, "rid", false));
    EXPECT_EQ(reserve_command(l, Amounts{300'000'000, 40, 5}, "rid", false),
              reserve_command(l, Amounts{300'000'000, 40}, "rid", false));
    // A batch of one whose batch id is its request id.
    EXPECT_EQ(reserve_batch_command({ReserveItem{shared(l), Amounts{300'000'000, 40}, "rid", false}}, "rid"),
              reserve_command(l, Amounts{300'000'000, 40}, "rid", false));
    EXPECT_EQ(reserve_batch_command({ReserveItem{shared(l), Amounts{300'000'000, 40}, "rid", true}}, "rid", 5000),
              reserve_command(l, Amounts{300'000'000, 40}, "rid", true, 5000));
    const ReserveArgs a = parse_reserve(reserve_command(l, Amounts{300'000'000, 40}, "rid", false));
    ASSERT_TRUE(a.ok);
    EXPECT_EQ(a.counters, 2u);
    EXPECT_EQ(a.batch, "rid");
}

TEST(ReserveCommand, TheTtlIsBounded) {
    const Ledger l = small_ledger();
    const std::size_t ttl = 3 + (2 + 5) + 4;  // ARGV[5], after 2 sent counters and 5 fixed keys
    ASSERT_EQ(reserve_command(l, Amounts{1, 1}, "rid", false)[ttl + 1], "rid");
    EXPECT_EQ(reserve_command(l, Amounts{1, 1}, "rid", false, 5000)[ttl], "5000");
    EXPECT_EQ(reserve_command(l, Amounts{1, 1}, "rid", false, 0)[ttl], "1");
    EXPECT_EQ(reserve_command(l, Amounts{1, 1}, "rid", false, -7)[ttl], "1");
    EXPECT_EQ(reserve_command(l, Amounts{1, 1}, "rid", false, kMax)[ttl], std::to_string(kMaxReservationTtlMs));
    EXPECT_EQ(reserve_command(l, Amounts{1, 1}, "rid", false, kMaxReservationTtlMs)[ttl], "43200000");
    EXPECT_EQ(reserve_command(l, Amounts{1, 1}, "rid", false)[ttl], std::to_string(kDefaultReservationTtlMs));
    EXPECT_EQ(reserve_batch_command({ReserveItem{shared(l), Amounts{1, 1}, "rid", false}}, "b", -1)[ttl], "1");
}

TEST(ReserveCommand, AnEmptyRequestIdIsAnError) {
    const Ledger l = small_ledger();
    EXPECT_TRUE(reserve_command(l, Amounts{1, 1}, "", false).empty());
    EXPECT_TRUE(settle_command(l, Amounts{1, 1}, Amounts{1, 1}, "", std::nullopt).empty());
}

TEST(ReserveCommand, DryRunAndAnEstimateAboveTheCap) {
    const Ledger l = small_ledger();
    // The script compares `current + delta <= cap` itself: an estimate above
    // the cap sends the same fields as any other, the dry run is the request's flag.
    const std::vector<std::string> dry = reserve_command(l, Amounts{3 * kUsd, 0}, "r", true);
    const ReserveArgs a = parse_reserve(dry);
    ASSERT_TRUE(a.ok);
    ASSERT_EQ(dry.size(), 3u + (2 + 5) + 8 + 7 * 2 + 2 + 3 + 6 + 1);  // 2 checked counters sent, the lifetime spend not
    EXPECT_EQ(a.fields[0], (std::vector<std::string>{"s", "$", "2000000000", "1798070400", "0.5=1000000000"}));
    ASSERT_EQ(a.items.size(), 1u);
    EXPECT_EQ(a.items[0], (std::vector<std::string>{"r", "1", "1", "3000000000", "0",
                                                    "-3000000000 spend:key:k1:d:2026-11-18\n"
                                                    "-1 reqs:key:k1:m:2026-11\n"}));
    // Not a dry run: only the flag differs.
    std::vector<std::string> plain = reserve_command(l, Amounts{3 * kUsd, 0}, "r", false);
    ASSERT_EQ(plain.size(), dry.size());
    EXPECT_EQ(plain[dry.size() - 6], "0");
    plain[dry.size() - 6] = "1";
    EXPECT_EQ(plain, dry);
}

TEST(ReserveCommand, WithCeilingsAndABalance) {
    Ledger l;
    l.org = "o";
    l.periods = periods_at(kNow);
    l.warn_at = {fraction("0.5", 500'000'000)};
    l.counters = {
        counter(CounterKind::spend, Scope::org, Window::monthly, "sc:{o}:spend:org:o:m:2026-11", std::nullopt,
                kMonthExpire),
        counter(CounterKind::balance, Scope::org, Window::lifetime, "sc:{o}:balance", std::nullopt, 0),
        counter(CounterKind::held, Scope::org, Window::lifetime, "sc:{o}:balance:held", std::nullopt, 0),
    };
    l.balance = 1;
    l.held = 2;
    l.ceiling_counter = 0;
    l.ceilings = {CeilingRow{0, 0, 1000}, CeilingRow{50, 14, 3000}};
    EXPECT_EQ(reserve_command(l, Amounts{400, 9}, "r1", true),
              (std::vector<std::string>{
                  "EVALSHA", scripts::reserve().sha1, "9",
                  "sc:{o}:spend:org:o:m:2026-11", "sc:{o}:balance", "sc:{o}:balance:held",
                  "sc:{o}:reserved", "sc:{o}:reserved:deadlines", "sc:{o}:events", "sc:{o}:config", "sc:{o}:gone",
                  "sc:{o}:cleared",
                  "3", "1", "1", "0", "900000", "r1", "7", "1",
                  "s", "$", "", "1830643200", "", "0", "",  // the ceiling's cap comes from its row
                  "b", "-", "", "0", "", "0", "",           // the balance: drawn, must hold at least the estimate
                  "h", "$", "", "0", "", "0", "",           // the hold: counted, not checked
                  "2", "1",                        // rows, the counter they decide (1-based)
                  "0", "1000", "0.5=500",          // cleared_min, monthly cap, warn thresholds
                  "50", "3000", "0.5=1500",
                  "3", "1", "2", "3",
                  "r1", "1", "1", "400", "9",
                  "-400 spend:org:o:m:2026-11\n400 balance\n-400 balance:held\n", ""}));  // the balance comes back
    // Another estimate changes the request's part only.
    const std::vector<std::string> small = reserve_command(l, Amounts{400, 9}, "r1", false);
    const std::vector<std::string> big = reserve_command(l, Amounts{2000, 0}, "r1", false);
    ASSERT_EQ(big.size(), 3u + 9 + 8 + 21 + 2 + 6 + 4 + 6 + 1);
    ASSERT_EQ(small.size(), big.size());
    EXPECT_EQ(std::vector<std::string>(big.begin(), big.end() - 7),
              std::vector<std::string>(small.begin(), small.end() - 7));
    EXPECT_EQ(std::vector<std::string>(big.end() - 7, big.end() - 1),
              (std::vector<std::string>{"r1", "0", "1", "2000", "0",
                                        "-2000 spend:org:o:m:2026-11\n2000 balance\n-2000 balance:held\n"}));
    // A negative row cap blocks (0) rather than uncaps; its thresholds are 0.
    l.ceilings = {CeilingRow{0, 0, -1000}};
    const ReserveArgs neg = parse_reserve(reserve_command(l, Amounts{400, 9}, "r1", false));
    ASSERT_TRUE(neg.ok);
    EXPECT_EQ(neg.ceiling, (std::vector<std::vector<std::string>>{{"0", "0", "0.5=0"}}));
    // No rows left (none qualifies): still the ceiling's counter, decided to 0 by the script.
    l.ceilings.clear();
    const ReserveArgs none = parse_reserve(reserve_command(l, Amounts{400, 9}, "r1", false));
    ASSERT_TRUE(none.ok);
    EXPECT_EQ(none.rows, 0u);
    EXPECT_EQ(none.decided, 1u);
    EXPECT_EQ(none.keys.back(), "sc:{o}:cleared");
}

TEST(ReserveCommand, AFullLedgerFromThePolicy) {
    const auto policy = parse_policy(kPolicy, "test.yaml");
    const Ledger l = ledger_of(*policy, kHashA, "cust_42");
    const std::vector<std::string> argv = reserve_command(l, Amounts{5, 11}, "req-1", false);
    // Only the capped counters are sent (no balance, hold or ceiling here), in ledger order.
    const std::vector<std::size_t> capped = {0, 1, 2, 4, 5, 8, 10, 15, 22, 26, 28, 29, 30};
    for (std::size_t i = 0; i < l.counters.size(); ++i)
        EXPECT_EQ(l.counters[i].cap.has_value(), std::find(capped.begin(), capped.end(), i) != capped.end())
            << l.counters[i].key;
    const std::size_t n = capped.size();
    // the markers hashes: one per window of a capped spend counter (d, m, life)
    const std::size_t g = 3;
    ASSERT_EQ(argv.size(), 3 + (n + 5 + g) + 8 + 7 * n + 2 + (1 + n) + 6 + 1);
    EXPECT_EQ(argv[2], std::to_string(n + 5 + g));
    for (std::size_t k = 0; k < n; ++k) EXPECT_EQ(argv[3 + k], l.counters[capped[k]].key);
    // An uncapped counter appears nowhere in the argv.
    for (std::size_t i = 0; i < l.counters.size(); ++i) {
        if (!l.counters[i].cap) {
            EXPECT_EQ(std::find(argv.begin(), argv.end(), l.counters[i].key), argv.end()) << l.counters[i].key;
        }
    }
    EXPECT_EQ(std::vector<std::string>(argv.begin() + 3 + n, argv.begin() + 8 + n + g),
              (std::vector<std::string>{"sc:{acme}:reserved", "sc:{acme}:reserved:deadlines", "sc:{acme}:events",
                                        "sc:{acme}:config", "sc:{acme}:gone", "sc:{acme}:markers:d:2026-11-18",
                                        "sc:{acme}:markers:m:2026-11", "sc:{acme}:markers:life"}));
    EXPECT_EQ(std::vector<std::string>(argv.begin() + 8 + n + g, argv.begin() + 16 + n + g),
              (std::vector<std::string>{std::to_string(n), "1", "1", std::to_string(g), "900000", "req-1", "10", "1"}));
    const ReserveArgs a = parse_reserve(argv);
    ASSERT_TRUE(a.ok);
    ASSERT_EQ(a.fields.size(), n);
    // Each sent counter: its kind, what a request adds, its cap, its expiry.
    for (std::size_t k = 0; k < n; ++k) {
        const Counter &c = l.counters[capped[k]];
        const bool rate = c.kind == CounterKind::rpm || c.kind == CounterKind::tpm;
        EXPECT_EQ(a.fields[k][0], c.kind == CounterKind::spend ? "s" : rate ? "r" : "c") << c.key;
        const char *amount = c.kind == CounterKind::spend                                   ? "$"
                             : c.kind == CounterKind::tokens || c.kind == CounterKind::tpm ? "t"
                                                                                           : "1";
        EXPECT_EQ(a.fields[k][1], amount) << c.key;
        EXPECT_EQ(a.fields[k][2], std::to_string(*c.cap)) << c.key;
        EXPECT_EQ(a.fields[k][3], std::to_string(c.expire_at)) << c.key;
        EXPECT_EQ(a.fields[k][4].empty(), c.kind != CounterKind::spend) << c.key;  // thresholds of cost caps
        // a spend counter names the markers hash of its window and its label for events
        if (c.kind == CounterKind::spend) {
            ASSERT_NE(a.marks[k], "0") << c.key;
            EXPECT_EQ(a.keys[n + 5 + std::stoul(a.marks[k]) - 1], c.markers) << c.key;
            EXPECT_EQ(a.labels[k], c.label) << c.key;
        } else {
            EXPECT_EQ(a.marks[k], "0") << c.key;
            EXPECT_EQ(a.labels[k], "") << c.key;
        }
    }
    EXPECT_EQ(a.labels[0], "key key_prod_1 daily 2026-11-18");
    EXPECT_EQ(a.labels[2], "key key_prod_1 lifetime ");
    EXPECT_EQ(a.fields[0], (std::vector<std::string>{"s", "$", "2000000000", "1798070400",
                                                     "0.5=1000000000;0.8=1600000000"}));
    // Counter 5, the 5th sent: the key's daily tokens, capped at 100000.
    ASSERT_EQ(a.keys[4], "sc:{acme}:tokens:key:key_prod_1:d:2026-11-18");
    EXPECT_EQ(a.fields[4], (std::vector<std::string>{"c", "t", "100000", "1798070400", ""}));
    // The customer's monthly spend, an override's cap, and the rates.
    ASSERT_EQ(a.keys[8], "sc:{acme}:spend:customer:cust_42:m:2026-11");
    EXPECT_EQ(a.fields[8], (std::vector<std::string>{"s", "$", "5000000000", "1830643200",
                                                     "0.5=2500000000;0.8=4000000000"}));
    EXPECT_EQ(a.fields[11], (std::vector<std::string>{"r", "t", "900", std::to_string(kMinuteExpire), ""}));
    EXPECT_EQ(a.fields[12], (std::vector<std::string>{"r", "1", "30", std::to_string(kMinuteExpire), ""}));
    EXPECT_EQ(a.rows, 0u);
    EXPECT_EQ(a.decided, 0u);
    ASSERT_EQ(a.chains.size(), 1u);
    std::vector<std::size_t> all(n);
    for (std::size_t k = 0; k < n; ++k) all[k] = k + 1;
    EXPECT_EQ(a.chains[0], all);
    ASSERT_EQ(a.items.size(), 1u);
    EXPECT_EQ(std::vector<std::string>(a.items[0].begin(), a.items[0].begin() + 5),
              (std::vector<std::string>{"req-1", "0", "1", "5", "11"}));
    // One line per checked counter (a cap, rates included), in ledger order.
    EXPECT_EQ(a.items[0][5], "-5 spend:key:key_prod_1:d:2026-11-18\n"
                             "-5 spend:key:key_prod_1:m:2026-11\n"
                             "-5 spend:key:key_prod_1:life\n"
                             "-1 reqs:key:key_prod_1:m:2026-11\n"
                             "-11 tokens:key:key_prod_1:d:2026-11-18\n"
                             "-5 spend:project:acme-prod:m:2026-11\n"
                             "-1 reqs:project:acme-prod:d:2026-11-18\n"
                             "-5 spend:org:acme:m:2026-11\n"
                             "-5 spend:customer:cust_42:m:2026-11\n"
                             "-11 tokens:customer:cust_42:d:2026-11-18\n"
                             "-1 rate:key:key_prod_1:rpm:2026-11-18T11:06\n"
                             "-11 rate:org:acme:tpm:2026-11-18T11:06\n"
                             "-1 rate:customer:cust_42:rpm:2026-11-18T11:06\n");
    EXPECT_EQ(a.items[0][5], argv[argv.size() - 2]);
}

TEST(ReserveCommand, APrepaidPlanLedgerFromThePolicy) {
    const auto policy = parse_policy(kPlanPolicy, "plans.yaml");
    const Ledger l = ledger_of(*policy, std::string(64, 'a'));
    ASSERT_EQ(l.ceiling_counter, std::optional<std::size_t>(15));
    // Sent: the ceiling's counter, the balance, the org's rpm, the hold.
    const ReserveArgs a = parse_reserve(reserve_command(l, Amounts{7, 3}, "r", false));
    ASSERT_TRUE(a.ok);
    EXPECT_EQ(a.keys, (std::vector<std::string>{
                          "sc:{acme}:spend:org:acme:m:2026-11", "sc:{acme}:balance",
                          "sc:{acme}:rate:org:acme:rpm:2026-11-18T11:06", "sc:{acme}:balance:held",
                          "sc:{acme}:reserved", "sc:{acme}:reserved:deadlines", "sc:{acme}:events",
                          "sc:{acme}:config", "sc:{acme}:gone", "sc:{acme}:markers:m:2026-11", "sc:{acme}:cleared"}));
    EXPECT_EQ(a.fields, (std::vector<std::vector<std::string>>{
                            {"s", "$", "", "1830643200", ""},
                            {"b", "-", "", "0", ""},
                            {"r", "1", "10", std::to_string(kMinuteExpire), ""},
                            {"h", "$", "", "0", ""}}));
    EXPECT_EQ(a.decided, 1u);
    EXPECT_EQ(a.ceiling, (std::vector<std::vector<std::string>>{
                             {"0", "100000000000", "0.5=50000000000"},
                             {"100000000000", "1000000000000", "0.5=500000000000"}}));
    EXPECT_EQ(a.chains, (std::vector<std::vector<std::size_t>>{{1, 2, 3, 4}}));
    EXPECT_EQ(a.items[0][5], "-7 spend:org:acme:m:2026-11\n7 balance\n-1 rate:org:acme:rpm:2026-11-18T11:06\n"
                             "-7 balance:held\n");
}

// A policy: org acme (its limits `org`), project p (`project`), key k1 with
// only a monthly_usd cap.
std::string monthly_only_policy(const std::string &project, const std::string &org) {
    std::string y = "models:\n  m: { input: 1, output: 2 }\norgs:\n  acme:\n";
    if (!org.empty()) y += "    limits: " + org + "\n";
    y += "projects:\n  p:\n    org: acme\n";
    if (!project.empty()) y += "    limits: " + project + "\n";
    y += std::string("keys:\n  - id: k1\n    sha256: ") + kHashA + "\n    project: p\n    limits: { monthly_usd: 10 }\n";
    return y;
}

TEST(ReserveCommand, TheReleaseRecordHasALineForEachCheckedCounterOnly) {
    // `m`: how many counters are checked, hence sent (of the ledger's 21).
    auto record = [&](const std::string &project, const std::string &org, std::size_t m) {
        const auto policy = parse_policy(monthly_only_policy(project, org), "test.yaml");
        const Ledger l = ledger_of(*policy, kHashA);
        EXPECT_EQ(l.counters.size(), 21u);
        const std::vector<std::string> argv = reserve_command(l, Amounts{700, 30}, "r", false);
        const ReserveArgs a = parse_reserve(argv);
        EXPECT_TRUE(a.ok);
        const std::size_t g = a.markers;  // the spend counters' windows
        EXPECT_EQ(argv.size(), 3 + (m + 5 + g) + 8 + 7 * m + 2 + (1 + m) + 6 + 1);
        EXPECT_EQ(argv.size() > 2 ? argv[2] : "", std::to_string(m + 5 + g));
        EXPECT_EQ(a.counters, m);
        return argv.empty() ? std::string("(none)") : argv[argv.size() - 2];
    };
    // The key's monthly spend alone.
    EXPECT_EQ(record("", "", 1), "-700 spend:key:k1:m:2026-11\n");
    // Project and org counters only where capped.
    EXPECT_EQ(record("{ monthly_usd: 50 }", "", 2),
              "-700 spend:key:k1:m:2026-11\n-700 spend:project:p:m:2026-11\n");
    EXPECT_EQ(record("", "{ daily_requests: 10, monthly_tokens: 99 }", 3),
              "-700 spend:key:k1:m:2026-11\n-1 reqs:org:acme:d:2026-11-18\n-30 tokens:org:acme:m:2026-11\n");
    EXPECT_EQ(record("{ lifetime_usd: 50 }", "{ daily_usd: 20 }", 3),
              "-700 spend:key:k1:m:2026-11\n-700 spend:project:p:life\n-700 spend:org:acme:d:2026-11-18\n");
}

TEST(ReserveCommand, TheReleaseRecordLeavesOutACounterItDoesNotChange) {
    const Ledger l = small_ledger();
    // No tokens, no cost: only the request counter changes.
    const ReserveArgs a = parse_reserve(reserve_command(l, Amounts{0, 0}, "r", false));
    ASSERT_TRUE(a.ok);
    EXPECT_EQ(a.counters, 2u);  // still sent: checked
    EXPECT_EQ(a.items[0][5], "-1 reqs:key:k1:m:2026-11\n");
}

TEST(ReserveCommand, AnUncappedCounterGetsNoKeysAndNoArgv) {
    const auto policy = parse_policy(monthly_only_policy("", ""), "test.yaml");
    const Ledger l = ledger_of(*policy, kHashA);
    ASSERT_EQ(l.counters.size(), 21u);
    std::size_t monthly = l.counters.size();
    for (std::size_t i = 0; i < l.counters.size(); ++i) {
        if (l.counters[i].key == "sc:{acme}:spend:key:k1:m:2026-11") monthly = i;
        else EXPECT_FALSE(l.counters[i].cap.has_value()) << l.counters[i].key;
    }
    ASSERT_EQ(monthly, 1u);  // not first in the ledger: its ledger index differs from its place sent
    ASSERT_FALSE(l.ceiling_counter.has_value());
    ASSERT_FALSE(l.balance.has_value());
    const std::vector<std::string> argv = reserve_command(l, Amounts{700, 30}, "r", false);
    // numkeys: the one capped counter + the org's reservations, their
    // deadlines, the events, the config version, the gone batches, and the
    // markers hash of its window.
    EXPECT_EQ(argv, (std::vector<std::string>{
                        "EVALSHA", scripts::reserve().sha1, "7",
                        "sc:{acme}:spend:key:k1:m:2026-11", "sc:{acme}:reserved", "sc:{acme}:reserved:deadlines",
                        "sc:{acme}:events", "sc:{acme}:config", "sc:{acme}:gone", "sc:{acme}:markers:m:2026-11",
                        "1", "1", "1", "1", "900000", "r", "10", "1",
                        "s", "$", "10000000000", "1830643200", "", "1", "key k1 monthly 2026-11",  // no warn_at here
                        "0", "0",
                        "1", "1",
                        "r", "0", "1", "700", "30", "-700 spend:key:k1:m:2026-11\n", ""}));
    for (std::size_t i = 0; i < l.counters.size(); ++i) {
        if (i != monthly) {
            EXPECT_EQ(std::find(argv.begin(), argv.end(), l.counters[i].key), argv.end()) << l.counters[i].key;
        }
    }

    // The reply numbers that counter 1 and has one "after": decoded, it is ledger counter 1.
    ReserveOutcome o = decode_reserve_reply(l, {0, 1, 9'500'000'000, 0});
    ASSERT_EQ(o.kind, ReserveOutcome::Kind::blocked) << o.error;
    EXPECT_EQ(o.refused_by, std::optional<std::size_t>(monthly));
    EXPECT_EQ(blocked_by_label(cap_ref(l, *o.refused_by)), "key:monthly");
    o = decode_reserve_reply(l, {1, 0, 0, 0, 9'000'000'000});
    ASSERT_EQ(o.kind, ReserveOutcome::Kind::allowed) << o.error;
    EXPECT_FALSE(o.refused_by.has_value());
    EXPECT_EQ(o.tightest_index, std::optional<std::size_t>(monthly));
    EXPECT_EQ(o.tightest_cap, 10 * kUsd);
    EXPECT_EQ(o.tightest_remaining, kUsd);
    o = decode_reserve_reply(l, {1, 1, 9'000'000'000, 0, 10'500'000'000});  // a dry run past the cap
    ASSERT_EQ(o.kind, ReserveOutcome::Kind::allowed) << o.error;
    EXPECT_EQ(o.refused_by, std::optional<std::size_t>(monthly));
    EXPECT_EQ(o.tightest_index, std::optional<std::size_t>(monthly));
    // An "after" per ledger counter, or a counter number past the one sent, is malformed.
    std::vector<long long> per_ledger_counter = {1, 0, 0, 0};
    per_ledger_counter.resize(4 + l.counters.size(), 0);
    EXPECT_EQ(decode_reserve_reply(l, per_ledger_counter).kind, ReserveOutcome::Kind::error);
    EXPECT_EQ(decode_reserve_reply(l, {0, 2, 0, 0}).kind, ReserveOutcome::Kind::error);
}

TEST(ReserveCommand, NegativeAmountsNeverLoosenCaps) {
    Ledger l;
    l.org = "o";
    l.counters = {counter(CounterKind::spend, Scope::org, Window::monthly, "sc:{o}:k", -7, 0)};
    const std::vector<std::string> argv = reserve_command(l, Amounts{-100, -3}, "r", false);
    const ReserveArgs a = parse_reserve(argv);
    ASSERT_TRUE(a.ok);
    ASSERT_EQ(argv.size(), 3u + 6 + 8 + 7 + 2 + 2 + 6 + 1);
    EXPECT_EQ(a.fields[0], (std::vector<std::string>{"s", "$", "0", "0", ""}));  // a negative cap counts as 0
    // The estimate counts as 0 (never a negative delta), so the record has nothing to give back.
    EXPECT_EQ(a.items[0], (std::vector<std::string>{"r", "0", "1", "0", "0", ""}));
}

TEST(ReserveCommand, ExtremeCapsAndEstimates) {
    Ledger l;
    l.org = "o";
    l.counters = {counter(CounterKind::spend, Scope::org, Window::monthly, "sc:{o}:k", kMax, 0)};
    ReserveArgs a = parse_reserve(reserve_command(l, Amounts{kMax, kMax}, "r", false));
    ASSERT_TRUE(a.ok);
    EXPECT_EQ(a.fields[0][2], "9223372036854775807");  // the cap as it is: the script adds exactly
    EXPECT_EQ(a.items[0], (std::vector<std::string>{"r", "0", "1", "9223372036854775807", "9223372036854775807",
                                                    "-9223372036854775807 k\n"}));  // never INT64_MIN
    l.counters[0].cap = 0;
    a = parse_reserve(reserve_command(l, Amounts{kMax, 0}, "r", false));
    ASSERT_TRUE(a.ok);
    EXPECT_EQ(a.fields[0][2], "0");
    l.counters[0].cap = std::numeric_limits<std::int64_t>::min();
    a = parse_reserve(reserve_command(l, Amounts{1, 0}, "r", false));
    ASSERT_TRUE(a.ok);
    EXPECT_EQ(a.fields[0][2], "0");
    // A negative expire_at is never (0).
    l.counters[0].expire_at = -5;
    a = parse_reserve(reserve_command(l, Amounts{1, 0}, "r", false));
    ASSERT_TRUE(a.ok);
    EXPECT_EQ(a.fields[0][3], "0");
}

TEST(ReserveCommand, NoCountersIsAnError) {
    Ledger l;
    l.org = "acme";
    EXPECT_TRUE(reserve_command(l, Amounts{5, 5}, "r", false).empty());
    EXPECT_TRUE(settle_command(l, Amounts{5, 5}, Amounts{5, 5}, "r", std::nullopt).empty());
}

// ---------------------------------------------------------------------------
// reserve_batch_command

TEST(ReserveBatchCommand, TwoRequestsOfOneKeyShareOneChainAndEachCounterIsSentOnce) {
    const auto l = shared(small_ledger());
    const std::vector<std::string> argv = reserve_batch_command(
        {ReserveItem{l, Amounts{100, 5}, "a", false}, ReserveItem{l, Amounts{200, 7}, "b", true}}, "a");
    EXPECT_EQ(argv, (std::vector<std::string>{
                        "EVALSHA", scripts::reserve().sha1, "7",
                        "sc:{acme}:spend:key:k1:d:2026-11-18", "sc:{acme}:reqs:key:k1:m:2026-11",
                        "sc:{acme}:reserved", "sc:{acme}:reserved:deadlines", "sc:{acme}:events",
                        "sc:{acme}:config", "sc:{acme}:gone",
                        "2", "2", "1", "0", "900000", "a", "10", "1",
                        "s", "$", "2000000000", "1798070400", "0.5=1000000000", "0", "",
                        "c", "1", "100", "1830643200", "", "0", "",
                        "0", "0",
                        "2", "1", "2",
                        // each request its own dry run, the one chain, its estimate and record
                        "a", "0", "1", "100", "5", "-100 spend:key:k1:d:2026-11-18\n-1 reqs:key:k1:m:2026-11\n",
                        "b", "1", "1", "200", "7", "-200 spend:key:k1:d:2026-11-18\n-1 reqs:key:k1:m:2026-11\n", ""}));
    // The batch id is the batch's, whatever the requests' ids; with
    // check_due off (sent again after giving back due reservations) only
    // that flag differs.
    const ReserveArgs other = parse_reserve(reserve_batch_command(
        {ReserveItem{l, Amounts{100, 5}, "a", false}, ReserveItem{l, Amounts{200, 7}, "b", true}}, "batch-9"));
    ASSERT_TRUE(other.ok);
    EXPECT_EQ(other.batch, "batch-9");
    EXPECT_EQ(other.check_due, "1");
    std::vector<std::string> again = reserve_batch_command(
        {ReserveItem{l, Amounts{100, 5}, "a", false}, ReserveItem{l, Amounts{200, 7}, "b", true}}, "a",
        kDefaultReservationTtlMs, false);
    ASSERT_EQ(again.size(), argv.size());
    EXPECT_EQ(again[17], "0");
    again[17] = "1";
    EXPECT_EQ(again, argv);
    // Two copies of one ledger are two chains over the same counters.
    const ReserveArgs copies = parse_reserve(reserve_batch_command(
        {ReserveItem{l, Amounts{100, 5}, "a", false}, ReserveItem{shared(*l), Amounts{200, 7}, "b", false}}, "a"));
    ASSERT_TRUE(copies.ok);
    EXPECT_EQ(copies.counters, 2u);
    EXPECT_EQ(copies.chains, (std::vector<std::vector<std::size_t>>{{1, 2}, {1, 2}}));
    EXPECT_EQ(copies.items[1][2], "2");
}

const char *kTwoKeysPolicy = R"(models:
  m: { input: 1, output: 2 }
warn_at: [0.5]
orgs:
  acme:
    limits: { monthly_usd: 1000, rpm: 100 }
projects:
  p:
    org: acme
    limits: { monthly_usd: 50 }
keys:
  - { id: k1, sha256: e0f45c82d6ca5ee6f54cc819900039a64d865a336bec00b8ff16a10e40033839, project: p, limits: { daily_usd: 2 } }
  - { id: k2, sha256: 1111111111111111111111111111111111111111111111111111111111111111, project: p, limits: { monthly_requests: 9 } }
)";

TEST(ReserveBatchCommand, TwoKeysOfOneOrgHaveTwoChainsSharingTheProjectAndOrgCounters) {
    const auto policy = parse_policy(kTwoKeysPolicy, "test.yaml");
    const auto k1 = shared(ledger_of(*policy, kHashA));
    const auto k2 = shared(ledger_of(*policy, std::string(64, '1')));
    const std::vector<std::string> argv =
        reserve_batch_command({ReserveItem{k1, Amounts{10, 1}, "r1", false}, ReserveItem{k2, Amounts{20, 2}, "r2", false},
                               ReserveItem{k1, Amounts{30, 3}, "r3", false}},
                              "r1");
    const ReserveArgs a = parse_reserve(argv);
    ASSERT_TRUE(a.ok);
    // The counters in the order first met: k1's chain, then k2's own counter.
    EXPECT_EQ(a.keys, (std::vector<std::string>{
                          "sc:{acme}:spend:key:k1:d:2026-11-18", "sc:{acme}:spend:project:p:m:2026-11",
                          "sc:{acme}:spend:org:acme:m:2026-11", "sc:{acme}:rate:org:acme:rpm:2026-11-18T11:06",
                          "sc:{acme}:reqs:key:k2:m:2026-11",
                          "sc:{acme}:reserved", "sc:{acme}:reserved:deadlines", "sc:{acme}:events",
                          "sc:{acme}:config", "sc:{acme}:gone",
                          // the markers of the spend counters' windows, each once
                          "sc:{acme}:markers:d:2026-11-18", "sc:{acme}:markers:m:2026-11"}));
    EXPECT_EQ(a.fields, (std::vector<std::vector<std::string>>{
                            {"s", "$", "2000000000", "1798070400", "0.5=1000000000"},
                            {"s", "$", "50000000000", "1830643200", "0.5=25000000000"},
                            {"s", "$", "1000000000000", "1830643200", "0.5=500000000000"},
                            {"r", "1", "100", std::to_string(kMinuteExpire), ""},
                            {"c", "1", "9", "1830643200", ""}}));
    EXPECT_EQ(a.requests, 3u);
    // Each key's chain in its own check order: k2's requests counter comes
    // before the project's and org's (key scope first), the rate last.
    EXPECT_EQ(a.chains, (std::vector<std::vector<std::size_t>>{{1, 2, 3, 4}, {5, 2, 3, 4}}));
    ASSERT_EQ(a.items.size(), 3u);
    EXPECT_EQ(a.items[0], (std::vector<std::string>{"r1", "0", "1", "10", "1",
                                                    "-10 spend:key:k1:d:2026-11-18\n-10 spend:project:p:m:2026-11\n"
                                                    "-10 spend:org:acme:m:2026-11\n"
                                                    "-1 rate:org:acme:rpm:2026-11-18T11:06\n"}));
    EXPECT_EQ(a.items[1], (std::vector<std::string>{"r2", "0", "2", "20", "2",
                                                    "-1 reqs:key:k2:m:2026-11\n-20 spend:project:p:m:2026-11\n"
                                                    "-20 spend:org:acme:m:2026-11\n"
                                                    "-1 rate:org:acme:rpm:2026-11-18T11:06\n"}));
    EXPECT_EQ(std::vector<std::string>(a.items[2].begin(), a.items[2].begin() + 3),
              (std::vector<std::string>{"r3", "0", "1"}));
    // A shared counter appears once among the KEYS.
    EXPECT_EQ(std::count(argv.begin(), argv.end(), "sc:{acme}:spend:project:p:m:2026-11"), 1);
}

TEST(ReserveBatchCommand, ItemsOfTwoOrgsAreRefused) {
    Ledger other = small_ledger();
    other.org = "zeta";
    for (Counter &c : other.counters) c.key.replace(0, 9, "sc:{zeta}");
    const auto acme = shared(small_ledger());
    EXPECT_FALSE(reserve_batch_command({ReserveItem{acme, Amounts{1, 1}, "a", false}}, "a").empty());
    EXPECT_FALSE(reserve_batch_command({ReserveItem{shared(other), Amounts{1, 1}, "a", false}}, "a").empty());
    EXPECT_TRUE(reserve_batch_command(
                    {ReserveItem{acme, Amounts{1, 1}, "a", false}, ReserveItem{shared(other), Amounts{1, 1}, "b", false}},
                    "a")
                    .empty());
    EXPECT_TRUE(reserve_batch_command(
                    {ReserveItem{shared(other), Amounts{1, 1}, "a", false}, ReserveItem{acme, Amounts{1, 1}, "b", false}},
                    "a")
                    .empty());
}

TEST(ReserveBatchCommand, ANullOrEmptyLedgerOrAnEmptyIdIsRefused) {
    const auto l = shared(small_ledger());
    EXPECT_TRUE(reserve_batch_command({}, "a").empty());
    EXPECT_TRUE(reserve_batch_command({ReserveItem{nullptr, Amounts{1, 1}, "a", false}}, "a").empty());
    EXPECT_TRUE(reserve_batch_command(
                    {ReserveItem{l, Amounts{1, 1}, "a", false}, ReserveItem{nullptr, Amounts{1, 1}, "b", false}}, "a")
                    .empty());
    Ledger empty;
    empty.org = "acme";
    EXPECT_TRUE(reserve_batch_command({ReserveItem{shared(empty), Amounts{1, 1}, "a", false}}, "a").empty());
    EXPECT_TRUE(reserve_batch_command(
                    {ReserveItem{l, Amounts{1, 1}, "a", false}, ReserveItem{shared(empty), Amounts{1, 1}, "b", false}},
                    "a")
                    .empty());
    // An empty batch id, or an empty request id.
    EXPECT_TRUE(reserve_batch_command({ReserveItem{l, Amounts{1, 1}, "a", false}}, "").empty());
    EXPECT_TRUE(reserve_batch_command(
                    {ReserveItem{l, Amounts{1, 1}, "a", false}, ReserveItem{l, Amounts{1, 1}, "", false}}, "a")
                    .empty());
}

TEST(ReserveBatchCommand, DryRunIsPerRequest) {
    const auto l = shared(small_ledger());
    for (const bool first : {false, true})
        for (const bool second : {false, true}) {
            const ReserveArgs a = parse_reserve(reserve_batch_command(
                {ReserveItem{l, Amounts{1, 1}, "a", first}, ReserveItem{l, Amounts{1, 1}, "b", second}}, "a"));
            ASSERT_TRUE(a.ok);
            EXPECT_EQ(a.items[0][1], first ? "1" : "0");
            EXPECT_EQ(a.items[1][1], second ? "1" : "0");
        }
}

TEST(ReserveBatchCommand, TheCeilingSectionComesFromTheLedgerThatHasIt) {
    // `plain`: a key of the org whose ledger knows no ceiling; `planned`: one
    // whose ledger has the plan's rows on the org's monthly counter.
    Ledger plain;
    plain.org = "o";
    plain.periods = periods_at(kNow);
    plain.warn_at = {fraction("0.5", 500'000'000)};
    plain.counters = {counter(CounterKind::spend, Scope::key, Window::daily, "sc:{o}:spend:key:a:d:2026-11-18", 100,
                              kDayExpire)};
    Ledger planned = plain;
    planned.counters = {
        counter(CounterKind::spend, Scope::key, Window::daily, "sc:{o}:spend:key:b:d:2026-11-18", 200, kDayExpire),
        counter(CounterKind::spend, Scope::org, Window::monthly, "sc:{o}:spend:org:o:m:2026-11", std::nullopt,
                kMonthExpire)};
    planned.ceiling_counter = 1;
    planned.ceilings = {CeilingRow{0, 0, 1000}, CeilingRow{50, 0, 3000}};
    const auto p = shared(plain), q = shared(planned);

    ReserveArgs a = parse_reserve(reserve_batch_command(
        {ReserveItem{p, Amounts{5, 0}, "a", false}, ReserveItem{q, Amounts{6, 0}, "b", false}}, "a"));
    ASSERT_TRUE(a.ok);
    EXPECT_EQ(a.keys, (std::vector<std::string>{"sc:{o}:spend:key:a:d:2026-11-18", "sc:{o}:spend:key:b:d:2026-11-18",
                                                "sc:{o}:spend:org:o:m:2026-11", "sc:{o}:reserved",
                                                "sc:{o}:reserved:deadlines", "sc:{o}:events", "sc:{o}:config",
                                                "sc:{o}:gone", "sc:{o}:cleared"}));
    EXPECT_EQ(a.rows, 2u);
    EXPECT_EQ(a.decided, 3u);  // the org's monthly counter's place in the batch
    EXPECT_EQ(a.ceiling, (std::vector<std::vector<std::string>>{{"0", "1000", "0.5=500"}, {"50", "3000", "0.5=1500"}}));
    EXPECT_EQ(a.fields[2], (std::vector<std::string>{"s", "$", "", "1830643200", ""}));
    EXPECT_EQ(a.chains, (std::vector<std::vector<std::size_t>>{{1}, {2, 3}}));

    // The other way round: the counter is the second sent.
    a = parse_reserve(reserve_batch_command(
        {ReserveItem{q, Amounts{6, 0}, "b", false}, ReserveItem{p, Amounts{5, 0}, "a", false}}, "b"));
    ASSERT_TRUE(a.ok);
    EXPECT_EQ(a.decided, 2u);
    EXPECT_EQ(a.rows, 2u);
    EXPECT_EQ(a.keys.back(), "sc:{o}:cleared");
    EXPECT_EQ(a.chains, (std::vector<std::vector<std::size_t>>{{1, 2}, {3}}));

    // Without the planned ledger: no ceiling section, no cleared key.
    a = parse_reserve(reserve_batch_command({ReserveItem{p, Amounts{5, 0}, "a", false}}, "a"));
    ASSERT_TRUE(a.ok);
    EXPECT_EQ(a.rows, 0u);
    EXPECT_EQ(a.decided, 0u);
    EXPECT_EQ(a.keys.back(), "sc:{o}:gone");
}

// ---------------------------------------------------------------------------
// settle_command / settle_batch_command

// A settle argv taken apart (settle.lua's header): KEYS are C counters, the
// events stream, the deadlines, sc:{ORG}:settlements, the reservations,
// settled, released, gone, the low_balance marker and G markers hashes;
// ARGV is C, M, G, the prefix's length, 7 fields per counter, low_balance
// and the balance / held indexes, then each request's id, batch id, reserve
// answered, and its corrections ("INDEX DELTA\n").
struct SettleArgs {
    std::size_t counters = 0, requests = 0, markers = 0;
    std::string prefix_length;
    std::vector<std::string> keys;
    std::vector<std::vector<std::string>> fields;  // per counter: kind, delta, expire_at, cap, warn
    std::vector<std::string> marks, labels;        // per counter: its markers hash (index), its label
    std::vector<std::string> low;                  // low_balance, balance index, held index
    std::vector<std::string> ids, batches, answered;
    std::vector<std::map<std::size_t, std::int64_t>> corrections;  // per request: counter (0-based) -> delta
    bool ok = false;  // every part where it should be, nothing left over
};

SettleArgs parse_settle(const std::vector<std::string> &argv) {
    SettleArgs a;
    if (argv.size() < 3 || argv[0] != "EVALSHA" || argv[1] != scripts::settle().sha1) return a;
    const std::size_t numkeys = std::stoul(argv[2]);
    std::size_t p = 3 + numkeys;
    if (p + 4 > argv.size()) return a;
    a.keys.assign(argv.begin() + 3, argv.begin() + static_cast<std::ptrdiff_t>(p));
    a.counters = std::stoul(argv[p]);
    a.requests = std::stoul(argv[p + 1]);
    a.markers = std::stoul(argv[p + 2]);
    a.prefix_length = argv[p + 3];
    if (numkeys != a.counters + 8 + a.markers) return a;
    p += 4;
    if (p + 8 * a.counters + 3 > argv.size()) return a;
    for (std::size_t i = 0; i < a.counters; ++i, p += 8) {
        a.fields.emplace_back(argv.begin() + static_cast<std::ptrdiff_t>(p),
                              argv.begin() + static_cast<std::ptrdiff_t>(p + 5));
        a.marks.push_back(argv[p + 5]);
        a.labels.push_back(argv[p + 6]);
        if (std::stoul(argv[p + 5]) > a.markers) return a;
    }
    a.low.assign(argv.begin() + static_cast<std::ptrdiff_t>(p), argv.begin() + static_cast<std::ptrdiff_t>(p + 3));
    p += 3;
    for (std::size_t j = 0; j < a.requests; ++j) {
        if (p + 4 > argv.size()) return a;
        a.ids.push_back(argv[p]);
        a.batches.push_back(argv[p + 1]);
        a.answered.push_back(argv[p + 2]);
        if (argv[p + 2] != "0" && argv[p + 2] != "1") return a;
        // "INDEX DELTA\n" lines
        std::istringstream lines(argv[p + 3]);
        p += 4;
        std::map<std::size_t, std::int64_t> c;
        std::string line;
        while (std::getline(lines, line)) {
            std::istringstream fields(line);
            std::size_t index = 0;
            std::int64_t delta = 0;
            std::string rest;
            if (!(fields >> index >> delta) || (fields >> rest)) return a;
            if (index < 1 || index > a.counters || c.count(index - 1)) return a;  // 1-based, each once
            c[index - 1] = delta;
        }
        if (!argv[p - 1].empty() && argv[p - 1].back() != '\n') return a;
        a.corrections.push_back(c);
    }
    // Last, whether it was sent before: "0" as built (the glue turns it to "1").
    if (p + 1 != argv.size() || argv[p] != kFirstSend) return a;
    a.ok = true;
    return a;
}

// What counter i gets from request j when its reservation is no longer
// recorded: the delta if reserved plus the request's correction.
std::int64_t if_unreserved(const SettleArgs &a, std::size_t i, std::size_t j = 0) {
    const auto it = a.corrections.at(j).find(i);
    return std::stoll(a.fields.at(i).at(1)) + (it == a.corrections.at(j).end() ? 0 : it->second);
}

SettleItem settle_item(std::shared_ptr<const Ledger> ledger, Amounts estimate, Amounts real, std::string id,
                       std::optional<Nanos> ceiling_cap = std::nullopt, std::string batch = "",
                       bool answered = true) {
    if (batch.empty()) batch = id;
    return SettleItem{std::move(ledger), estimate, real, std::move(id), ceiling_cap, std::move(batch), answered};
}

TEST(SettleCommand, ArgvShape) {
    const Ledger l = small_ledger();
    EXPECT_EQ(settle_command(l, Amounts{300'000'000, 40}, Amounts{100'000'000, 30}, "rid", std::nullopt),
              (std::vector<std::string>{
                  // every counter of the ledger, checked or not
                  "EVALSHA", scripts::settle().sha1, "11",
                  "sc:{acme}:spend:key:k1:d:2026-11-18", "sc:{acme}:reqs:key:k1:m:2026-11",
                  "sc:{acme}:spend:key:k1:life", "sc:{acme}:events", "sc:{acme}:reserved:deadlines",
                  "sc:{acme}:settlements", "sc:{acme}:reserved", "sc:{acme}:settled", "sc:{acme}:released",
                  "sc:{acme}:gone", "sc:{acme}:low_balance",
                  "3", "1", "0", "10",
                  // kind, delta if reserved, expire_at, cap, warn thresholds (fraction=threshold),
                  // markers hash (0: these counters have no label), label
                  "c", "-200000000", "1798070400", "2000000000", "0.5=1000000000", "0", "", "",
                  "c", "0", "1830643200", "", "", "0", "", "",  // a request cap is no cost cap: no warnings
                  // uncapped: nothing was reserved, so the real cost either way
                  "c", "100000000", "0", "", "", "0", "", "",
                  "", "0", "0",
                  // the request, its batch (its own id), reserve answered, and what it adds
                  // on top when not reserved: the spend -200000000 + 300000000 = the real
                  // 100000000, the request 0 + 1; the uncapped counter needs no correction
                  "rid", "rid", "1", "1 300000000\n2 1\n", "0"}));
    // A request refused before the provider (real.requests = 0): its
    // reserved request is taken back, and without a reservation it adds none.
    const std::vector<std::string> refused =
        settle_command(l, Amounts{300'000'000, 40}, Amounts{100'000'000, 30, 0}, "rid", std::nullopt);
    EXPECT_EQ(std::vector<std::string>(refused.begin() + 26, refused.begin() + 31),
              (std::vector<std::string>{"c", "-1", "1830643200", "", ""}));
    EXPECT_EQ(std::vector<std::string>(refused.begin() + 45, refused.end()),
              (std::vector<std::string>{"rid", "rid", "1", "1 300000000\n2 1\n", "0"}));  // -1 + 1 = 0
    // Nothing at all: every reserved delta comes back, nothing is added (the
    // uncapped counter, never reserved, is not written at all).
    const std::vector<std::string> nothing =
        settle_command(l, Amounts{300'000'000, 40}, Amounts{0, 0, 0}, "rid", std::nullopt);
    EXPECT_EQ(std::vector<std::string>(nothing.begin() + 18, nothing.end()),
              (std::vector<std::string>{
                  "c", "-300000000", "1798070400", "2000000000", "0.5=1000000000", "0", "", "",
                  "c", "-1", "1830643200", "", "", "0", "", "",
                  "c", "0", "0", "", "", "0", "", "",
                  "", "0", "0",
                  "rid", "rid", "1", "1 300000000\n2 1\n", "0"}));  // unreserved: 0 everywhere
    // requests is 0 or 1: more counts as 1, less as 0.
    EXPECT_EQ(settle_command(l, Amounts{1, 1}, Amounts{1, 1, 7}, "rid", std::nullopt),
              settle_command(l, Amounts{1, 1}, Amounts{1, 1, 1}, "rid", std::nullopt));
    EXPECT_EQ(settle_command(l, Amounts{1, 1}, Amounts{1, 1, -7}, "rid", std::nullopt),
              settle_command(l, Amounts{1, 1}, Amounts{1, 1, 0}, "rid", std::nullopt));
    // The estimate's requests are always 1 (the reserve counted one).
    EXPECT_EQ(settle_command(l, Amounts{1, 1, 0}, Amounts{1, 1}, "rid", std::nullopt),
              settle_command(l, Amounts{1, 1, 1}, Amounts{1, 1}, "rid", std::nullopt));
    // A batch of one whose reserve's batch is its own id.
    EXPECT_EQ(settle_batch_command({settle_item(shared(l), Amounts{300'000'000, 40}, Amounts{100'000'000, 30}, "rid")}),
              settle_command(l, Amounts{300'000'000, 40}, Amounts{100'000'000, 30}, "rid", std::nullopt));
    const SettleArgs a = parse_settle(settle_command(l, Amounts{1, 1}, Amounts{1, 1}, "rid", std::nullopt));
    ASSERT_TRUE(a.ok);
    EXPECT_EQ(a.keys.size(), 11u);
}

TEST(SettleCommand, AReserveNotAnsweredIsSaidSo) {
    const Ledger l = small_ledger();
    const SettleArgs answered =
        parse_settle(settle_command(l, Amounts{300, 4}, Amounts{100, 3}, "rid", std::nullopt));
    const SettleArgs lost =
        parse_settle(settle_command(l, Amounts{300, 4}, Amounts{100, 3}, "rid", std::nullopt, false));
    ASSERT_TRUE(answered.ok);
    ASSERT_TRUE(lost.ok);
    EXPECT_EQ(answered.answered, (std::vector<std::string>{"1"}));
    EXPECT_EQ(lost.answered, (std::vector<std::string>{"0"}));
    EXPECT_EQ(lost.batches, (std::vector<std::string>{"rid"}));
    // Everything else is the same.
    EXPECT_EQ(lost.fields, answered.fields);
    EXPECT_EQ(lost.corrections, answered.corrections);
    // No reserve sent (batch ""): never answered, whatever the item says.
    const SettleArgs unsent = parse_settle(settle_batch_command(
        {SettleItem{shared(l), Amounts{300, 4}, Amounts{100, 3}, "rid", std::nullopt, "", true}}));
    ASSERT_TRUE(unsent.ok);
    EXPECT_EQ(unsent.batches, (std::vector<std::string>{""}));
    EXPECT_EQ(unsent.answered, (std::vector<std::string>{"0"}));
    const SettleArgs other_batch = parse_settle(settle_batch_command(
        {SettleItem{shared(l), Amounts{300, 4}, Amounts{100, 3}, "rid", std::nullopt, "first-rid", true}}));
    ASSERT_TRUE(other_batch.ok);
    EXPECT_EQ(other_batch.batches, (std::vector<std::string>{"first-rid"}));
    EXPECT_EQ(other_batch.answered, (std::vector<std::string>{"1"}));
}

TEST(SettleCommand, AnUncheckedCounterGetsTheRealAmountsWhetherReservedOrNot) {
    const auto policy = parse_policy(kPolicy, "test.yaml");
    const Ledger l = ledger_of(*policy, kHashA, "cust_42");
    const std::size_t n = l.counters.size();
    const SettleArgs argv =
        parse_settle(settle_command(l, Amounts{50, 11}, Amounts{20, 4}, "req-1", std::nullopt));
    ASSERT_TRUE(argv.ok);
    ASSERT_EQ(argv.counters, n);
    ASSERT_EQ(argv.requests, 1u);
    EXPECT_EQ(argv.ids, (std::vector<std::string>{"req-1"}));
    EXPECT_EQ(std::vector<std::string>(argv.keys.begin() + n, argv.keys.begin() + n + 8),
              (std::vector<std::string>{"sc:{acme}:events", "sc:{acme}:reserved:deadlines", "sc:{acme}:settlements",
                                        "sc:{acme}:reserved", "sc:{acme}:settled", "sc:{acme}:released",
                                        "sc:{acme}:gone", "sc:{acme}:low_balance"}));
    // the markers of the windows of the spend counters with warnings, each once
    EXPECT_EQ(std::vector<std::string>(argv.keys.begin() + n + 8, argv.keys.end()),
              (std::vector<std::string>{"sc:{acme}:markers:d:2026-11-18", "sc:{acme}:markers:m:2026-11",
                                        "sc:{acme}:markers:life"}));
    for (std::size_t i = 0; i < n; ++i) {
        const Counter &c = l.counters[i];
        EXPECT_EQ(argv.keys[i], c.key);
        const bool rate = c.kind == CounterKind::rpm || c.kind == CounterKind::tpm;
        const std::int64_t estimate = c.kind == CounterKind::spend                             ? 50
                                      : c.kind == CounterKind::tokens || c.kind == CounterKind::tpm ? 11
                                                                                                    : 1;
        const std::int64_t real = c.kind == CounterKind::spend                             ? 20
                                  : c.kind == CounterKind::tokens || c.kind == CounterKind::tpm ? 4
                                                                                                : 1;
        const std::int64_t if_reserved = c.cap ? real - estimate : real;
        EXPECT_EQ(argv.fields[i][0], rate ? "r" : "c") << c.key;
        EXPECT_EQ(argv.fields[i][1], std::to_string(if_reserved)) << c.key;
        EXPECT_EQ(argv.fields[i][2], std::to_string(c.expire_at)) << c.key;
        // Only cost caps are sent, with their thresholds.
        const bool cost_cap = c.kind == CounterKind::spend && c.cap;
        EXPECT_EQ(argv.fields[i][3], cost_cap ? std::to_string(*c.cap) : "") << c.key;
        EXPECT_EQ(argv.fields[i][4].empty(), !cost_cap) << c.key;
        EXPECT_EQ(if_unreserved(argv, i), rate ? 0 : real) << c.key;
        // A correction only where the two differ.
        EXPECT_EQ(argv.corrections[0].count(i), (rate ? 0 : real) != if_reserved ? 1u : 0u) << c.key;
    }
    // Refused before the provider: an unchecked counter gets nothing either way.
    const SettleArgs refused =
        parse_settle(settle_command(l, Amounts{50, 11}, Amounts{0, 0, 0}, "req-1", std::nullopt));
    ASSERT_TRUE(refused.ok);
    ASSERT_EQ(refused.counters, n);
    for (std::size_t i = 0; i < n; ++i) {
        if (l.counters[i].cap) {
            EXPECT_EQ(if_unreserved(refused, i), 0) << l.counters[i].key;  // nothing to give back either
            continue;
        }
        EXPECT_EQ(refused.fields[i][1], "0") << l.counters[i].key;
        EXPECT_EQ(if_unreserved(refused, i), 0) << l.counters[i].key;
        EXPECT_EQ(refused.corrections[0].count(i), 0u) << l.counters[i].key;
    }
}

TEST(SettleCommand, BalanceHeldRatesAndTheCeilingCap) {
    Ledger l;
    l.org = "o";
    l.periods = periods_at(kNow);
    l.warn_at = {fraction("0.5", 500'000'000)};
    l.counters = {
        counter(CounterKind::spend, Scope::org, Window::monthly, "m", std::nullopt, kMonthExpire),
        counter(CounterKind::tokens, Scope::org, Window::daily, "t", 1000, kDayExpire),
        counter(CounterKind::balance, Scope::org, Window::lifetime, "b", std::nullopt, 0),
        counter(CounterKind::rpm, Scope::org, Window::daily, "rpm", 5, kMinuteExpire),
        counter(CounterKind::tpm, Scope::org, Window::daily, "tpm", 500, kMinuteExpire),
        counter(CounterKind::held, Scope::org, Window::lifetime, "h", std::nullopt, 0),
    };
    l.balance = 2;
    l.held = 5;
    l.low_balance = 50;
    l.ceiling_counter = 0;
    l.ceilings = {CeilingRow{0, 0, 1000}};
    const std::vector<std::string> argv = settle_command(l, Amounts{400, 9}, Amounts{700, 5}, "r1", 3000);
    const std::vector<std::string> expected = {
        "EVALSHA", scripts::settle().sha1, "14",
        "m", "t", "b", "rpm", "tpm", "h", "sc:{o}:events", "sc:{o}:reserved:deadlines", "sc:{o}:settlements",
        "sc:{o}:reserved", "sc:{o}:settled", "sc:{o}:released", "sc:{o}:gone", "sc:{o}:low_balance",
        "6", "1", "0", "7",
        "c", "300", "1830643200", "3000", "0.5=1500", "0", "", "",  // the ceiling the reservation saw
        "c", "-4", "1798070400", "", "", "0", "", "",
        "c", "-300", "0", "", "", "0", "", "",           // estimate - real comes back
        "r", "0", "1795000080", "", "", "0", "", "",     // rpm: final at reservation
        "r", "-4", "1795000080", "", "", "0", "", "",    // tpm settles to the real count
        "c", "-400", "0", "", "", "0", "", "",           // the hold ends
        "50", "3", "6",                     // low_balance, balance and held (1-based)
        // unreserved: m 300 + 400 = the real 700, t -4 + 9 = 5, b -300 - 400 =
        // the real -700, rpm 0 (no correction: minute unknown), tpm -4 + 4 = 0
        // (minute unknown), h -400 + 400 = 0 (nothing was held)
        "r1", "r1", "1", "1 400\n2 9\n3 -400\n5 4\n6 400\n", "0"};
    EXPECT_EQ(argv, expected);
    // No ceiling cap known: no warnings against the ceiling counter.
    const std::vector<std::string> plain = settle_command(l, Amounts{400, 9}, Amounts{700, 5}, "r1", std::nullopt);
    EXPECT_EQ(std::vector<std::string>(plain.begin() + 21, plain.begin() + 26),
              (std::vector<std::string>{"c", "300", "1830643200", "", ""}));
    EXPECT_EQ(std::vector<std::string>(plain.begin() + 28, plain.end()),
              std::vector<std::string>(argv.begin() + 28, argv.end()));
    // Negative amounts count as 0 (the thresholds are sent whatever the delta:
    // the script compares the counter before and after the batch).
    const std::vector<std::string> neg = settle_command(l, Amounts{-1, -1}, Amounts{-5, -5, -5}, "r1", 3000);
    EXPECT_EQ(std::vector<std::string>(neg.begin() + 21, neg.begin() + 26),
              (std::vector<std::string>{"c", "0", "1830643200", "3000", "0.5=1500"}));
    // A refused request: the rpm it reserved comes back (it held nothing);
    // unreserved, the rpm gets nothing: -1 + 1.
    EXPECT_EQ(std::vector<std::string>(neg.begin() + 45, neg.begin() + 50),
              (std::vector<std::string>{"r", "-1", "1795000080", "", ""}));
    EXPECT_EQ(std::vector<std::string>(neg.begin() + 69, neg.end()),
              (std::vector<std::string>{"", "0", "0", "r1", "r1", "1", "4 1\n", "0"}));
    const std::vector<std::string> refused = settle_command(l, Amounts{400, 9}, Amounts{0, 0, 0}, "r1", 3000);
    const std::vector<std::string> refused_expected = {
        "c", "-400", "1830643200", "3000", "0.5=1500", "0", "", "",
        "c", "-9", "1798070400", "", "", "0", "", "",
        "c", "400", "0", "", "", "0", "", "",
        "r", "-1", "1795000080", "", "", "0", "", "",
        "r", "-9", "1795000080", "", "", "0", "", "",
        "c", "-400", "0", "", "", "0", "", "",
        "", "0", "0",  // no cost: no low_balance check
        // unreserved: 0 everywhere
        "r1", "r1", "1", "1 400\n2 9\n3 -400\n4 1\n5 9\n6 400\n", "0"};
    EXPECT_EQ(std::vector<std::string>(refused.begin() + 21, refused.end()), refused_expected);
    // Taken apart, each counter's two cases.
    const SettleArgs a = parse_settle(argv);
    ASSERT_TRUE(a.ok);
    const std::vector<std::int64_t> reserved_case = {300, -4, -300, 0, -4, -400};
    const std::vector<std::int64_t> unreserved_case = {700, 5, -700, 0, 0, 0};
    for (std::size_t i = 0; i < 6; ++i) {
        EXPECT_EQ(std::stoll(a.fields[i][1]), reserved_case[i]) << l.counters[i].key;
        EXPECT_EQ(if_unreserved(a, i), unreserved_case[i]) << l.counters[i].key;
    }
}

TEST(SettleBatchCommand, ACounterSharedByTheBatchIsSentOnceWithTheSumAndEachRequestItsCorrections) {
    // Two keys of one project: their daily spend, and the project's monthly spend they share.
    auto ledger_of_key = [](const std::string &key) {
        Ledger l;
        l.org = "acme";
        l.periods = periods_at(kNow);
        l.warn_at = {fraction("0.5", 500'000'000)};
        l.counters = {
            counter(CounterKind::spend, Scope::key, Window::daily, "sc:{acme}:spend:key:" + key + ":d:2026-11-18",
                    2 * kUsd, kDayExpire),
            counter(CounterKind::spend, Scope::project, Window::monthly, "sc:{acme}:spend:project:p:m:2026-11",
                    50 * kUsd, kMonthExpire),
        };
        return l;
    };
    const auto k1 = shared(ledger_of_key("k1")), k2 = shared(ledger_of_key("k2"));
    const std::vector<std::string> argv = settle_batch_command(
        {settle_item(k1, Amounts{300, 1}, Amounts{100, 1}, "r1", std::nullopt, "r1"),
         settle_item(k2, Amounts{200, 1}, Amounts{500, 1}, "r2", std::nullopt, "r1"),
         settle_item(k1, Amounts{50, 1}, Amounts{50, 1}, "r3", std::nullopt, "r3", false)});
    EXPECT_EQ(argv, (std::vector<std::string>{
                        "EVALSHA", scripts::settle().sha1, "11",
                        // the three counters, each once, in the order first met
                        "sc:{acme}:spend:key:k1:d:2026-11-18", "sc:{acme}:spend:project:p:m:2026-11",
                        "sc:{acme}:spend:key:k2:d:2026-11-18", "sc:{acme}:events", "sc:{acme}:reserved:deadlines",
                        "sc:{acme}:settlements", "sc:{acme}:reserved", "sc:{acme}:settled", "sc:{acme}:released",
                        "sc:{acme}:gone", "sc:{acme}:low_balance",
                        "3", "3", "0", "10",
                        // k1: (100 - 300) + (50 - 50); the project: -200 + 300 + 0; k2: 300
                        "c", "-200", "1798070400", "2000000000", "0.5=1000000000", "0", "", "",
                        "c", "100", "1830643200", "50000000000", "0.5=25000000000", "0", "", "",
                        "c", "300", "1798070400", "2000000000", "0.5=1000000000", "0", "", "",
                        "", "0", "0",
                        // each request's batch and whether its reserve was answered; unreserved,
                        // each request adds its real cost instead: r1 +300 on k1 and the
                        // project, r2 +200 on both of its (in its ledger's order), r3 +50 on both
                        "r1", "r1", "1", "1 300\n2 300\n",
                        "r2", "r1", "1", "3 200\n2 200\n",
                        "r3", "r3", "0", "1 50\n2 50\n", "0"}));
    // The balance and held indexes are those of the batch's counters.
    Ledger prepaid = ledger_of_key("k1");
    prepaid.counters.push_back(counter(CounterKind::balance, Scope::org, Window::lifetime, "sc:{acme}:balance",
                                       std::nullopt, 0));
    prepaid.counters.push_back(counter(CounterKind::held, Scope::org, Window::lifetime, "sc:{acme}:balance:held",
                                       std::nullopt, 0));
    prepaid.balance = 2;
    prepaid.held = 3;
    prepaid.low_balance = 5 * kUsd;
    const std::vector<std::string> low = settle_batch_command(
        {settle_item(k2, Amounts{200, 1}, Amounts{500, 1}, "r2", std::nullopt, "b"),
         settle_item(shared(prepaid), Amounts{300, 1}, Amounts{100, 1}, "r1", std::nullopt, "b")});
    // 5 counters, 2 requests: r2 with 2 corrections, r1 with 4 (k1, the
    // project, the balance -300, the hold +300).
    ASSERT_EQ(low.size(), 3u + (5 + 8) + 4 + 8 * 5 + 3 + 4 + 4 + 1);  // ... and whether it was sent before
    EXPECT_EQ(std::vector<std::string>(low.begin() + 3, low.begin() + 8),
              (std::vector<std::string>{"sc:{acme}:spend:key:k2:d:2026-11-18", "sc:{acme}:spend:project:p:m:2026-11",
                                        "sc:{acme}:spend:key:k1:d:2026-11-18", "sc:{acme}:balance",
                                        "sc:{acme}:balance:held"}));
    EXPECT_EQ(std::vector<std::string>(low.begin() + 60, low.begin() + 63),
              (std::vector<std::string>{"5000000000", "4", "5"}));  // low_balance, balance and held (1-based)
    EXPECT_EQ(std::vector<std::string>(low.begin() + 67, low.end()),
              (std::vector<std::string>{"r1", "b", "1", "3 300\n2 300\n4 -300\n5 300\n", "0"}));
    const SettleArgs a = parse_settle(low);
    ASSERT_TRUE(a.ok);
    EXPECT_EQ(a.ids, (std::vector<std::string>{"r2", "r1"}));
}

TEST(SettleBatchCommand, ARequestIdTwiceSettlesOnce) {
    const auto l = shared(small_ledger());
    const std::vector<std::string> once = settle_batch_command({settle_item(l, Amounts{300, 4}, Amounts{100, 3}, "a")});
    EXPECT_EQ(settle_batch_command({settle_item(l, Amounts{300, 4}, Amounts{100, 3}, "a"),
                                    settle_item(l, Amounts{900, 9}, Amounts{900, 9}, "a")}),
              once);
    const SettleArgs two = parse_settle(settle_batch_command({settle_item(l, Amounts{300, 4}, Amounts{100, 3}, "a"),
                                                              settle_item(l, Amounts{900, 9}, Amounts{900, 9}, "b"),
                                                              settle_item(l, Amounts{1, 1}, Amounts{1, 1}, "a")}));
    ASSERT_TRUE(two.ok);
    EXPECT_EQ(two.ids, (std::vector<std::string>{"a", "b"}));
}

TEST(SettleBatchCommand, ItemsOfTwoOrgsANullOrEmptyLedgerOrNoIdAreRefused) {
    const auto l = shared(small_ledger());
    Ledger other = small_ledger();
    other.org = "zeta";
    Ledger empty;
    empty.org = "acme";
    EXPECT_TRUE(settle_batch_command({}).empty());
    EXPECT_TRUE(settle_batch_command({settle_item(l, Amounts{1, 1}, Amounts{1, 1}, "a"),
                                      settle_item(shared(other), Amounts{1, 1}, Amounts{1, 1}, "b")})
                    .empty());
    EXPECT_TRUE(settle_batch_command({settle_item(nullptr, Amounts{1, 1}, Amounts{1, 1}, "a")}).empty());
    EXPECT_TRUE(settle_batch_command({settle_item(l, Amounts{1, 1}, Amounts{1, 1}, "a"),
                                      settle_item(nullptr, Amounts{1, 1}, Amounts{1, 1}, "b")})
                    .empty());
    EXPECT_TRUE(settle_batch_command({settle_item(shared(empty), Amounts{1, 1}, Amounts{1, 1}, "a")}).empty());
    EXPECT_TRUE(settle_batch_command({SettleItem{l, Amounts{1, 1}, Amounts{1, 1}, "", std::nullopt, "b", true}})
                    .empty());
}

TEST(SettleBatchCommand, TheCeilingCounterGetsTheFirstKnownCeilingCap) {
    Ledger l;
    l.org = "o";
    l.periods = periods_at(kNow);
    l.warn_at = {fraction("0.5", 500'000'000)};
    l.counters = {counter(CounterKind::spend, Scope::org, Window::monthly, "m", std::nullopt, kMonthExpire)};
    l.ceiling_counter = 0;
    l.ceilings = {CeilingRow{0, 0, 1000}};
    const auto p = shared(l);
    // A fail-open request never learnt the cap: the next one that knows it decides.
    SettleArgs a = parse_settle(settle_batch_command({settle_item(p, Amounts{1, 0}, Amounts{1, 0}, "a"),
                                                      settle_item(p, Amounts{1, 0}, Amounts{1, 0}, "b", 3000),
                                                      settle_item(p, Amounts{1, 0}, Amounts{1, 0}, "c", 5000)}));
    ASSERT_TRUE(a.ok);
    EXPECT_EQ(a.fields[0][3], "3000");
    EXPECT_EQ(a.fields[0][4], "0.5=1500");
    a = parse_settle(settle_batch_command({settle_item(p, Amounts{1, 0}, Amounts{1, 0}, "a")}));
    ASSERT_TRUE(a.ok);
    EXPECT_EQ(a.fields[0][3], "");
    EXPECT_EQ(a.fields[0][4], "");
}

// ---------------------------------------------------------------------------
// decode_reserve_reply

// spend key daily (cap 100), requests, the ceiling counter, spend project monthly (cap 300).
Ledger ceiling_ledger() {
    Ledger l;
    l.org = "o";
    l.periods = periods_at(kNow);
    l.counters = {
        counter(CounterKind::spend, Scope::key, Window::daily, "a", 100, kDayExpire),
        counter(CounterKind::requests, Scope::key, Window::daily, "b", 5, kDayExpire),
        counter(CounterKind::spend, Scope::org, Window::monthly, "c", std::nullopt, kMonthExpire),
        counter(CounterKind::spend, Scope::project, Window::monthly, "d", 300, kMonthExpire),
    };
    l.ceiling_counter = 2;
    l.ceilings = {CeilingRow{0, 0, 1000}, CeilingRow{50, 0, 250}};
    return l;
}

TEST(DecodeReserve, AllowedPicksTheTightestCostCapIncludingTheCeiling) {
    const Ledger l = ceiling_ledger();
    // Remaining: key 40, ceiling 250 - 200 = 50, project 40: ties go to the first in check order.
    ReserveOutcome o = decode_reserve_reply(l, {1, 0, 0, 2, 60, 5, 200, 260});
    ASSERT_EQ(o.kind, ReserveOutcome::Kind::allowed) << o.error;
    EXPECT_FALSE(o.refused_by.has_value());
    EXPECT_EQ(o.ceiling_cap, std::optional<Nanos>(250));
    EXPECT_EQ(o.tightest_index, std::optional<std::size_t>(0));
    EXPECT_EQ(o.tightest_cap, 100);
    EXPECT_EQ(o.tightest_remaining, 40);
    EXPECT_TRUE(o.error.empty());
    // Row 1's ceiling of 1000 with 990 spent is the tightest.
    o = decode_reserve_reply(l, {1, 0, 0, 1, 10, 1, 990, 100});
    ASSERT_EQ(o.kind, ReserveOutcome::Kind::allowed) << o.error;
    EXPECT_EQ(o.ceiling_cap, std::optional<Nanos>(1000));
    EXPECT_EQ(o.tightest_index, std::optional<std::size_t>(2));
    EXPECT_EQ(o.tightest_cap, 1000);
    EXPECT_EQ(o.tightest_remaining, 10);
    // Request counters are never the tightest, however full.
    o = decode_reserve_reply(l, {1, 0, 0, 1, 10, 5, 10, 10});
    EXPECT_EQ(o.tightest_index, std::optional<std::size_t>(0));
    EXPECT_EQ(o.tightest_remaining, 90);
}

TEST(DecodeReserve, NoRowIsACeilingOfZero) {
    const Ledger l = ceiling_ledger();
    const ReserveOutcome o = decode_reserve_reply(l, {1, 0, 0, 0, 10, 1, 5, 100});
    ASSERT_EQ(o.kind, ReserveOutcome::Kind::allowed) << o.error;
    EXPECT_EQ(o.ceiling_cap, std::optional<Nanos>(0));
    EXPECT_EQ(o.tightest_index, std::optional<std::size_t>(2));
    EXPECT_EQ(o.tightest_cap, 0);
    EXPECT_EQ(o.tightest_remaining, 0);  // past the cap: 0, never negative
}

TEST(DecodeReserve, ADryRunNamesTheCounterThatWouldHaveRefused) {
    const Ledger l = ceiling_ledger();
    const ReserveOutcome o = decode_reserve_reply(l, {1, 4, 310, 1, 10, 1, 20, 310});
    ASSERT_EQ(o.kind, ReserveOutcome::Kind::allowed) << o.error;
    EXPECT_EQ(o.refused_by, std::optional<std::size_t>(3));
    EXPECT_EQ(o.tightest_index, std::optional<std::size_t>(3));
    EXPECT_EQ(o.tightest_remaining, 0);
}

TEST(DecodeReserve, Blocked) {
    const Ledger l = ceiling_ledger();
    ReserveOutcome o = decode_reserve_reply(l, {0, 2, 5, 1});
    ASSERT_EQ(o.kind, ReserveOutcome::Kind::blocked) << o.error;
    EXPECT_EQ(o.refused_by, std::optional<std::size_t>(1));
    EXPECT_EQ(o.ceiling_cap, std::optional<Nanos>(1000));
    EXPECT_FALSE(o.tightest_index.has_value());
    o = decode_reserve_reply(l, {0, 3, 999, 2});
    ASSERT_EQ(o.kind, ReserveOutcome::Kind::blocked) << o.error;
    EXPECT_EQ(o.refused_by, std::optional<std::size_t>(2));
    EXPECT_EQ(o.ceiling_cap, std::optional<Nanos>(250));
    o = decode_reserve_reply(small_ledger(), {0, 1, 0, 0});
    ASSERT_EQ(o.kind, ReserveOutcome::Kind::blocked) << o.error;
    EXPECT_EQ(o.refused_by, std::optional<std::size_t>(0));
    EXPECT_FALSE(o.ceiling_cap.has_value());  // no ceilings in this ledger
}

TEST(DecodeReserve, NoCostCapMeansNoTightest) {
    Ledger l;
    l.org = "o";
    l.counters = {counter(CounterKind::spend, Scope::key, Window::daily, "a", std::nullopt, 0),
                  counter(CounterKind::requests, Scope::key, Window::daily, "b", 3, 0)};
    // Only "b" is sent (the uncapped spend is not): one "after".
    const ReserveOutcome o = decode_reserve_reply(l, {1, 0, 0, 0, 3});
    ASSERT_EQ(o.kind, ReserveOutcome::Kind::allowed) << o.error;
    EXPECT_FALSE(o.tightest_index.has_value());
    EXPECT_EQ(o.tightest_remaining, 0);
    EXPECT_EQ(decode_reserve_reply(l, {0, 1, 3, 0}).refused_by, std::optional<std::size_t>(1));
    EXPECT_EQ(decode_reserve_reply(l, {1, 0, 0, 0, 500, 3}).kind, ReserveOutcome::Kind::error);
}

TEST(DecodeReserve, RemainingNeverOverflows) {
    Ledger l;
    l.org = "o";
    l.counters = {counter(CounterKind::spend, Scope::key, Window::daily, "a", kMax, 0),
                  counter(CounterKind::spend, Scope::key, Window::monthly, "b", 0, 0)};
    // Remaining 2^63 + 4 and 2^63: computed without wrapping, reported saturated.
    ReserveOutcome o = decode_reserve_reply(l, {1, 0, 0, 0, -5, std::numeric_limits<long long>::min()});
    ASSERT_EQ(o.kind, ReserveOutcome::Kind::allowed) << o.error;
    EXPECT_EQ(o.tightest_index, std::optional<std::size_t>(1));
    EXPECT_EQ(o.tightest_cap, 0);
    EXPECT_EQ(o.tightest_remaining, kMax);
    o = decode_reserve_reply(l, {1, 0, 0, 0, kMax, kMax});
    EXPECT_EQ(o.tightest_index, std::optional<std::size_t>(1));
    EXPECT_EQ(o.tightest_remaining, 0);
}

TEST(DecodeReserve, AChangedConfigVersionIsStale) {
    // {3}: the org's records changed since the ledger was built; nothing was done.
    EXPECT_EQ(decode_reserve_reply(ceiling_ledger(), {3}).kind, ReserveOutcome::Kind::stale);
    const ReserveReplyParts split = split_reserve_reply({3}, 4);
    EXPECT_TRUE(split.stale);
    EXPECT_FALSE(split.malformed);
    EXPECT_TRUE(split.parts.empty());
}

TEST(ReserveBatchCommand, TheConfigVersionIsLastAndOnePerBatch) {
    Ledger a = small_ledger(), b = small_ledger();
    a.config_version = b.config_version = "17";
    const std::vector<std::string> argv =
        reserve_batch_command({ReserveItem{shared(a), Amounts{1, 1}, "r1", false},
                               ReserveItem{shared(b), Amounts{1, 1}, "r2", false}}, "r1");
    const ReserveArgs parsed = parse_reserve(argv);
    ASSERT_TRUE(parsed.ok);
    EXPECT_EQ(parsed.version, "17");
    // Caps read at two versions never share a batch.
    b.config_version = "18";
    EXPECT_TRUE(reserve_batch_command({ReserveItem{shared(a), Amounts{1, 1}, "r1", false},
                                       ReserveItem{shared(b), Amounts{1, 1}, "r2", false}}, "r1").empty());
}

TEST(DecodeReserve, MalformedRepliesAreErrors) {
    const Ledger l = ceiling_ledger();  // 4 counters, 2 rows
    const std::vector<std::vector<long long>> bad = {
        {},
        {1},
        {1, 0, 0},
        {2, 0, 0, 0},
        {-1, 0, 0, 0},
        {0, 0, 0, 0},     // refused without a counter
        {2},              // already settled: a late resend did nothing
        {4},
        {0, 5, 0, 0},     // counter out of range
        {0, -1, 0, 0},
        {1, 0, 0, 3},     // row out of range
        {1, 0, 0, -1},
        {1, 0, 0, 0},     // allowed without the counters
        {1, 0, 0, 0, 1, 2, 3},
        {1, 0, 0, 0, 1, 2, 3, 4, 5},
    };
    for (const auto &reply : bad) {
        const ReserveOutcome o = decode_reserve_reply(l, reply);
        EXPECT_EQ(o.kind, ReserveOutcome::Kind::error) << "reply size " << reply.size();
        EXPECT_FALSE(o.error.empty());
    }
    EXPECT_EQ(decode_reserve_reply(l, {1, 0, 0}).error, "reserve script gave a malformed reply");
    EXPECT_EQ(decode_reserve_reply(l, {0, 5, 0, 0}).error, "reserve script named counter 5 of 4");
    EXPECT_EQ(decode_reserve_reply(l, {1, 0, 0, 3}).error, "reserve script chose ceiling row 3");
    EXPECT_EQ(decode_reserve_reply(l, {0, 0, 0, 0}).error, "reserve script refused without naming a counter");
    EXPECT_EQ(decode_reserve_reply(l, {2}).error, "reserve script found the request already settled");
    EXPECT_FALSE(decode_reserve_reply(l, {2}).refused_by.has_value());
    EXPECT_EQ(decode_reserve_reply(l, {1, 0, 0, 0, 1, 2, 3}).error,
              "reserve script replied 3 counters, expected 4");
    // Without ceilings any row is out of range.
    ASSERT_EQ(decode_reserve_reply(small_ledger(), {1, 0, 0, 0, 1, 1}).kind, ReserveOutcome::Kind::allowed);
    EXPECT_EQ(decode_reserve_reply(small_ledger(), {1, 0, 0, 1, 1, 1}).kind, ReserveOutcome::Kind::error);
}

// ---------------------------------------------------------------------------
// cap_ref

TEST(CapRef, EachCounterKind) {
    const auto policy = parse_policy(kPolicy, "test.yaml");
    const Ledger l = ledger_of(*policy, kHashA, "cust_42");
    struct Case {
        std::size_t index;
        const char *label;
        Scope scope;
        std::int64_t reset_at;
        const char *message;
    };
    const std::vector<Case> cases = {
        {0, "key:daily", Scope::key, kDayReset, "api key has reached its daily spend limit"},
        {1, "key:monthly", Scope::key, kMonthReset, "api key has reached its monthly spend limit"},
        {2, "key:lifetime", Scope::key, 0, "api key has reached its lifetime spend limit"},
        {4, "key:monthly_requests", Scope::key, kMonthReset, "api key has reached its monthly request limit"},
        {10, "project:daily_requests", Scope::project, kDayReset, "project has reached its daily request limit"},
        {15, "org:monthly", Scope::org, kMonthReset, "account has reached its monthly spend limit"},
        {26, "customer:daily_tokens", Scope::customer, kDayReset, "customer has reached its daily token limit"},
        {27, "customer:monthly_tokens", Scope::customer, kMonthReset,
         "customer has reached its monthly token limit"},
        {28, "key:rpm", Scope::key, kMinuteReset, "api key has exceeded its requests per minute limit"},
        {29, "org:tpm", Scope::org, kMinuteReset, "account has exceeded its tokens per minute limit"},
        {30, "customer:rpm", Scope::customer, kMinuteReset, "customer has exceeded its requests per minute limit"},
    };
    for (const Case &c : cases) {
        const CapRef cap = cap_ref(l, c.index);
        EXPECT_EQ(blocked_by_label(cap), c.label) << c.index;
        EXPECT_EQ(cap.scope, c.scope) << c.index;
        EXPECT_EQ(cap.reset_at, c.reset_at) << c.index;
        EXPECT_EQ(cap_message(cap), c.message) << c.index;
        const bool rate = cap.limit == LimitKind::rpm || cap.limit == LimitKind::tpm;
        EXPECT_EQ(cap.retry_after, rate ? 20 : 0) << c.index;
    }
    EXPECT_EQ(cap_ref(l, 0).limit, LimitKind::spend);
    EXPECT_EQ(cap_ref(l, 4).limit, LimitKind::requests);
    EXPECT_EQ(cap_ref(l, 4).window, Window::monthly);
    EXPECT_EQ(cap_ref(l, 26).limit, LimitKind::tokens);
    EXPECT_EQ(cap_ref(l, 28).limit, LimitKind::rpm);
    EXPECT_EQ(cap_ref(l, 29).limit, LimitKind::tpm);
}

TEST(CapRef, TheBalance) {
    const auto policy = parse_policy(kPlanPolicy, "plans.yaml");
    const Ledger l = ledger_of(*policy, std::string(64, 'a'));
    const CapRef cap = cap_ref(l, *l.balance);
    EXPECT_EQ(cap.limit, LimitKind::balance);
    EXPECT_EQ(cap.scope, Scope::org);
    EXPECT_EQ(cap.reset_at, 0);
    EXPECT_EQ(cap.retry_after, 0);
    EXPECT_EQ(blocked_by_label(cap), "org:balance");
    EXPECT_EQ(cap_message(cap), "insufficient credit balance");
    EXPECT_EQ(blocked_by_label(cap_ref(l, *l.ceiling_counter)), "org:monthly");
}

TEST(CapRef, RetryAfterRunsFromOneToSixtySeconds) {
    const auto policy = parse_policy(kPolicy, "test.yaml");
    // The last second of a minute: one second to wait.
    Ledger l = ledger_of(*policy, kHashA, "", kMinuteReset - 1);
    EXPECT_EQ(cap_ref(l, 21).retry_after, 1);
    EXPECT_EQ(cap_ref(l, 21).reset_at, kMinuteReset);
    // The first second of the next: a whole minute, and a new minute's counter.
    l = ledger_of(*policy, kHashA, "", kMinuteReset);
    EXPECT_EQ(cap_ref(l, 21).retry_after, 60);
    EXPECT_EQ(cap_ref(l, 21).reset_at, kMinuteReset + 60);
    EXPECT_EQ(l.counters[21].key, "sc:{acme}:rate:key:key_prod_1:rpm:2026-11-18T11:07");
    EXPECT_EQ(l.counters[21].expire_at, kMinuteReset + 120);
}

// A cached ledger keeps its minute's first time: the caller's own `now`
// gives the Retry-After.
TEST(CapRef, RetryAfterFromTheCallersNow) {
    const auto policy = parse_policy(kPolicy, "test.yaml");
    const Ledger l = ledger_of(*policy, kHashA);  // built at 11:06:40
    ASSERT_EQ(l.counters[21].kind, CounterKind::rpm);
    EXPECT_EQ(cap_ref(l, 21).retry_after, 20);      // no `now`: the ledger's own time
    EXPECT_EQ(cap_ref(l, 21, 0).retry_after, 20);
    EXPECT_EQ(cap_ref(l, 21, kNow).retry_after, 20);
    EXPECT_EQ(cap_ref(l, 21, kNow + 10).retry_after, 10);
    EXPECT_EQ(cap_ref(l, 21, kMinuteReset - 1).retry_after, 1);
    EXPECT_EQ(cap_ref(l, 22, kNow + 15).retry_after, 5);  // the org's tpm
    // Clamped to 1..60: at or past the reset (a late caller), and long before it.
    EXPECT_EQ(cap_ref(l, 21, kMinuteReset).retry_after, 1);
    EXPECT_EQ(cap_ref(l, 21, kMinuteReset + 500).retry_after, 1);
    EXPECT_EQ(cap_ref(l, 21, kMinuteReset - 60).retry_after, 60);
    EXPECT_EQ(cap_ref(l, 21, kNow - 3600).retry_after, 60);
    // The reset stays the ledger's minute's.
    EXPECT_EQ(cap_ref(l, 21, kNow + 10).reset_at, kMinuteReset);
    // Only rates have a Retry-After.
    EXPECT_EQ(cap_ref(l, 0, kNow + 10).retry_after, 0);
    EXPECT_EQ(cap_ref(l, 0, kNow + 10).reset_at, kDayReset);
    const auto plans = parse_policy(kPlanPolicy, "plans.yaml");
    const Ledger prepaid = ledger_of(*plans, std::string(64, 'a'));
    EXPECT_EQ(cap_ref(prepaid, *prepaid.balance, kNow + 10).retry_after, 0);
}


TEST(SplitReserveReply, PartsByTheirLengths) {
    const ReserveReplyParts two = split_reserve_reply({5, 1, 0, 0, 0, 7, 4, 0, 1, 9, 0}, 2);
    ASSERT_FALSE(two.malformed);
    EXPECT_EQ(two.parts, (std::vector<std::vector<long long>>{{1, 0, 0, 0, 7}, {0, 1, 9, 0}}));
    EXPECT_TRUE(split_reserve_reply({2}, 1).given_up);
    EXPECT_TRUE(split_reserve_reply({2}, 1).parts.empty());
}

TEST(SplitReserveReply, AnythingElseIsMalformed) {
    EXPECT_TRUE(split_reserve_reply({5, 1, 0, 0, 0, 7}, 2).malformed);         // one part short
    EXPECT_TRUE(split_reserve_reply({5, 1, 0, 0, 0}, 1).malformed);            // a part cut off
    EXPECT_TRUE(split_reserve_reply({4, 0, 1, 9, 0, 3}, 1).malformed);         // bytes left over
    EXPECT_TRUE(split_reserve_reply({3, 1, 0, 0}, 1).malformed);               // shorter than a part can be
    EXPECT_TRUE(split_reserve_reply({-1}, 1).malformed);
    EXPECT_TRUE(split_reserve_reply({}, 1).malformed);
    EXPECT_TRUE(split_reserve_reply({9223372036854775807LL, 1}, 1).malformed);
    EXPECT_TRUE(split_reserve_reply({2}, 2).given_up);
}

}  // namespace
}  // namespace spendcap
