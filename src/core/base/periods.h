// UTC calendar periods: the names of daily/monthly counters, their expiry and
// the moment they reset.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "base/zones.h"

namespace spendcap {

// In check order (SPEC section 2b puts weekly between daily and monthly).
enum class Window { daily, weekly, monthly, lifetime };

const char *window_name(Window w);  // "daily", "weekly", "monthly", "lifetime"

struct Periods {
    std::int64_t now = 0;           // unix seconds the periods were taken at
    std::string day;                // "2026-11-21"
    std::string week;               // "2026-W47" (ISO week)
    std::string month;              // "2026-11"
    // Unix seconds each period started and resets at (the next one's start):
    // local midnights of the org's time zone, UTC by default.
    std::int64_t day_start = 0, day_reset = 0;
    std::int64_t week_start = 0, week_reset = 0;
    std::int64_t month_start = 0, month_reset = 0;
    std::int64_t day_expire_at = 0;   // counters expire 35 days after their day ends,
    std::int64_t week_expire_at = 0;  // 60 days after their week,
    std::int64_t month_expire_at = 0; // and 400 days after their month
    // Per-minute rates (rpm / tpm) count over fixed UTC minutes.
    std::string minute;               // "2026-11-21T10:05"
    std::int64_t minute_reset = 0;    // unix seconds of the next minute's start
    std::int64_t minute_expire_at = 0;  // rate counters outlive their minute by 60 s, so a
                                        // settlement shortly after still finds its counter
    // Seconds until the minute resets (1..60): a 429's Retry-After.
    std::int64_t minute_retry_after() const { return minute_reset - now; }
};

Periods periods_at(std::int64_t unix_seconds);
// The counters' EXPIREAT from the periods' resets (35, 60 and 400 days on).
void set_expiries(Periods &p);

// The periods of a time zone's windows ("" = UTC), for the windows of an
// org that sets one (SPEC section 2b); per-minute rates stay UTC. Keeps
// each zone's calendar until its local day ends, so a worker works a
// zone's day out once, not per request.
class PeriodsCache {
public:
    Periods periods(const std::string &zone, std::int64_t now);

private:
    CalendarCache calendars_;
};

// The periods of time zone `zone` ("" = UTC) at `now`, worked out afresh
// (the management API's reads; the request path keeps a PeriodsCache).
Periods periods_in_zone(const std::string &zone, std::int64_t now);

// The periods of a local calendar (zones.h) at `now` (in it); the minute is UTC.
Periods periods_in(const LocalCalendar &calendar, std::int64_t now);

// Suffix of a counter key for a window: "d:2026-11-21", "w:2026-W47", "m:2026-11", "life".
std::string window_suffix(const Periods &p, Window w);
// Unix seconds of the window's reset (0 for lifetime).
std::int64_t window_reset(const Periods &p, Window w);
// Unix seconds the window's period started (0 for lifetime).
std::int64_t window_start(const Periods &p, Window w);
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
