// Decisions the NGINX glue used to make itself: which header carries the
// caller's key, and the x-spend-* headers of an allowed request.
#include <gtest/gtest.h>

#include "periods.h"
#include "policy.h"
#include "request.h"
#include "reservation.h"

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

Ledger ledger_with(const std::string &key_limits, std::int64_t now) {
    static std::shared_ptr<const Policy> keep;
    keep = parse_policy(std::string("models:\n  m: { input: 1, output: 2 }\norgs:\n  acme: {}\n"
                                    "projects:\n  p: { org: acme }\nkeys:\n  - id: k1\n    sha256: ") +
                            kHash + "\n    project: p\n    limits: " + key_limits + "\n",
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
