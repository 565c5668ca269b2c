// Local calendars over the system tz database. Only this file includes the date
// library: its time_zone's layout depends on USE_OS_TZDB, so the define that
// Debian's libdate-tz was built with is fixed here, before the include, whatever
// the build passes (the NGINX addon script sets no C++ flags of its own).
#ifndef USE_OS_TZDB
#define USE_OS_TZDB 1
#endif
#if !USE_OS_TZDB
#error "libdate-tz on Debian reads the system tz database: USE_OS_TZDB must be 1"
#endif
#ifndef ONLY_C_LOCALE
#define ONLY_C_LOCALE 1  // as Debian's date::date target says; the core never formats with locales
#endif
#include "base/zones.h"

#include "base/periods.h"

#include <date/date.h>
#include <date/tz.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <mutex>
#include <vector>

namespace spendcap {

namespace {

constexpr std::int64_t kSecondsPerDay = 86'400;
// Years 1..9999 with two days' margin for any zone's offset (at most 26 h apart):
// names stay four digits and no arithmetic below can overflow.
constexpr std::int64_t kMinSeconds = -62'135'596'800 + 2 * kSecondsPerDay;  // 0001-01-03
constexpr std::int64_t kMaxSeconds = 253'402'300'799 - 2 * kSecondsPerDay;  // 9999-12-29

std::int64_t floor_div(std::int64_t a, std::int64_t b) {
    std::int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
    return q;
}

enum class LoadState { never, loaded, failed };

// The zones whose rules are in memory, sorted by name. Written under `mutex`
// only; read without it once `state` says loaded (the vector never changes after).
struct ZoneIndex {
    std::mutex mutex;
    std::atomic<LoadState> state{LoadState::never};
    std::vector<const date::time_zone *> zones;
};

ZoneIndex &zone_index() {
    static ZoneIndex index;
    return index;
}

bool is_utc_name(std::string_view name) { return name.empty() || name == "UTC"; }

// A zone of the index, or nullptr. Never calls date::locate_zone (it throws on a
// miss, and before the preload it would read the database).
const date::time_zone *find_zone(std::string_view name) {
    ZoneIndex &index = zone_index();
    LoadState state = index.state.load(std::memory_order_acquire);
    if (state == LoadState::never) {
        preload_time_zones();
        state = index.state.load(std::memory_order_acquire);
    }
    if (state != LoadState::loaded) return nullptr;
    const auto &zones = index.zones;
    auto it = std::lower_bound(zones.begin(), zones.end(), name,
                               [](const date::time_zone *z, std::string_view n) { return z->name() < n; });
    return it != zones.end() && (*it)->name() == name ? *it : nullptr;
}

// How a zone maps local days to instants: the first instant of a local day.
class Clock {
public:
    explicit Clock(const date::time_zone *zone) : zone_(zone) {}

    std::int64_t local_day_of(std::int64_t unix_seconds) const {
        std::int64_t local = unix_seconds;
        if (zone_) local = zone_->to_local(date::sys_seconds{std::chrono::seconds{unix_seconds}}).time_since_epoch().count();
        return floor_div(local, kSecondsPerDay);
    }

