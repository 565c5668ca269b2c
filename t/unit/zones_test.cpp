// Local calendars (SPEC section 2b, "Time zones"): local names, UTC instants,
// daylight saving, midnights that do not exist or come twice, far offsets, and
// the per-worker cache. Expected instants checked against `zdump -v`.
#include "base/zones.h"

#include "base/periods.h"

#include <gtest/gtest.h>

#include <limits>

namespace spendcap {
namespace {

constexpr std::int64_t kHour = 3'600;
constexpr std::int64_t kDay = 86'400;

std::int64_t at(const char *rfc3339) {
    std::int64_t t = 0;
    EXPECT_TRUE(parse_rfc3339(rfc3339, t)) << rfc3339;
    return t;
}

std::string utc(std::int64_t unix_seconds) { return format_rfc3339(unix_seconds); }

// Every period contains the moment, and the day is named by its first instant.
void expect_consistent(std::string_view zone, std::int64_t t) {
    const LocalCalendar c = local_calendar(zone, t);
    SCOPED_TRACE(std::string(zone) + " at " + utc(t));
    EXPECT_LE(c.day_start, t);
    EXPECT_LT(t, c.day_reset);
    EXPECT_LE(c.week_start, c.day_start);
    EXPECT_LE(c.day_reset, c.week_reset);
    EXPECT_LE(c.month_start, c.day_start);
    EXPECT_LE(c.day_reset, c.month_reset);
    EXPECT_EQ(local_calendar(zone, c.day_start).day, c.day);
    EXPECT_EQ(local_calendar(zone, c.day_reset - 1).day, c.day);
    EXPECT_NE(local_calendar(zone, c.day_reset).day, c.day);
    EXPECT_EQ(local_calendar(zone, c.week_start).week, c.week);
    EXPECT_NE(local_calendar(zone, c.week_reset).week, c.week);
    EXPECT_EQ(local_calendar(zone, c.month_start).month, c.month);
    EXPECT_NE(local_calendar(zone, c.month_reset).month, c.month);
}

TEST(Zones, PreloadSucceedsAndIsIdempotent) {
    EXPECT_TRUE(preload_time_zones());
    EXPECT_TRUE(preload_time_zones());
}

TEST(Zones, KnownNames) {
    EXPECT_TRUE(known_time_zone("UTC"));
    EXPECT_TRUE(known_time_zone("Europe/Berlin"));
    EXPECT_TRUE(known_time_zone("America/Los_Angeles"));
    EXPECT_TRUE(known_time_zone("Pacific/Kiritimati"));
    EXPECT_TRUE(known_time_zone("Etc/GMT+12"));
    EXPECT_TRUE(known_time_zone("US/Pacific"));  // a link of the database is a name of it too
    EXPECT_FALSE(known_time_zone(""));
    EXPECT_FALSE(known_time_zone("Nope/X"));
    EXPECT_FALSE(known_time_zone("europe/berlin"));  // names are exact
    EXPECT_FALSE(known_time_zone("Europe/Berlin "));
    EXPECT_FALSE(known_time_zone("Europe"));         // a folder
    EXPECT_FALSE(known_time_zone("localtime"));      // the host's zone, not a name of the database
    EXPECT_FALSE(known_time_zone("posixrules"));
    EXPECT_FALSE(known_time_zone("zone.tab"));
    EXPECT_FALSE(known_time_zone("../../../etc/passwd"));
    EXPECT_FALSE(known_time_zone(std::string_view("Europe/Berlin\0x", 15)));
}

TEST(Zones, UtcIsTheUtcPeriods) {
    for (std::int64_t t : {at("2026-11-21T10:30:00Z"), at("2026-12-31T23:59:59Z"), at("2027-01-03T12:00:00Z"),
                           at("2024-02-29T00:00:00Z"), std::int64_t{0}}) {
        const Periods p = periods_at(t);
        const IsoWeek w = iso_week_at(t);
        for (std::string_view zone : {"", "UTC"}) {
            const LocalCalendar c = local_calendar(zone, t);
            SCOPED_TRACE(utc(t));
            EXPECT_EQ(c.day, p.day);
            EXPECT_EQ(c.day_reset, p.day_reset);
            EXPECT_EQ(c.day_start, p.day_reset - kDay);
            EXPECT_EQ(c.month, p.month);
            EXPECT_EQ(c.month_reset, p.month_reset);
            EXPECT_EQ(c.week, w.name);
            EXPECT_EQ(c.week_start, w.start);
            EXPECT_EQ(c.week_reset, w.reset);
        }
        // The database's own UTC agrees with the arithmetic.
        const LocalCalendar etc = local_calendar("Etc/UTC", t);
        EXPECT_EQ(etc.day, p.day);
        EXPECT_EQ(etc.day_reset, p.day_reset);
        EXPECT_EQ(etc.month_reset, p.month_reset);
    }
    const LocalCalendar c = local_calendar("UTC", at("2026-12-01T00:00:00Z"));
    EXPECT_EQ(c.month, "2026-12");
    EXPECT_EQ(utc(c.month_start), "2026-12-01T00:00:00Z");
}

TEST(Zones, BerlinSpringForwardDayIs23Hours) {
    // 29 March 2026, 02:00 CET -> 03:00 CEST.
    const LocalCalendar c = local_calendar("Europe/Berlin", at("2026-03-29T12:00:00Z"));
    EXPECT_EQ(c.day, "2026-03-29");
    EXPECT_EQ(utc(c.day_start), "2026-03-28T23:00:00Z");
    EXPECT_EQ(utc(c.day_reset), "2026-03-29T22:00:00Z");
    EXPECT_EQ(c.day_reset - c.day_start, 23 * kHour);
    // A Sunday: the week ends with it, and its week began at winter time.
    EXPECT_EQ(c.week, "2026-W13");
    EXPECT_EQ(utc(c.week_start), "2026-03-22T23:00:00Z");
    EXPECT_EQ(utc(c.week_reset), "2026-03-29T22:00:00Z");
    // The month starts at +01:00 and resets at +02:00.
    EXPECT_EQ(c.month, "2026-03");
    EXPECT_EQ(utc(c.month_start), "2026-02-28T23:00:00Z");
    EXPECT_EQ(utc(c.month_reset), "2026-03-31T22:00:00Z");
    // Either side of the jump, the same day.
    EXPECT_EQ(local_calendar("Europe/Berlin", at("2026-03-29T00:59:59Z")).day, "2026-03-29");
    EXPECT_EQ(local_calendar("Europe/Berlin", at("2026-03-29T01:00:00Z")).day, "2026-03-29");
    EXPECT_EQ(local_calendar("Europe/Berlin", at("2026-03-28T22:59:59Z")).day, "2026-03-28");
    EXPECT_EQ(local_calendar("Europe/Berlin", at("2026-03-29T22:00:00Z")).day, "2026-03-30");
}

TEST(Zones, BerlinFallBackDayIs25Hours) {
    // 25 October 2026, 03:00 CEST -> 02:00 CET: 02:00-03:00 comes twice.
    const LocalCalendar c = local_calendar("Europe/Berlin", at("2026-10-25T12:00:00Z"));
    EXPECT_EQ(c.day, "2026-10-25");
    EXPECT_EQ(utc(c.day_start), "2026-10-24T22:00:00Z");
    EXPECT_EQ(utc(c.day_reset), "2026-10-25T23:00:00Z");
    EXPECT_EQ(c.day_reset - c.day_start, 25 * kHour);
    EXPECT_EQ(utc(c.week_start), "2026-10-18T22:00:00Z");
    EXPECT_EQ(utc(c.week_reset), "2026-10-25T23:00:00Z");
    EXPECT_EQ(utc(c.month_start), "2026-09-30T22:00:00Z");
    EXPECT_EQ(utc(c.month_reset), "2026-10-31T23:00:00Z");
    // Both 02:30s are the same day.
    EXPECT_EQ(local_calendar("Europe/Berlin", at("2026-10-25T00:30:00Z")).day, "2026-10-25");
    EXPECT_EQ(local_calendar("Europe/Berlin", at("2026-10-25T01:30:00Z")).day, "2026-10-25");
}

TEST(Zones, LosAngelesAcrossBothChanges) {
    // 8 March 2026, 02:00 PST -> 03:00 PDT.
    LocalCalendar c = local_calendar("America/Los_Angeles", at("2026-03-08T12:00:00Z"));
    EXPECT_EQ(c.day, "2026-03-08");
    EXPECT_EQ(utc(c.day_start), "2026-03-08T08:00:00Z");
    EXPECT_EQ(utc(c.day_reset), "2026-03-09T07:00:00Z");
    EXPECT_EQ(c.week, "2026-W10");
    EXPECT_EQ(utc(c.week_start), "2026-03-02T08:00:00Z");
    EXPECT_EQ(utc(c.week_reset), "2026-03-09T07:00:00Z");
    EXPECT_EQ(utc(c.month_start), "2026-03-01T08:00:00Z");
    EXPECT_EQ(utc(c.month_reset), "2026-04-01T07:00:00Z");
    // 1 November 2026, 02:00 PDT -> 01:00 PST.
    c = local_calendar("America/Los_Angeles", at("2026-11-01T12:00:00Z"));
    EXPECT_EQ(c.day, "2026-11-01");
    EXPECT_EQ(utc(c.day_start), "2026-11-01T07:00:00Z");
    EXPECT_EQ(utc(c.day_reset), "2026-11-02T08:00:00Z");
    EXPECT_EQ(c.day_reset - c.day_start, 25 * kHour);
    EXPECT_EQ(utc(c.month_start), "2026-11-01T07:00:00Z");
    EXPECT_EQ(utc(c.month_reset), "2026-12-01T08:00:00Z");
    // Already November in UTC, still October there.
    c = local_calendar("America/Los_Angeles", at("2026-11-01T05:00:00Z"));
    EXPECT_EQ(c.day, "2026-10-31");
    EXPECT_EQ(c.month, "2026-10");
    EXPECT_EQ(utc(c.month_reset), "2026-11-01T07:00:00Z");
}

TEST(Zones, NewYearInBerlinBeforeUtc) {
    const LocalCalendar c = local_calendar("Europe/Berlin", at("2026-12-31T23:30:00Z"));
    EXPECT_EQ(c.day, "2027-01-01");
    EXPECT_EQ(c.month, "2027-01");
    EXPECT_EQ(c.week, "2026-W53");  // Friday 1 January 2027: its week's Thursday is in 2026
    EXPECT_EQ(utc(c.day_start), "2026-12-31T23:00:00Z");
    EXPECT_EQ(utc(c.week_start), "2026-12-27T23:00:00Z");
    EXPECT_EQ(utc(c.week_reset), "2027-01-03T23:00:00Z");
    EXPECT_EQ(utc(c.month_start), "2026-12-31T23:00:00Z");
    EXPECT_EQ(utc(c.month_reset), "2027-01-31T23:00:00Z");
    // The same moment in UTC is still 2026.
    EXPECT_EQ(local_calendar("UTC", at("2026-12-31T23:30:00Z")).month, "2026-12");
}

TEST(Zones, BerlinWeekStartsMondayLocalMidnight) {
    // Winter: Monday 30 November 2026 00:00 CET is Sunday 23:00Z.
    EXPECT_EQ(local_calendar("Europe/Berlin", at("2026-11-29T22:59:59Z")).week, "2026-W48");
    const LocalCalendar c = local_calendar("Europe/Berlin", at("2026-11-29T23:00:00Z"));
    EXPECT_EQ(c.week, "2026-W49");
    EXPECT_EQ(c.day, "2026-11-30");
    EXPECT_EQ(utc(c.week_start), "2026-11-29T23:00:00Z");
    EXPECT_EQ(utc(c.week_reset), "2026-12-06T23:00:00Z");
    // Summer: Monday 29 June 2026 00:00 CEST is Sunday 22:00Z.
    EXPECT_EQ(local_calendar("Europe/Berlin", at("2026-06-28T21:59:59Z")).week, "2026-W26");
    const LocalCalendar s = local_calendar("Europe/Berlin", at("2026-06-28T22:00:00Z"));
    EXPECT_EQ(s.week, "2026-W27");
    EXPECT_EQ(utc(s.week_start), "2026-06-28T22:00:00Z");
}

TEST(Zones, FarOffsets) {
    // +14: already tomorrow.
    LocalCalendar c = local_calendar("Pacific/Kiritimati", at("2026-06-01T12:00:00Z"));
    EXPECT_EQ(c.day, "2026-06-02");
    EXPECT_EQ(utc(c.day_start), "2026-06-01T10:00:00Z");
    EXPECT_EQ(utc(c.day_reset), "2026-06-02T10:00:00Z");
    EXPECT_EQ(c.week, "2026-W23");
    EXPECT_EQ(utc(c.week_start), "2026-05-31T10:00:00Z");
    EXPECT_EQ(utc(c.month_start), "2026-05-31T10:00:00Z");
    // -11 and -12: still yesterday.
    c = local_calendar("Pacific/Pago_Pago", at("2026-06-01T05:00:00Z"));
    EXPECT_EQ(c.day, "2026-05-31");
    EXPECT_EQ(c.month, "2026-05");
    EXPECT_EQ(utc(c.day_start), "2026-05-31T11:00:00Z");
    EXPECT_EQ(utc(c.month_reset), "2026-06-01T11:00:00Z");
    c = local_calendar("Etc/GMT+12", at("2026-06-01T05:00:00Z"));
    EXPECT_EQ(c.day, "2026-05-31");
    EXPECT_EQ(utc(c.day_start), "2026-05-31T12:00:00Z");
    EXPECT_EQ(utc(c.day_reset), "2026-06-01T12:00:00Z");
    // 26 hours apart: the same instant, two local dates two days apart.
    EXPECT_EQ(local_calendar("Pacific/Kiritimati", at("2026-06-01T11:00:00Z")).day, "2026-06-02");
    EXPECT_EQ(local_calendar("Etc/GMT+12", at("2026-06-01T11:00:00Z")).day, "2026-05-31");
}

TEST(Zones, MidnightThatDoesNotExistStartsTheDayAtTheTransition) {
    // Havana, 9 March 2025: 00:00 CST -> 01:00 CDT.
    LocalCalendar c = local_calendar("America/Havana", at("2025-03-09T12:00:00Z"));
    EXPECT_EQ(c.day, "2025-03-09");
    EXPECT_EQ(utc(c.day_start), "2025-03-09T05:00:00Z");
    EXPECT_EQ(utc(c.day_reset), "2025-03-10T04:00:00Z");
    EXPECT_EQ(local_calendar("America/Havana", at("2025-03-09T04:59:59Z")).day, "2025-03-08");
    EXPECT_EQ(utc(local_calendar("America/Havana", at("2025-03-08T12:00:00Z")).day_reset), "2025-03-09T05:00:00Z");
    // Santiago, 7 September 2025: 24:00 -04 -> 01:00 -03.
    c = local_calendar("America/Santiago", at("2025-09-07T12:00:00Z"));
    EXPECT_EQ(utc(c.day_start), "2025-09-07T04:00:00Z");
    EXPECT_EQ(utc(c.day_reset), "2025-09-08T03:00:00Z");
    // Beirut, 30 March 2025: 00:00 EET -> 01:00 EEST.
    c = local_calendar("Asia/Beirut", at("2025-03-30T12:00:00Z"));
    EXPECT_EQ(utc(c.day_start), "2025-03-29T22:00:00Z");
    EXPECT_EQ(utc(c.day_reset), "2025-03-30T21:00:00Z");
}

TEST(Zones, MidnightThatComesTwiceStartsTheDayAtTheFirst) {
    // Havana, 2 November 2025: 01:00 CDT -> 00:00 CST, so 00:00-01:00 comes twice.
    const LocalCalendar c = local_calendar("America/Havana", at("2025-11-02T05:30:00Z"));
    EXPECT_EQ(c.day, "2025-11-02");
    EXPECT_EQ(utc(c.day_start), "2025-11-02T04:00:00Z");
    EXPECT_EQ(utc(c.day_reset), "2025-11-03T05:00:00Z");
    EXPECT_EQ(local_calendar("America/Havana", at("2025-11-02T04:30:00Z")).day, "2025-11-02");
    EXPECT_EQ(utc(local_calendar("America/Havana", at("2025-11-01T12:00:00Z")).day_reset), "2025-11-02T04:00:00Z");
}

TEST(Zones, FallBackAcrossMidnightNeverReturnsToAnEndedDay) {
    // Goose Bay, 7 November 2010: 00:01 ADT -> 23:01 AST of the 6th. The 7th began
    // at its first midnight (03:00Z); the hour the clock reads the 6th again still
    // counts in the 7th, so a period never comes back after its reset.
    const LocalCalendar before = local_calendar("America/Goose_Bay", at("2010-11-07T02:59:59Z"));
    EXPECT_EQ(before.day, "2010-11-06");
    EXPECT_EQ(utc(before.day_reset), "2010-11-07T03:00:00Z");
    for (const char *moment : {"2010-11-07T03:00:00Z", "2010-11-07T03:01:00Z", "2010-11-07T03:30:00Z",
                               "2010-11-07T04:00:00Z", "2010-11-07T12:00:00Z"}) {
        const LocalCalendar c = local_calendar("America/Goose_Bay", at(moment));
        EXPECT_EQ(c.day, "2010-11-07") << moment;
        EXPECT_EQ(utc(c.day_start), "2010-11-07T03:00:00Z") << moment;
        EXPECT_EQ(utc(c.day_reset), "2010-11-08T04:00:00Z") << moment;
    }
}

TEST(Zones, SkippedDay) {
    // Samoa skipped 30 December 2011: the 29th ends where the 31st begins.
    const LocalCalendar c = local_calendar("Pacific/Apia", at("2011-12-29T12:00:00Z"));
    EXPECT_EQ(c.day, "2011-12-29");
    EXPECT_EQ(utc(c.day_reset), "2011-12-30T10:00:00Z");
    const LocalCalendar next = local_calendar("Pacific/Apia", c.day_reset);
    EXPECT_EQ(next.day, "2011-12-31");
    EXPECT_EQ(next.day_start, c.day_reset);
    EXPECT_EQ(utc(next.month_reset), "2011-12-31T10:00:00Z");
}

TEST(Zones, PeriodsContainTheMomentAllYear) {
    for (std::string_view zone : {"Europe/Berlin", "America/Los_Angeles", "America/Santiago", "America/Havana",
                                  "Asia/Beirut", "Pacific/Kiritimati", "Pacific/Chatham", "Asia/Kolkata",
                                  "Australia/Lord_Howe", "America/Goose_Bay"}) {
        for (std::int64_t t = at("2010-01-01T00:30:00Z"); t < at("2010-12-31T00:00:00Z"); t += 7 * kHour + 13 * 60)
            expect_consistent(zone, t);
        for (std::int64_t t = at("2026-01-01T00:30:00Z"); t < at("2027-01-01T00:00:00Z"); t += 7 * kHour + 13 * 60)
            expect_consistent(zone, t);
    }
}

TEST(Zones, BerlinDaysAre23To25Hours) {
    int short_days = 0, long_days = 0;
    for (std::int64_t t = at("2026-01-01T12:00:00Z"); t < at("2027-01-01T00:00:00Z");) {
        const LocalCalendar c = local_calendar("Europe/Berlin", t);
        const std::int64_t length = c.day_reset - c.day_start;
        short_days += length == 23 * kHour;
        long_days += length == 25 * kHour;
        EXPECT_TRUE(length == 23 * kHour || length == 24 * kHour || length == 25 * kHour) << c.day;
        t = c.day_reset;
    }
    EXPECT_EQ(short_days, 1);
    EXPECT_EQ(long_days, 1);
}

TEST(Zones, UnknownZoneIsUtcAndDoesNotThrow) {
    const std::int64_t t = at("2026-12-31T23:30:00Z");
    const LocalCalendar utc_calendar = local_calendar("UTC", t);
    for (std::string_view zone : {"Nope/X", "europe/berlin", "localtime", "../../etc/passwd", "Europe"}) {
        LocalCalendar c;
        EXPECT_NO_THROW(c = local_calendar(zone, t)) << zone;
        EXPECT_EQ(c.day, utc_calendar.day) << zone;
        EXPECT_EQ(c.day_reset, utc_calendar.day_reset) << zone;
        EXPECT_EQ(c.week, utc_calendar.week) << zone;
        EXPECT_EQ(c.month_reset, utc_calendar.month_reset) << zone;
    }
}

TEST(Zones, ExtremeMomentsDoNotCrash) {
    for (std::int64_t t : {std::int64_t{-1}, std::int64_t{-5'000'000'000}, std::numeric_limits<std::int64_t>::min(),
                           std::numeric_limits<std::int64_t>::max(), std::int64_t{253'402'300'799}}) {
        for (std::string_view zone : {"UTC", "Europe/Berlin", "Pacific/Kiritimati", "Etc/GMT+12"}) {
            LocalCalendar c;
            EXPECT_NO_THROW(c = local_calendar(zone, t));
            EXPECT_FALSE(c.day.empty());
            EXPECT_LT(c.day_start, c.day_reset);
            EXPECT_LE(c.month_start, c.day_start);
        }
    }
    // Before 1970, a moment still lies in its day.
    expect_consistent("Europe/Berlin", -5'000'000'000);
    expect_consistent("UTC", -1);
    EXPECT_EQ(local_calendar("UTC", -1).day, "1969-12-31");
}

TEST(ZonesCache, AnswersAsLocalCalendar) {
    CalendarCache cache;
    for (std::string_view zone : {"Europe/Berlin", "America/Los_Angeles", "UTC", "", "Pacific/Kiritimati",
                                  "America/Goose_Bay", "Nope/X"}) {
        for (std::int64_t t = at("2026-10-24T00:00:00Z"); t < at("2026-11-03T00:00:00Z"); t += 17 * 60) {
            const LocalCalendar &cached = cache.at(zone, t);
            const LocalCalendar fresh = local_calendar(zone, t);
            ASSERT_EQ(cached.day, fresh.day) << zone << " " << utc(t);
            ASSERT_EQ(cached.day_start, fresh.day_start);
            ASSERT_EQ(cached.day_reset, fresh.day_reset);
            ASSERT_EQ(cached.week, fresh.week);
            ASSERT_EQ(cached.week_reset, fresh.week_reset);
            ASSERT_EQ(cached.month, fresh.month);
            ASSERT_EQ(cached.month_reset, fresh.month_reset);
        }
    }
    EXPECT_EQ(cache.size(), 7u);
}

TEST(ZonesCache, RecomputesAfterTheResetAndWhenTimeGoesBack) {
    CalendarCache cache;
    const LocalCalendar &first = cache.at("Europe/Berlin", at("2026-10-25T12:00:00Z"));
    EXPECT_EQ(first.day, "2026-10-25");
    const std::int64_t reset = first.day_reset;
    EXPECT_EQ(cache.at("Europe/Berlin", reset - 1).day, "2026-10-25");
    EXPECT_EQ(cache.at("Europe/Berlin", reset).day, "2026-10-26");
    EXPECT_EQ(cache.at("Europe/Berlin", reset).day_start, reset);
    // A clock stepped back gets the earlier day again.
    EXPECT_EQ(cache.at("Europe/Berlin", reset - 1).day, "2026-10-25");
    // Across a month end.
    EXPECT_EQ(cache.at("Europe/Berlin", at("2026-10-31T22:59:59Z")).month, "2026-10");
    EXPECT_EQ(cache.at("Europe/Berlin", at("2026-10-31T23:00:00Z")).month, "2026-11");
    EXPECT_EQ(cache.size(), 1u);
}

TEST(ZonesCache, StaysBounded) {
    CalendarCache cache;
    const std::int64_t t = at("2026-06-01T12:00:00Z");
    for (int i = 0; i < 3 * static_cast<int>(CalendarCache::kMaxZones); ++i) {
        const std::string zone = "Nope/" + std::to_string(i);
        EXPECT_EQ(cache.at(zone, t + i).day, "2026-06-01");
        ASSERT_LE(cache.size(), CalendarCache::kMaxZones);
    }
    EXPECT_EQ(cache.size(), CalendarCache::kMaxZones);
    // Still right for a real zone once full.
    EXPECT_EQ(cache.at("Pacific/Kiritimati", t).day, "2026-06-02");
    EXPECT_EQ(cache.at("Europe/Berlin", t).day, "2026-06-01");
    EXPECT_LE(cache.size(), CalendarCache::kMaxZones);
}

}  // namespace
}  // namespace spendcap
