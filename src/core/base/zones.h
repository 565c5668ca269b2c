// Local calendars of IANA time zones (SPEC section 2b, "Time zones"): an org's
// daily, weekly and monthly windows start at its local midnight, daylight saving
// included. Backed by the system tz database (package tzdata) through Howard
// Hinnant's date library; the interface keeps the library's types out of the core.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

namespace spendcap {

// One zone's calendar periods containing a moment: names are local, instants UTC unix seconds.
struct LocalCalendar {
    std::string day;            // "2026-12-05" (local date)
    std::int64_t day_start = 0, day_reset = 0;     // local midnight of that day / of the next day, as UTC unix seconds
    std::string week;           // ISO week "2026-W49" of the local date (week-numbering year by its Thursday)
    std::int64_t week_start = 0, week_reset = 0;   // local Monday 00:00 of that week / of the next week
    std::string month;          // "2026-12"
    std::int64_t month_start = 0, month_reset = 0; // local 1st 00:00 of that month / next month
};

// Whether `name` is a zone of the tz database ("UTC" always is). Never reads a file after preload_time_zones().
bool known_time_zone(std::string_view name);

// Reads the tz database and every zone's rules now (called at configuration load, before NGINX forks workers),
// so that later calls never touch the disk (a worker must never block on file I/O). Safe to call again (no-op).
// Returns false (and leaves UTC usable) if the database cannot be read.
//
// Until it is called, the first known_time_zone() or local_calendar() calls it
// (once: a failed attempt is retried only by calling it again explicitly).
bool preload_time_zones();

// The calendar of `zone` ("" or "UTC" = UTC, computed without the tz library) at `unix_seconds`.
// An unknown zone falls back to UTC (validation happens where names are accepted).
// Never throws for any zone name; moments outside years 1..9999 are clamped into them.
// Limitation of libdate-tz 3.0.1 over the OS database: it reads a zone file's
// transitions but not its POSIX footer, so past the file's last transition (2037 in
// Debian's "fat" files) a zone keeps its last offset and daylight saving stops.
// A period is [first instant of local day D, first instant of D + 1): where a zone
// falls back across midnight, the new day's name holds while the wall clock reads
// the old date again, so a period never returns after its reset.
LocalCalendar local_calendar(std::string_view zone, std::int64_t unix_seconds);

// A per-worker cache (not thread-safe, bounded: at most 1024 zones, evicting when full) that answers
// local_calendar(zone, now) but computes it only once per zone per local day: it keeps the last answer
// while day_start <= now < day_reset.
class CalendarCache {
public:
    static constexpr std::size_t kMaxZones = 1024;

    // The reference stays valid until the next call of at().
    const LocalCalendar &at(std::string_view zone, std::int64_t unix_seconds);
    std::size_t size() const { return entries_.size(); }

private:
    // std::less<> finds by string_view: no allocation per lookup for long zone names.
    std::map<std::string, LocalCalendar, std::less<>> entries_;
};

}  // namespace spendcap