    // A midnight that is ambiguous counts from its first occurrence; one that does
    // not exist (a zone that springs forward at 00:00) from the transition, the
    // instant the day begins: both are what choose::earliest gives.
    std::int64_t start_of(std::int64_t local_day) const {
        if (!zone_) return local_day * kSecondsPerDay;
        const date::local_seconds midnight{std::chrono::seconds{local_day * kSecondsPerDay}};
        return zone_->to_sys(midnight, date::choose::earliest).time_since_epoch().count();
    }

private:
    const date::time_zone *zone_;  // nullptr: UTC, by arithmetic alone
};

LocalCalendar calendar_of(const Clock &clock, std::int64_t now) {
    now = std::clamp(now, kMinSeconds, kMaxSeconds);
    // Days are [first instant of D, first instant of D + 1): a partition of time,
    // so a period never comes back once its reset has passed. The wall clock's
    // date can lag behind it: a zone falling back across midnight (America/Goose_Bay
    // until 2010: 00:01 -> 23:01) reads the old date for an hour the new day has
    // already begun.
    std::int64_t day = clock.local_day_of(now);
    std::int64_t next_day_start = clock.start_of(day + 1);
    if (next_day_start <= now) {
        ++day;
        next_day_start = clock.start_of(day + 1);
    }
    const date::year_month_day ymd{date::sys_days{date::days{static_cast<int>(day)}}};
    const int year = static_cast<int>(ymd.year());
    const unsigned month = static_cast<unsigned>(ymd.month());
    const unsigned day_of_month = static_cast<unsigned>(ymd.day());

    LocalCalendar c;
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%04d-%02u-%02u", year, month, day_of_month);
    c.day = buffer;
    std::snprintf(buffer, sizeof buffer, "%04d-%02u", year, month);
    c.month = buffer;
    c.day_start = clock.start_of(day);
    c.day_reset = next_day_start;

    // The UTC rule applied to the local date read as if it were UTC: its name and
    // its Monday are the local week's.
    const IsoWeek week = iso_week_at(day * kSecondsPerDay);
    const std::int64_t monday = floor_div(week.start, kSecondsPerDay);
    c.week = week.name;
    c.week_start = clock.start_of(monday);
    c.week_reset = clock.start_of(monday + 7);

    const std::int64_t first = day - (day_of_month - 1);
    const date::year_month next_month = date::year_month{ymd.year(), ymd.month()} + date::months{1};
    const std::int64_t next_first = date::sys_days{next_month / 1}.time_since_epoch().count();
    c.month_start = clock.start_of(first);
    c.month_reset = clock.start_of(next_first);
    return c;
}

}  // namespace

bool preload_time_zones() {
    ZoneIndex &index = zone_index();
    std::lock_guard<std::mutex> lock(index.mutex);
    if (index.state.load(std::memory_order_relaxed) == LoadState::loaded) return true;
    try {
        // get_tzdb() lists /usr/share/zoneinfo but reads each zone's file only on
        // the zone's first use: asking every zone once reads them all now.
        const date::tzdb &db = date::get_tzdb();
        std::vector<const date::time_zone *> zones;
        zones.reserve(db.zones.size());
        for (const date::time_zone &zone : db.zones) {
            // The host's own /etc/localtime, not a name of the database.
            if (zone.name() == "localtime") continue;
            try {
                zone.get_info(date::sys_seconds{});
                zones.push_back(&zone);
            } catch (const std::exception &) {
                // Not a zone file (a table the library does not skip): not a zone.
            }
        }
        if (zones.empty()) {
            index.state.store(LoadState::failed, std::memory_order_release);
            return false;
        }
        index.zones = std::move(zones);  // db.zones is sorted by name, so this is too
        index.state.store(LoadState::loaded, std::memory_order_release);
        return true;
    } catch (const std::exception &) {
        // No zoneinfo directory: discover_tz_dir throws.
        index.state.store(LoadState::failed, std::memory_order_release);
        return false;
    }
}

bool known_time_zone(std::string_view name) {
    if (name == "UTC") return true;
    return !name.empty() && find_zone(name) != nullptr;
}

LocalCalendar local_calendar(std::string_view zone, std::int64_t unix_seconds) {
    const date::time_zone *z = is_utc_name(zone) ? nullptr : find_zone(zone);
    if (z) {
        try {
            return calendar_of(Clock{z}, unix_seconds);
        } catch (const std::exception &) {
            // Not expected (the zone's rules are in memory), but a caller on the
            // request path must get an answer: UTC's.
        }
    }
    return calendar_of(Clock{nullptr}, unix_seconds);
}

const LocalCalendar &CalendarCache::at(std::string_view zone, std::int64_t unix_seconds) {
    auto it = entries_.find(zone);
    if (it != entries_.end()) {
        if (it->second.day_start > unix_seconds || unix_seconds >= it->second.day_reset)
            it->second = local_calendar(zone, unix_seconds);
        return it->second;
    }
    if (entries_.size() >= kMaxZones) {
        // The entry whose day ended first: stale, or the least likely to be asked next.
        auto oldest = std::min_element(entries_.begin(), entries_.end(), [](const auto &a, const auto &b) {
            return a.second.day_reset < b.second.day_reset;
        });
        entries_.erase(oldest);
    }
    return entries_.emplace(std::string(zone), local_calendar(zone, unix_seconds)).first->second;
}

}  // namespace spendcap
