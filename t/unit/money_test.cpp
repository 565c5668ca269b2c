// Exact money: policy amounts parse without floating point, costs round up.
#include "base/money.h"

#include <gtest/gtest.h>

#include <limits>

namespace spendcap {
namespace {

Nanos parsed(const char *text) {
    Nanos out = -1;
    std::string error;
    EXPECT_TRUE(parse_usd(text, out, error)) << text << ": " << error;
    return out;
}

std::string rejection(const char *text) {
    Nanos out = 12345;
    std::string error;
    EXPECT_FALSE(parse_usd(text, out, error)) << text;
    EXPECT_EQ(out, 12345) << "output must be untouched on failure: " << text;
    return error;
}

TEST(ParseUsd, ParsesPricesExactly) {
    EXPECT_EQ(parsed("0.075"), 75'000'000);
    EXPECT_EQ(parsed("15"), 15'000'000'000);
    EXPECT_EQ(parsed("3.750"), 3'750'000'000);
    EXPECT_EQ(parsed("0.15"), 150'000'000);  // 0.15 is not exact in binary floating point
    EXPECT_EQ(parsed("0.60"), 600'000'000);
    EXPECT_EQ(parsed("1.0"), 1'000'000'000);
    EXPECT_EQ(parsed("0"), 0);
    EXPECT_EQ(parsed("1000"), 1'000'000'000'000);
    EXPECT_EQ(parsed("0.000000001"), 1);
    EXPECT_EQ(parsed("007.5"), 7'500'000'000);
}

TEST(ParseUsd, AcceptsTheLargestRepresentableAmount) {
    EXPECT_EQ(parsed("9223372036.854775807"), std::numeric_limits<Nanos>::max());
}

TEST(ParseUsd, RejectsExponentsSignsAndMalformedText) {
    EXPECT_EQ(rejection("1e-3"), "exponents are not allowed; write the amount in plain decimal");
    EXPECT_EQ(rejection("1.5E2"), "exponents are not allowed; write the amount in plain decimal");
    EXPECT_EQ(rejection("-1"), "negative amounts are not allowed");
    EXPECT_EQ(rejection("-0.5"), "negative amounts are not allowed");
    EXPECT_EQ(rejection("+1"), "signs are not allowed");
    EXPECT_EQ(rejection(""), "empty amount");
    EXPECT_EQ(rejection(" 1"), "spaces are not allowed");
    EXPECT_EQ(rejection("1 "), "spaces are not allowed");
    EXPECT_EQ(rejection("1."), "a digit must follow the decimal point");
    EXPECT_EQ(rejection(".5"), "amount must start with a digit");
    EXPECT_EQ(rejection("0.0000000001"), "more than nine digits after the decimal point");
    EXPECT_EQ(rejection("1,000"), "not a plain non-negative decimal amount");
    EXPECT_EQ(rejection("1.2.3"), "not a plain non-negative decimal amount");
    EXPECT_EQ(rejection("0x10"), "not a plain non-negative decimal amount");
    EXPECT_EQ(rejection("inf"), "amount must start with a digit");
}

TEST(ParseUsd, RejectsOverflow) {
    EXPECT_EQ(rejection("9223372036.854775808"), "amount is too large");
    EXPECT_EQ(rejection("9223372037"), "amount is too large");
    EXPECT_EQ(rejection("99999999999999999999999"), "amount is too large");
}

TEST(FormatUsd, KeepsTwoDecimalsAndTrimsTheRest) {
    EXPECT_EQ(format_usd(10 * kNanosPerUsd), "10.00");
    EXPECT_EQ(format_usd(0), "0.00");
    EXPECT_EQ(format_usd(123), "0.000000123");
    EXPECT_EQ(format_usd(1), "0.000000001");
    EXPECT_EQ(format_usd(150'000'000), "0.15");
    EXPECT_EQ(format_usd(3'750'000'000), "3.75");
    EXPECT_EQ(format_usd(1'234'500'000), "1.2345");
    EXPECT_EQ(format_usd(-500'000'000), "-0.50");
    EXPECT_EQ(format_usd(-1), "-0.000000001");
    EXPECT_EQ(format_usd(std::numeric_limits<Nanos>::max()), "9223372036.854775807");
    EXPECT_EQ(format_usd(std::numeric_limits<Nanos>::min()), "-9223372036.854775808");
}

TEST(FormatUsd, RoundTripsThroughParse) {
    for (Nanos value : {Nanos{0}, Nanos{1}, Nanos{75'000'000}, Nanos{12'345'678'901}}) {
        Nanos back = -1;
        std::string error;
        ASSERT_TRUE(parse_usd(format_usd(value), back, error)) << error;
        EXPECT_EQ(back, value);
    }
}

TEST(CostOf, RoundsUpToTheNextNano) {
    // 1 token at 0.15 USD per million tokens = 150 nanos exactly.
    EXPECT_EQ(cost_of({{1, 150'000'000}}), 150);
    // 1 token at 0.000000001 USD per million = 1/1e6 nano -> 1 nano.
    EXPECT_EQ(cost_of({{1, 1}}), 1);
    // 999,999 tokens at 1 nano per million -> 0.999999 -> 1.
    EXPECT_EQ(cost_of({{999'999, 1}}), 1);
    EXPECT_EQ(cost_of({{1'000'000, 1}}), 1);
    EXPECT_EQ(cost_of({{1'000'001, 1}}), 2);
    // The ceiling applies to the sum, not to each part: 0.5 + 0.5 = 1.
    EXPECT_EQ(cost_of({{500'000, 1}, {500'000, 1}}), 1);
}

TEST(CostOf, SumsInputAndOutputAtTheirPrices) {
    // gpt-4o-mini: 1000 input at 0.15, 500 output at 0.60 per million tokens.
    // 1000*0.15e9/1e6 = 150'000; 500*0.60e9/1e6 = 300'000.
    EXPECT_EQ(cost_of({{1000, 150'000'000}, {500, 600'000'000}}), 450'000);
    // 7 tokens at 0.075 USD/M = 525 nanos exactly; 3 at 3.75 = 11'250.
    EXPECT_EQ(cost_of({{7, 75'000'000}, {3, 3'750'000'000}}), 11'775);
    EXPECT_EQ(cost_of({}), 0);
}

TEST(CostOf, NegativeTokensCountAsZero) {
    EXPECT_EQ(cost_of({{-5, 150'000'000}, {2, 150'000'000}}), 300);
    EXPECT_EQ(cost_of({{std::numeric_limits<std::int64_t>::min(), 1'000'000'000}}), 0);
}

TEST(CostOf, DoesNotOverflowIntermediateProducts) {
    // tokens * price overflows int64 but the cost itself fits: the product
    // must be formed in 128 bits before dividing.
    const std::int64_t tokens = 4'000'000'000'000;  // 4e12
    const Nanos price = 2'000'000'000'000;          // 2000 USD per million
    // 4e12 * 2e12 = 8e24; / 1e6 = 8e18 nanos, which still fits int64.
    EXPECT_EQ(cost_of({{tokens, price}}), 8'000'000'000'000'000'000);
}

TEST(CostOf, SaturatesInsteadOfWrapping) {
    const auto max = std::numeric_limits<std::int64_t>::max();
    EXPECT_EQ(cost_of({{max, max}, {max, max}, {max, max}}), max);
}

}  // namespace
}  // namespace spendcap
