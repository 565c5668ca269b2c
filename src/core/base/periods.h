// UTC calendar periods: the names of daily/monthly counters, their expiry and
// the moment they reset.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace spendcap {

enum class Window { daily, monthly, lifetime };

const char *window_name(Window w);  // "daily", "monthly", "lifetime"

struct Periods {
    std::int64_t now = 0;           // unix seconds the periods were taken at
    std::string day;                // "2026-11-21"
    std::string month;              // "2026-11"
    std::int64_t day_reset = 0;     // unix seconds of the next UTC day's start
    std::int64_t month_reset = 0;   // unix seconds of the next UTC month's start
    std::int64_t day_expire_at = 0;   // counters expire 35 days after their day ends
    std::int64_t month_expire_at = 0; // ... and 400 days after their month ends
    // Per-minute rates (rpm / tpm) count over fixed UTC minutes.
    std::string minute;               // "2026-11-21T10:05"
    std::int64_t minute_reset = 0;    // unix seconds of the next minute's start
    std::int64_t minute_expire_at = 0;  // rate counters outlive their minute by 60 s, so a
                                        // settlement shortly after still finds its counter
    // Seconds until the minute resets (1..60): a 429's Retry-After.
    std::int64_t minute_retry_after() const { return minute_reset - now; }
};

Periods periods_at(std::int64_t unix_seconds);

// Suffix of a counter key for a window: "d:2026-11-21", "m:2026-11", "life".
std::string window_suffix(const Periods &p, Window w);
// Unix seconds of the window's reset (0 for lifetime).
std::int64_t window_reset(const Periods &p, Window w);
// EXPIREAT for the window's counter (0 = never, for lifetime).
std::int64_t window_expire_at(const Periods &p, Window w);

// The ISO 8601 week a moment falls in (UTC), for weekly windows (SPEC
// section 2b): weeks start on Monday 00:00, and a week belongs to the year of
// its Thursday, so 2027-01-03 is in "2026-W53" and 2024-12-30 in "2025-W01".
struct IsoWeek {
    std::string name;         // "2026-W49": counters ...:w:2026-W49
    std::int64_t start = 0;   // unix seconds of its Monday 00:00
    std::int64_t reset = 0;   // ... of the next Monday 00:00
};
IsoWeek iso_week_at(std::int64_t unix_seconds);

// "2026-12-01T00:00:00Z"
std::string format_rfc3339(std::int64_t unix_seconds);
// Accepts "2026-01-10T00:00:00Z", "2026-01-10T00:00:00+02:00",
// fractional seconds, and a bare date "2026-01-10" (midnight UTC).
bool parse_rfc3339(std::string_view text, std::int64_t &unix_seconds);

}  // namespace spendcap
