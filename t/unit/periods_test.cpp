// UTC periods: counter names, resets and expiries across month, year and leap-day ends.
#include "base/periods.h"

#include <gtest/gtest.h>

#include <ctime>

namespace spendcap {
namespace {

constexpr std::int64_t kDay = 86'400;

// Reference values from `date -u -d ... +%s`.
constexpr std::int64_t k2026_11_21_10_30 = 1'795'257'000;
constexpr std::int64_t k2026_12_01 = 1'796'083'200;
constexpr std::int64_t k2026_12_31_23_59_59 = 1'798'761'599;
constexpr std::int64_t k2027_01_01 = 1'798'761'600;
constexpr std::int64_t k2024_02_29_12_00 = 1'709'208'000;
constexpr std::int64_t k2024_03_01 = 1'709'251'200;
constexpr std::int64_t k2100_02_28 = 4'107'456'000;
constexpr std::int64_t k2100_03_01 = 4'107'542'400;
constexpr std::int64_t k2000_02_29 = 951'782'400;
constexpr std::int64_t k2026_01_10 = 1'768'003'200;

TEST(WindowName, NamesEachWindow) {
    EXPECT_STREQ(window_name(Window::daily), "daily");
    EXPECT_STREQ(window_name(Window::monthly), "monthly");
    EXPECT_STREQ(window_name(Window::lifetime), "lifetime");
}

TEST(Periods, MidMonth) {
    const Periods p = periods_at(k2026_11_21_10_30);
    EXPECT_EQ(p.now, k2026_11_21_10_30);
    EXPECT_EQ(p.day, "2026-11-21");
    EXPECT_EQ(p.month, "2026-11");
    EXPECT_EQ(format_rfc3339(p.day_reset), "2026-11-22T00:00:00Z");
    EXPECT_EQ(p.month_reset, k2026_12_01);
    EXPECT_EQ(window_suffix(p, Window::daily), "d:2026-11-21");
    EXPECT_EQ(window_suffix(p, Window::monthly), "m:2026-11");
    EXPECT_EQ(window_suffix(p, Window::lifetime), "life");
}

TEST(Periods, LastSecondOfTheYear) {
    const Periods p = periods_at(k2026_12_31_23_59_59);
    EXPECT_EQ(p.day, "2026-12-31");
    EXPECT_EQ(p.month, "2026-12");
    EXPECT_EQ(p.day_reset, k2027_01_01);
    EXPECT_EQ(p.month_reset, k2027_01_01);
    EXPECT_EQ(format_rfc3339(window_reset(p, Window::daily)), "2027-01-01T00:00:00Z");
    EXPECT_EQ(format_rfc3339(window_reset(p, Window::monthly)), "2027-01-01T00:00:00Z");
    EXPECT_EQ(window_reset(p, Window::lifetime), 0);
}

TEST(Periods, FirstSecondOfTheYearBelongsToTheNewPeriods) {
    const Periods p = periods_at(k2027_01_01);
    EXPECT_EQ(p.day, "2027-01-01");
    EXPECT_EQ(p.month, "2027-01");
    EXPECT_EQ(format_rfc3339(p.day_reset), "2027-01-02T00:00:00Z");
    EXPECT_EQ(format_rfc3339(p.month_reset), "2027-02-01T00:00:00Z");
}

TEST(Periods, LeapDay) {
    const Periods p = periods_at(k2024_02_29_12_00);
    EXPECT_EQ(p.day, "2024-02-29");
    EXPECT_EQ(p.month, "2024-02");
    EXPECT_EQ(p.day_reset, k2024_03_01);
    EXPECT_EQ(p.month_reset, k2024_03_01);
}

TEST(Periods, CenturyYearsFollowTheGregorianRule) {
    // 2100 is not a leap year: February has 28 days.
    const Periods p2100 = periods_at(k2100_02_28 + 3600);
    EXPECT_EQ(p2100.day, "2100-02-28");
    EXPECT_EQ(p2100.day_reset, k2100_03_01);
    EXPECT_EQ(p2100.month_reset, k2100_03_01);
    // 2000 is (divisible by 400).
    EXPECT_EQ(periods_at(k2000_02_29).day, "2000-02-29");
}

TEST(Periods, BeforeTheEpochStillFloorsToTheDay) {
    const Periods p = periods_at(-1);
    EXPECT_EQ(p.day, "1969-12-31");
    EXPECT_EQ(p.month, "1969-12");
    EXPECT_EQ(p.day_reset, 0);
    EXPECT_EQ(p.month_reset, 0);
}

TEST(Periods, CountersExpireAfterTheirPeriodEnds) {
    const Periods p = periods_at(k2026_11_21_10_30);
    EXPECT_EQ(p.day_expire_at, p.day_reset + 35 * kDay);
    EXPECT_EQ(format_rfc3339(window_expire_at(p, Window::daily)), "2026-12-27T00:00:00Z");
    EXPECT_EQ(p.month_expire_at, k2026_12_01 + 400 * kDay);
    EXPECT_EQ(format_rfc3339(window_expire_at(p, Window::monthly)), "2028-01-05T00:00:00Z");
    EXPECT_EQ(window_expire_at(p, Window::lifetime), 0);
}

TEST(MinuteWindow, NamesTheUtcMinuteAndResetsAtItsEnd) {
    const Periods p = periods_at(k2026_11_21_10_30 + 17);  // 10:30:17
    EXPECT_EQ(p.minute, "2026-11-21T10:30");
    EXPECT_EQ(p.minute_reset, k2026_11_21_10_30 + 60);
    EXPECT_EQ(p.minute_retry_after(), 43);
    EXPECT_EQ(p.minute_expire_at, k2026_11_21_10_30 + 120);
}

TEST(MinuteWindow, FirstSecondOfAMinuteWaitsTheWholeMinute) {
    const Periods p = periods_at(k2026_11_21_10_30);
    EXPECT_EQ(p.minute, "2026-11-21T10:30");
    EXPECT_EQ(p.minute_retry_after(), 60);
}

TEST(MinuteWindow, LastSecondWaitsOneSecondAndTheNextSecondIsANewMinute) {
    const Periods last = periods_at(k2026_11_21_10_30 + 59);
    EXPECT_EQ(last.minute, "2026-11-21T10:30");
    EXPECT_EQ(last.minute_retry_after(), 1);
    EXPECT_EQ(periods_at(k2026_11_21_10_30 + 60).minute, "2026-11-21T10:31");
}

TEST(MinuteWindow, LastMinuteOfTheYearRollsIntoTheNewYear) {
    const Periods p = periods_at(k2026_12_31_23_59_59);
    EXPECT_EQ(p.minute, "2026-12-31T23:59");
    EXPECT_EQ(p.minute_reset, k2027_01_01);
    EXPECT_EQ(periods_at(k2027_01_01).minute, "2027-01-01T00:00");
}

TEST(MinuteWindow, BeforeTheEpochFloorsToTheMinute) {
    const Periods p = periods_at(-1);  // 1969-12-31T23:59:59
    EXPECT_EQ(p.minute, "1969-12-31T23:59");
    EXPECT_EQ(p.minute_reset, 0);
    EXPECT_EQ(p.minute_retry_after(), 1);
}

TEST(Periods, AgreesWithGmtimeForEveryDayOfFourCenturies) {
    for (std::int64_t day = -25'567; day < 120'000; ++day) {  // 1900 .. 2298
        const std::int64_t t = day * kDay + 43'210;
        const std::time_t tt = static_cast<std::time_t>(t);
        std::tm tm{};
        ASSERT_NE(gmtime_r(&tt, &tm), nullptr);
        char expected_day[16], expected_month[16];
        std::strftime(expected_day, sizeof expected_day, "%Y-%m-%d", &tm);
        std::strftime(expected_month, sizeof expected_month, "%Y-%m", &tm);
        const Periods p = periods_at(t);
        ASSERT_EQ(p.day, expected_day) << t;
        ASSERT_EQ(p.month, expected_month) << t;
        ASSERT_EQ(p.day_reset, (day + 1) * kDay) << t;
        // The month resets on the first day after this one that is a 1st.
        const std::time_t reset = static_cast<std::time_t>(p.month_reset);
        std::tm reset_tm{};
        gmtime_r(&reset, &reset_tm);
        ASSERT_EQ(reset_tm.tm_mday, 1) << t;
        ASSERT_EQ(reset_tm.tm_hour, 0) << t;
        ASSERT_EQ((reset_tm.tm_mon + 11) % 12, tm.tm_mon) << t;
        ASSERT_GT(p.month_reset, t);
        ASSERT_LE(p.month_reset - t, 31 * kDay);
    }
}

TEST(Rfc3339, Formats) {
    EXPECT_EQ(format_rfc3339(0), "1970-01-01T00:00:00Z");
    EXPECT_EQ(format_rfc3339(k2026_12_01), "2026-12-01T00:00:00Z");
    EXPECT_EQ(format_rfc3339(k2026_12_31_23_59_59), "2026-12-31T23:59:59Z");
    EXPECT_EQ(format_rfc3339(-1), "1969-12-31T23:59:59Z");
}

std::int64_t parsed(const char *text) {
    std::int64_t out = -12345;
    EXPECT_TRUE(parse_rfc3339(text, out)) << text;
    return out;
}

TEST(Rfc3339, ParsesUtcOffsetsFractionsAndBareDates) {
    EXPECT_EQ(parsed("2026-01-10T00:00:00Z"), k2026_01_10);
    EXPECT_EQ(parsed("2026-01-10t00:00:00z"), k2026_01_10);
    EXPECT_EQ(parsed("2026-01-10 00:00:00Z"), k2026_01_10);
    EXPECT_EQ(parsed("2026-01-10"), k2026_01_10);
    EXPECT_EQ(parsed("2026-01-10T02:00:00+02:00"), k2026_01_10);
    EXPECT_EQ(parsed("2026-01-09T19:30:00-04:30"), k2026_01_10);
    EXPECT_EQ(parsed("2026-01-10T00:00:00+00:00"), k2026_01_10);
    EXPECT_EQ(parsed("2026-01-10T00:00:00.999Z"), k2026_01_10);
    EXPECT_EQ(parsed("2026-12-31T23:59:59.5Z"), k2026_12_31_23_59_59);
    EXPECT_EQ(parsed("2024-02-29T12:00:00Z"), k2024_02_29_12_00);
    // An offset can carry the instant into the next year.
    EXPECT_EQ(parsed("2026-12-31T23:00:00-01:00"), k2027_01_01);
}

TEST(Rfc3339, RejectsMalformedTimes) {
    for (const char *bad : {"", "2026", "2026-1-10", "2026-01-10T", "2026-01-10T00:00:00",
                            "2026-01-10T00:00Z", "2026-13-01", "2026-00-01", "2026-02-29",
                            "2100-02-29", "2026-04-31", "2026-01-32", "2026-01-10T24:00:00Z",
                            "2026-01-10T00:60:00Z", "2026-01-10T00:00:60Z", "2026-01-10T00:00:00.Z",
                            "2026-01-10T00:00:00+0200", "2026-01-10T00:00:00+02", "2026-01-10X00:00:00Z",
                            "2026-01-10T00:00:00Zjunk", " 2026-01-10", "2026-01-10 ",
                            "2026-01-10T00:00:00+24:00"}) {
        std::int64_t out = 777;
        EXPECT_FALSE(parse_rfc3339(bad, out)) << bad;
        EXPECT_EQ(out, 777) << bad;
    }
}

TEST(Rfc3339, RoundTrips) {
    for (std::int64_t t : {std::int64_t{0}, k2026_11_21_10_30, k2026_12_31_23_59_59, k2027_01_01,
                           k2024_02_29_12_00, k2100_03_01 - 1, std::int64_t{-86'401}}) {
        std::int64_t back = 0;
        ASSERT_TRUE(parse_rfc3339(format_rfc3339(t), back)) << t;
        EXPECT_EQ(back, t);
    }
}


// Python's date.isocalendar() gives the same names; the instants are noon UTC.
TEST(IsoWeek, NamesTheWeekByTheYearOfItsThursday) {
    struct Case {
        std::int64_t noon;
        const char *name;
        std::int64_t reset;
    };
    const Case cases[] = {
        {1796472000, "2026-W49", 1796601600},  // Saturday 2026-12-05
        {1609502400, "2020-W53", 1609718400},  // Friday 2021-01-01: the week of 2020's last Thursday
        {1735560000, "2025-W01", 1736121600},  // Monday 2024-12-30: 2025's first Thursday
        {1798977600, "2026-W53", 1799020800},  // Sunday 2027-01-03: 2026 has 53 weeks
        {1798459200, "2026-W53", 1799020800},  // Monday 2026-12-28
        {43200, "1970-W01", 345600},           // Thursday 1970-01-01
        {946814400, "1999-W52", 946857600},    // Sunday 2000-01-02
    };
    for (const Case &c : cases) {
        const IsoWeek w = iso_week_at(c.noon);
        EXPECT_EQ(w.name, c.name) << c.noon;
        EXPECT_EQ(w.reset, c.reset) << c.noon;
        EXPECT_EQ(w.reset - w.start, 7 * kDay) << c.noon;
    }
}

TEST(IsoWeek, StartsAtMondayMidnightExactly) {
    const IsoWeek w = iso_week_at(1796472000);  // in 2026-W49
    EXPECT_EQ(iso_week_at(w.start).name, "2026-W49");
    EXPECT_EQ(iso_week_at(w.start - 1).name, "2026-W48");
    EXPECT_EQ(iso_week_at(w.reset - 1).name, "2026-W49");
    EXPECT_EQ(iso_week_at(w.reset).name, "2026-W50");
    EXPECT_EQ(iso_week_at(-1).name, "1970-W01");  // Wednesday 1969-12-31: the week of 1970's first Thursday
}

}  // namespace
}  // namespace spendcap
