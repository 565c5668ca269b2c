// The bounds a request and a usage are held to before anything is counted:
// bounds_error (max tokens, choices), Estimate::tokens and the worst-case
// estimate at the int64 limit, Usage's saturating totals and plausible().
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "base/money.h"
#include "policy/policy.h"
#include "request/request.h"
#include "accounting/reservation.h"
#include "usage/usage.h"

namespace spendcap {
namespace {

constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();

ModelPrice with_max(std::optional<std::int64_t> max_output_tokens) {
    ModelPrice p;
    p.name = "m";
    p.input = 150'000'000;
    p.output = 600'000'000;
    p.max_output_tokens = max_output_tokens;
    return p;
}

RequestInfo asking(std::optional<std::int64_t> max_tokens, std::int64_t choices = 1) {
    RequestInfo info;
    info.model = "m";
    info.max_output_tokens = max_tokens;
    info.choices = choices;
    return info;
}

// ---------------------------------------------------------------------------
// bounds_error

TEST(BoundsError, MaxTokensAboveTheModelsOwnLimit) {
    const ModelPrice model = with_max(16384);
    EXPECT_EQ(bounds_error(asking(16384), model), "");
    EXPECT_EQ(bounds_error(asking(16385), model), "max tokens 16385 exceed the model's limit of 16384 output tokens");
    EXPECT_EQ(bounds_error(asking(kMax), model),
              "max tokens 9223372036854775807 exceed the model's limit of 16384 output tokens");
    // A model's own limit above the general one is the model's.
    EXPECT_EQ(bounds_error(asking(1'500'000), with_max(2'000'000)), "");
    EXPECT_NE(bounds_error(asking(2'000'001), with_max(2'000'000)), "");
}

TEST(BoundsError, MaxTokensAboveTheGeneralLimitWhenTheModelHasNone) {
    const ModelPrice model = with_max(std::nullopt);
    EXPECT_EQ(kMaxOutputTokens, 1'000'000);
    EXPECT_EQ(bounds_error(asking(kMaxOutputTokens), model), "");
    EXPECT_EQ(bounds_error(asking(kMaxOutputTokens + 1), model),
              "max tokens 1000001 exceed the model's limit of 1000000 output tokens");
    EXPECT_NE(bounds_error(asking(kMax), model), "");
}

TEST(BoundsError, MoreChoicesThanAnyProviderGives) {
    const ModelPrice model = with_max(16384);
    EXPECT_EQ(kMaxChoices, 128);
    EXPECT_EQ(bounds_error(asking(100, kMaxChoices), model), "");
    EXPECT_EQ(bounds_error(asking(100, 129), model), "n 129 exceeds the limit of 128 choices");
    EXPECT_EQ(bounds_error(asking(std::nullopt, kMax), model),
              "n 9223372036854775807 exceeds the limit of 128 choices");
    // Both: the max tokens are named.
    EXPECT_EQ(bounds_error(asking(16385, 129), model).rfind("max tokens 16385", 0), 0u);
}

TEST(BoundsError, OrdinaryRequestsAreFine) {
    for (const ModelPrice &model : {with_max(16384), with_max(std::nullopt)}) {
        EXPECT_EQ(bounds_error(asking(std::nullopt), model), "");  // no max tokens: the model's or the policy's
        EXPECT_EQ(bounds_error(asking(0), model), "");
        EXPECT_EQ(bounds_error(asking(1), model), "");
        EXPECT_EQ(bounds_error(asking(300, 1), model), "");
        EXPECT_EQ(bounds_error(asking(300, 0), model), "");
        EXPECT_EQ(bounds_error(RequestInfo{}, model), "");
    }
    // What parse_request_body hands it.
    const RequestParse parsed = parse_request_body(R"({"model":"m","max_tokens":16384,"n":128})");
    ASSERT_TRUE(parsed.ok) << parsed.error;
    EXPECT_EQ(bounds_error(parsed.info, with_max(16384)), "");
    const RequestParse big = parse_request_body(R"({"model":"m","max_tokens":9223372036854775807})");
    ASSERT_TRUE(big.ok) << big.error;
    EXPECT_NE(bounds_error(big.info, with_max(16384)), "");
}

// ---------------------------------------------------------------------------
// Estimate::tokens and estimate_worst_case at the limit

TEST(EstimateTokens, SaturatesAtInt64Max) {
    EXPECT_EQ((Estimate{5, 7, 0}).tokens(), 12);
    EXPECT_EQ((Estimate{0, 0, 0}).tokens(), 0);
    EXPECT_EQ((Estimate{kMax - 7, 7, 0}).tokens(), kMax);
    EXPECT_EQ((Estimate{kMax - 7, 8, 0}).tokens(), kMax);
    EXPECT_EQ((Estimate{1, kMax, 0}).tokens(), kMax);
    EXPECT_EQ((Estimate{kMax, kMax, 0}).tokens(), kMax);
}

TEST(EstimateWorstCase, Int64MaxTokensDoNotWrap) {
    Policy policy;
    const ModelPrice model = with_max(16384);
    for (const std::int64_t choices : {std::int64_t{1}, std::int64_t{2}, std::int64_t{128}, kMax}) {
        const Estimate e = estimate_worst_case(model, policy, 1000, kMax, choices);
        EXPECT_EQ(e.input_tokens, 1000) << choices;
        EXPECT_EQ(e.output_tokens, kMax) << choices;
        EXPECT_EQ(e.cost, kMax) << choices;
        EXPECT_EQ(e.tokens(), kMax) << choices;
    }
    const Estimate many = estimate_worst_case(model, policy, kMax, 2, kMax);
    EXPECT_EQ(many.output_tokens, kMax);
    EXPECT_EQ(many.tokens(), kMax);
    EXPECT_EQ(many.cost, kMax);
    // The reservation such an estimate makes is as large as can be, never negative.
    Ledger l;
    l.org = "o";
    l.counters = {Counter{CounterKind::tokens, Scope::key, Window::daily, "sc:{o}:tokens:key:k:d:x", 1000, 0},
                  Counter{CounterKind::spend, Scope::key, Window::daily, "sc:{o}:spend:key:k:d:x", 1000, 0}};
    const std::vector<std::string> argv =
        reserve_command(l, Amounts{many.cost, many.tokens(), 1}, "r", false);
    ASSERT_FALSE(argv.empty());
    // KEYS: 2 counters and 5 more (no markers: these counters have no label);
    // ARGV: C, M, H, G, ttl, batch id, prefix length, check_due, then per
    // counter kind, amount, cap, expire_at, warn thresholds, markers, label.
    ASSERT_EQ(argv.size(), 3u + (2 + 5) + 8 + 7 * 2 + 2 + 3 + 6 + 1);  // + the config version
    const std::size_t first = 3 + (2 + 5) + 8;
    // The caps go as they are: the script compares `current + delta <= cap` exactly.
    EXPECT_EQ(std::vector<std::string>(argv.begin() + first, argv.begin() + first + 14),
              (std::vector<std::string>{"c", "t", "1000", "0", "", "0", "", "s", "$", "1000", "0", "", "0", ""}));
    // The request: its estimate whole, and a release record that undoes it.
    EXPECT_EQ(std::vector<std::string>(argv.end() - 7, argv.end() - 1),
              (std::vector<std::string>{"r", "0", "1", "9223372036854775807", "9223372036854775807",
                                        "-9223372036854775807 tokens:key:k:d:x\n"
                                        "-9223372036854775807 spend:key:k:d:x\n"}));
}

// ---------------------------------------------------------------------------
// Usage totals and plausible()

TEST(UsageTotals, AddEveryKindAndSaturate) {
    const Usage u{1, 2, 3, 4, 5};
    EXPECT_EQ(u.input_total(), 10);
    EXPECT_EQ(u.total(), 15);
    EXPECT_EQ((Usage{kMax, 1, 0, 0, 0}).input_total(), kMax);
    EXPECT_EQ((Usage{kMax, 1, 0, 0, 0}).total(), kMax);
    EXPECT_EQ((Usage{0, 0, 0, kMax, 0}).total(), kMax);
    EXPECT_EQ((Usage{kMax / 2, kMax / 2, 2, 0, 0}).input_total(), kMax);
    EXPECT_EQ((Usage{kMax / 2, kMax / 2, 1, 0, 0}).input_total(), kMax);  // exactly INT64_MAX
    EXPECT_EQ((Usage{1, 0, 0, 0, kMax}).input_total(), 1);
    EXPECT_EQ((Usage{1, 0, 0, 0, kMax}).total(), kMax);
    EXPECT_EQ((Usage{kMax, kMax, kMax, kMax, kMax}).total(), kMax);
    // Never below zero: a negative count adds nothing.
    EXPECT_EQ((Usage{-5, 3, 0, 0, 0}).input_total(), 3);
    EXPECT_EQ((Usage{-5, -5, -5, -5, -5}).total(), 0);
    EXPECT_EQ((Usage{std::numeric_limits<std::int64_t>::min(), 0, 0, 0, 7}).total(), 7);
}

TEST(UsagePlausible, EveryCountWithinZeroAndTheMost) {
    EXPECT_EQ(kMaxPlausibleTokens, 100'000'000);
    EXPECT_TRUE(plausible(Usage{}));
    EXPECT_TRUE(plausible(Usage{1000, 200, 30, 4, 500}));
    const std::int64_t most = kMaxPlausibleTokens;
    EXPECT_TRUE(plausible(Usage{most, most, most, most, most}));
    for (int field = 0; field < 5; ++field) {
        for (const std::int64_t bad : {most + 1, std::int64_t{-1}, kMax, std::numeric_limits<std::int64_t>::min()}) {
            Usage u{1, 1, 1, 1, 1};
            std::int64_t *fields[] = {&u.input, &u.cached_input, &u.cache_write, &u.cache_read, &u.output};
            *fields[field] = bad;
            EXPECT_FALSE(plausible(u)) << "field " << field << " = " << bad;
        }
    }
}

}  // namespace
}  // namespace spendcap
