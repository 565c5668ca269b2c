// Decisions the NGINX glue used to make itself: which header carries the
// caller's key, and the x-spend-* headers of an allowed request.
#include <gtest/gtest.h>

#include <map>
#include <vector>

#include "base/periods.h"
#include "policy/policy.h"
#include "request/request.h"
#include "accounting/reservation.h"

namespace spendcap {
namespace {

TEST(CallerKey, TheBearerTokenOfAuthorizationFirst) {
    EXPECT_EQ(caller_key(std::string_view("Bearer sk-1"), std::string_view("sk-2")), "sk-1");
    EXPECT_EQ(caller_key(std::string_view("bearer   sk-1  "), std::nullopt), "sk-1");
    EXPECT_EQ(caller_key(std::string_view("BEARER sk-1"), std::nullopt), "sk-1");
}

TEST(CallerKey, ElseXApiKey) {
    EXPECT_EQ(caller_key(std::nullopt, std::string_view("sk-ant")), "sk-ant");
    EXPECT_EQ(caller_key(std::string_view("Basic dXNlcjpwYXNz"), std::string_view("sk-ant")), "sk-ant");
    EXPECT_EQ(caller_key(std::string_view("Bearer    "), std::string_view("sk-ant")), "sk-ant");
    EXPECT_EQ(caller_key(std::string_view("Bearer"), std::string_view("sk-ant")), "sk-ant");
}

TEST(CallerKey, NoneGivesNothing) {
    EXPECT_EQ(caller_key(std::nullopt, std::nullopt), "");
    EXPECT_EQ(caller_key(std::string_view("Bearer "), std::nullopt), "");
    EXPECT_EQ(caller_key(std::string_view("Token sk-1"), std::nullopt), "");
}

constexpr const char *kHash = "e0f45c82d6ca5ee6f54cc819900039a64d865a336bec00b8ff16a10e40033839";

Ledger ledger_with(const std::string &key_limits, std::int64_t now, const std::string &org = "{}") {
    static std::shared_ptr<const Policy> keep;
    keep = parse_policy(std::string("models:\n  m: { input: 1, output: 2 }\norgs:\n  acme: ") + org +
                            "\nprojects:\n  p: { org: acme }\nkeys:\n  - id: k1\n    sha256: " + kHash +
                            "\n    project: p\n    limits: " + key_limits + "\n",
                        "test.yaml");
    return ledger_for(*keep, *keep->find_key(kHash), "", periods_at(now));
}

TEST(SpendHeaders, TheTightestCostCapAfterTheReservation) {
    const std::int64_t now = 1795000000;  // 2026-11-18T11:06:40Z
    const Ledger l = ledger_with("{ daily_usd: 2, monthly_usd: 10 }", now);
    ReserveOutcome o;
    o.kind = ReserveOutcome::Kind::allowed;
    o.tightest_index = 0;  // the key's daily spend counter
    o.tightest_cap = 2'000'000'000;
    o.tightest_remaining = 1'999'999'877;
    const auto h = spend_headers(l, o);
    ASSERT_TRUE(h.has_value());
    EXPECT_EQ(h->limit_usd, "2.00");
    EXPECT_EQ(h->remaining_usd, "1.999999877");
    EXPECT_EQ(h->reset, "2026-11-19T00:00:00Z");
    EXPECT_EQ(h->scope, "key:daily");
}

TEST(SpendHeaders, ALifetimeCapHasNoReset) {
    const Ledger l = ledger_with("{ lifetime_usd: 40 }", 1795000000);
    ReserveOutcome o;
    o.kind = ReserveOutcome::Kind::allowed;
    o.tightest_index = 2;  // the key's lifetime spend counter
    o.tightest_cap = 40'000'000'000;
    o.tightest_remaining = 0;
    const auto h = spend_headers(l, o);
    ASSERT_TRUE(h.has_value());
    EXPECT_EQ(h->reset, "");
    EXPECT_EQ(h->scope, "key:lifetime");
    EXPECT_EQ(h->remaining_usd, "0.00");
}

// SPEC section 5: the binding budget includes a prepaid org's balance. The
// reserve reply gives each reserved counter's value after the reservation:
// the balance with this request drawn, and what is held.
Ledger prepaid_ledger(const std::string &key_limits, std::int64_t now) {
    return ledger_with(key_limits, now, "{ prepaid: true }");
}

// The reply of an allowed reservation: {1, 0, 0, 0, value of each reserved counter}.
std::vector<long long> allowed_reply(const Ledger &l, const std::map<CounterKind, long long> &values,
                                     long long spend) {
    std::vector<long long> reply{1, 0, 0, 0};
    for (const Counter &c : l.counters) {
        if (!(c.cap || c.kind == CounterKind::balance || c.kind == CounterKind::held)) continue;
        auto v = values.find(c.kind);
        reply.push_back(v != values.end() ? v->second : spend);
    }
    return reply;
}

TEST(SpendHeaders, APrepaidBalanceBindsWhenLessOfItIsLeft) {
    const std::int64_t now = 1795000000;
    const Ledger l = prepaid_ledger("{ monthly_usd: 100 }", now);
    ASSERT_TRUE(l.balance && l.held);
    // $15 left of the balance ($2 held), $99.99 of the monthly cap: the balance binds.
    ReserveOutcome o = decode_reserve_reply(
        l, allowed_reply(l, {{CounterKind::balance, 15 * kNanosPerUsd}, {CounterKind::held, 2 * kNanosPerUsd}},
                         10'000'000));
    ASSERT_EQ(o.kind, ReserveOutcome::Kind::allowed) << o.error;
    auto h = spend_headers(l, o);
    ASSERT_TRUE(h.has_value());
    EXPECT_EQ(h->scope, "org:balance");
    EXPECT_EQ(h->limit_usd, "17.00");     // the settled balance: left + held
    EXPECT_EQ(h->remaining_usd, "15.00");
    EXPECT_EQ(h->reset, "");              // waiting does not refill it
    // More of the balance than of the cap: the cap binds.
    o = decode_reserve_reply(l, allowed_reply(l, {{CounterKind::balance, 500 * kNanosPerUsd},
                                                  {CounterKind::held, 0}},
                                              99 * kNanosPerUsd));
    h = spend_headers(l, o);
    ASSERT_TRUE(h.has_value());
    EXPECT_EQ(h->scope, "key:monthly");
    EXPECT_EQ(h->remaining_usd, "1.00");
    // A balance and no cost cap at all: the balance.
    const Ledger only = prepaid_ledger("{ rpm: 5 }", now);
    o = decode_reserve_reply(only, allowed_reply(only, {{CounterKind::balance, 3}, {CounterKind::held, 4}}, 1));
    h = spend_headers(only, o);
    ASSERT_TRUE(h.has_value());
    EXPECT_EQ(h->scope, "org:balance");
    EXPECT_EQ(h->limit_usd, "0.000000007");
    // An overdrawn balance (a dry run) shows nothing left, and a cap at 0 left wins the tie.
    o = decode_reserve_reply(l, allowed_reply(l, {{CounterKind::balance, -5}, {CounterKind::held, 9}},
                                              100 * kNanosPerUsd));
    h = spend_headers(l, o);
    ASSERT_TRUE(h.has_value());
    EXPECT_EQ(h->scope, "key:monthly");
    EXPECT_EQ(h->remaining_usd, "0.00");
}

TEST(SpendHeaders, NoneWithoutACostCap) {
    const Ledger l = ledger_with("{ rpm: 10 }", 1795000000);
    ReserveOutcome o;
    o.kind = ReserveOutcome::Kind::allowed;
    EXPECT_FALSE(spend_headers(l, o).has_value());
    o.tightest_index = 9999;  // never past the ledger
    EXPECT_FALSE(spend_headers(l, o).has_value());
}

}  // namespace
}  // namespace spendcap
