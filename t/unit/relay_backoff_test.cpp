// The relay's backoff (relay/backoff.h): doubling up to the cap, Retry-After
// in both of its forms, giving up, and the durations of the relay file.
#include "relay/backoff.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>

using namespace spendcap::relay;

namespace {

constexpr std::int64_t kNow = 1796486627;  // 2026-12-05T16:03:47Z, a Saturday

TEST(RelayBackoff, DoublesFromFirstAndStopsAtMax) {
    const RetryConfig retry;  // 1s .. 5m
    EXPECT_EQ(next_delay_ms(retry, 0), 0);
    EXPECT_EQ(next_delay_ms(retry, -3), 0);
    EXPECT_EQ(next_delay_ms(retry, 1), 1000);
    EXPECT_EQ(next_delay_ms(retry, 2), 2000);
    EXPECT_EQ(next_delay_ms(retry, 3), 4000);
    EXPECT_EQ(next_delay_ms(retry, 9), 256000);
    EXPECT_EQ(next_delay_ms(retry, 10), 300000);  // 512 s is past the 5 min cap
    EXPECT_EQ(next_delay_ms(retry, 1000000), 300000);
    EXPECT_EQ(next_delay_ms(retry, std::numeric_limits<int>::max()), 300000);
}

TEST(RelayBackoff, LargeSettingsCapInsteadOfOverflowing) {
    RetryConfig retry;
    retry.first_ms = std::int64_t{1} << 61;
    retry.max_ms = std::numeric_limits<std::int64_t>::max();
    EXPECT_EQ(next_delay_ms(retry, 2), std::int64_t{1} << 62);
    EXPECT_EQ(next_delay_ms(retry, 3), retry.max_ms);
    EXPECT_EQ(next_delay_ms(retry, 64), retry.max_ms);

    retry.first_ms = 7000;
    retry.max_ms = 5000;  // refused by the config; never more than max all the same
    EXPECT_EQ(next_delay_ms(retry, 1), 5000);
}

TEST(RelayRetryAfter, DeltaSeconds) {
    EXPECT_EQ(parse_retry_after_ms("120", kNow), 120000);
    EXPECT_EQ(parse_retry_after_ms("0", kNow), 0);
    EXPECT_EQ(parse_retry_after_ms(" 5\t", kNow), 5000);  // optional whitespace around
    EXPECT_EQ(parse_retry_after_ms("86400", kNow), kMaxRetryAfterMs);
    EXPECT_EQ(parse_retry_after_ms("86401", kNow), kMaxRetryAfterMs);
    EXPECT_EQ(parse_retry_after_ms("99999999999999999999999", kNow), kMaxRetryAfterMs);
}

TEST(RelayRetryAfter, HttpDate) {
    EXPECT_EQ(parse_retry_after_ms("Sat, 05 Dec 2026 16:04:17 GMT", kNow), 30000);
    EXPECT_EQ(parse_retry_after_ms("Sat, 05 Dec 2026 16:03:47 GMT", kNow), 0);
    // Already past: try now.
    EXPECT_EQ(parse_retry_after_ms("Sun, 06 Nov 1994 08:49:37 GMT", kNow), 0);
    EXPECT_EQ(parse_retry_after_ms("Sun, 06 Nov 1994 08:49:37 GMT", 784111777 - 90), 90000);
    // Weeks ahead is held to a day.
    EXPECT_EQ(parse_retry_after_ms("Thu, 31 Dec 2026 23:59:59 GMT", kNow), kMaxRetryAfterMs);
    EXPECT_EQ(parse_retry_after_ms("Tue, 29 Feb 2028 00:00:00 GMT", 1835395200 - 1), 1000);  // leap day
}

TEST(RelayRetryAfter, AnythingElseIsNotAWait) {
    for (const char *bad : {"", " ", "-5", "+5", "1.5", "5s", "0x10", "12 34", "soon",
                            "Sat, 05 Dec 2026 16:04:17 UTC",   // not GMT
                            "Saturday, 05-Dec-26 16:04:17 GMT",  // RFC 850: obsolete
                            "Sat Dec  5 16:04:17 2026",         // asctime: obsolete
                            "Sat, 5 Dec 2026 16:04:17 GMT", "Sat, 05 dec 2026 16:04:17 GMT",
                            "Xyz, 05 Dec 2026 16:04:17 GMT", "Sat, 31 Nov 2026 16:04:17 GMT",
                            "Sun, 29 Feb 2026 00:00:00 GMT", "Sat, 05 Dec 2026 24:00:00 GMT",
                            "Sat, 05 Dec 2026 16:60:00 GMT", "Sat, 05 Dec 2026 16:04:17 GMT x"})
        EXPECT_EQ(parse_retry_after_ms(bad, kNow), std::nullopt) << bad;
}

TEST(RelayBackoff, GivesUpOnceGiveUpAfterHasPassed) {
    const RetryConfig retry;  // 24 h
    const std::int64_t first = kNow * 1000;
    EXPECT_FALSE(should_give_up(retry, first, first));
    EXPECT_FALSE(should_give_up(retry, first, first + 86400000 - 1));
    EXPECT_TRUE(should_give_up(retry, first, first + 86400000));
    EXPECT_TRUE(should_give_up(retry, first, first + 10 * 86400000LL));
    EXPECT_FALSE(should_give_up(retry, first, first - 5000));  // a clock step back
    EXPECT_FALSE(should_give_up(retry, std::numeric_limits<std::int64_t>::max() - 10,
                                std::numeric_limits<std::int64_t>::max()));
}

TEST(RelayDuration, IntegerAndUnit) {
    EXPECT_EQ(parse_duration_ms("250ms"), 250);
    EXPECT_EQ(parse_duration_ms("1s"), 1000);
    EXPECT_EQ(parse_duration_ms("5m"), 300000);
    EXPECT_EQ(parse_duration_ms("24h"), 86400000);
    EXPECT_EQ(parse_duration_ms("007s"), 7000);
    EXPECT_EQ(parse_duration_ms("2562047788015h"), 2562047788015LL * 3600000);
    for (const char *bad : {"", "0s", "0ms", "10", "s", "-1s", "+1s", "1.5s", "1 s", " 1s", "1s ", "1S", "1d",
                            "1sec", "1hm", "2562047788016h", "99999999999999999999ms"})
        EXPECT_EQ(parse_duration_ms(bad), 0) << bad;
}

}  // namespace
