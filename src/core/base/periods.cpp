// UTC calendar arithmetic without timegm()/gmtime() or the locale: the
// proleptic Gregorian calendar via Howard Hinnant's days_from_civil and
// civil_from_days (http://howardhinnant.github.io/date_algorithms.html).
#include "base/periods.h"

#include <cstdio>

namespace spendcap {

namespace {

constexpr std::int64_t kSecondsPerDay = 86'400;
constexpr std::int64_t kDailyCounterLifetimeDays = 35;
constexpr std::int64_t kWeeklyCounterLifetimeDays = 60;
constexpr std::int64_t kMonthlyCounterLifetimeDays = 400;

struct CivilDate {
    std::int64_t year;
    int month;  // 1..12
    int day;    // 1..31
};

// Days since 1970-01-01 of a proleptic Gregorian date.
std::int64_t days_from_civil(std::int64_t year, int month, int day) {
    year -= month <= 2;
    const std::int64_t era = (year >= 0 ? year : year - 399) / 400;
    const std::int64_t year_of_era = year - era * 400;                            // [0, 399]
    const std::int64_t day_of_year = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1;  // [0, 365]
    const std::int64_t day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    return era * 146'097 + day_of_era - 719'468;
}

CivilDate civil_from_days(std::int64_t days) {
    days += 719'468;
    const std::int64_t era = (days >= 0 ? days : days - 146'096) / 146'097;
    const std::int64_t day_of_era = days - era * 146'097;                                          // [0, 146096]
    const std::int64_t year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36'524 - day_of_era / 146'096) / 365;      // [0, 399]
    const std::int64_t day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    const std::int64_t mp = (5 * day_of_year + 2) / 153;                                          // [0, 11]
    const int day = static_cast<int>(day_of_year - (153 * mp + 2) / 5 + 1);
    const int month = static_cast<int>(mp < 10 ? mp + 3 : mp - 9);
    return {year_of_era + era * 400 + (month <= 2), month, day};
}

// Floor division: times before 1970 still belong to the day they fall in.
std::int64_t floor_div(std::int64_t a, std::int64_t b) {
    std::int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
    return q;
}

bool is_leap_year(std::int64_t year) {
    return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
}

int days_in_month(std::int64_t year, int month) {
    static const int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return month == 2 && is_leap_year(year) ? 29 : kDays[month - 1];
}

// Reads exactly `width` digits at `pos`.
bool read_digits(std::string_view text, std::size_t &pos, int width, int &value) {
    if (pos + width > text.size()) return false;
    value = 0;
    for (int i = 0; i < width; ++i) {
        char c = text[pos + i];
        if (c < '0' || c > '9') return false;
        value = value * 10 + (c - '0');
    }
    pos += width;
    return true;
}

bool expect(std::string_view text, std::size_t &pos, char c) {
    if (pos >= text.size() || text[pos] != c) return false;
    ++pos;
    return true;
}

}  // namespace

void set_expiries(Periods &p) {
    p.day_expire_at = p.day_reset + kDailyCounterLifetimeDays * kSecondsPerDay;
    p.week_expire_at = p.week_reset + kWeeklyCounterLifetimeDays * kSecondsPerDay;
    p.month_expire_at = p.month_reset + kMonthlyCounterLifetimeDays * kSecondsPerDay;
}

const char *window_name(Window w) {
    switch (w) {
    case Window::daily: return "daily";
    case Window::weekly: return "weekly";
    case Window::monthly: return "monthly";
    case Window::lifetime: return "lifetime";
    }
    return "lifetime";
}

Periods periods_at(std::int64_t unix_seconds) {
    Periods p;
    p.now = unix_seconds;
    const std::int64_t days = floor_div(unix_seconds, kSecondsPerDay);
    const CivilDate date = civil_from_days(days);

    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%04lld-%02d-%02d", static_cast<long long>(date.year),
                  date.month, date.day);
    p.day = buffer;
    std::snprintf(buffer, sizeof buffer, "%04lld-%02d", static_cast<long long>(date.year), date.month);
    p.month = buffer;

    p.day_start = days * kSecondsPerDay;
    p.day_reset = (days + 1) * kSecondsPerDay;
    const IsoWeek week = iso_week_at(unix_seconds);
    p.week = week.name;
    p.week_start = week.start;
    p.week_reset = week.reset;
    p.month_start = days_from_civil(date.year, date.month, 1) * kSecondsPerDay;
    const std::int64_t next_month_year = date.month == 12 ? date.year + 1 : date.year;
    const int next_month = date.month == 12 ? 1 : date.month + 1;
    p.month_reset = days_from_civil(next_month_year, next_month, 1) * kSecondsPerDay;
    set_expiries(p);

    const std::int64_t second_of_day = unix_seconds - days * kSecondsPerDay;
    std::snprintf(buffer, sizeof buffer, "%sT%02d:%02d", p.day.c_str(),
                  static_cast<int>(second_of_day / 3600), static_cast<int>(second_of_day / 60 % 60));
    p.minute = buffer;
    p.minute_reset = (floor_div(unix_seconds, 60) + 1) * 60;
    p.minute_expire_at = p.minute_reset + 60;
    return p;
}

IsoWeek iso_week_at(std::int64_t unix_seconds) {
    const std::int64_t days = floor_div(unix_seconds, kSecondsPerDay);
    const std::int64_t weekday = days - floor_div(days + 3, 7) * 7 + 3;  // 0 Monday .. 6 Sunday (1970-01-01: Thursday)
    const std::int64_t monday = days - weekday;
    const std::int64_t year = civil_from_days(monday + 3).year;  // the week's Thursday names its year
    const std::int64_t week = (monday + 3 - days_from_civil(year, 1, 1)) / 7 + 1;
    IsoWeek w;
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%04lld-W%02lld", static_cast<long long>(year), static_cast<long long>(week));
    w.name = buffer;
    w.start = monday * kSecondsPerDay;
    w.reset = (monday + 7) * kSecondsPerDay;
    return w;
}

Periods PeriodsCache::periods(const std::string &zone, std::int64_t now) {
    if (zone.empty() || zone == "UTC") return periods_at(now);
    return periods_in(calendars_.at(zone, now), now);
}

Periods periods_in_zone(const std::string &zone, std::int64_t now) {
    if (zone.empty() || zone == "UTC") return periods_at(now);
    return periods_in(local_calendar(zone, now), now);
}

Periods periods_in(const LocalCalendar &calendar, std::int64_t now) {
    Periods p = periods_at(now);  // the UTC minute
    p.day = calendar.day;
    p.week = calendar.week;
    p.month = calendar.month;
    p.day_start = calendar.day_start;
    p.day_reset = calendar.day_reset;
    p.week_start = calendar.week_start;
    p.week_reset = calendar.week_reset;
    p.month_start = calendar.month_start;
    p.month_reset = calendar.month_reset;
    set_expiries(p);
    return p;
}

std::string window_suffix(const Periods &p, Window w) {
    switch (w) {
    case Window::daily: return "d:" + p.day;
    case Window::weekly: return "w:" + p.week;
    case Window::monthly: return "m:" + p.month;
    case Window::lifetime: return "life";
    }
    return "life";
}

std::int64_t window_reset(const Periods &p, Window w) {
    switch (w) {
    case Window::daily: return p.day_reset;
    case Window::weekly: return p.week_reset;
    case Window::monthly: return p.month_reset;
    case Window::lifetime: return 0;
    }
    return 0;
}

std::int64_t window_start(const Periods &p, Window w) {
    switch (w) {
    case Window::daily: return p.day_start;
    case Window::weekly: return p.week_start;
    case Window::monthly: return p.month_start;
    case Window::lifetime: return 0;
    }
    return 0;
}

std::int64_t window_expire_at(const Periods &p, Window w) {
    switch (w) {
    case Window::daily: return p.day_expire_at;
    case Window::weekly: return p.week_expire_at;
    case Window::monthly: return p.month_expire_at;
    case Window::lifetime: return 0;
    }
    return 0;
}

std::string format_rfc3339(std::int64_t unix_seconds) {
    const std::int64_t days = floor_div(unix_seconds, kSecondsPerDay);
    const std::int64_t second_of_day = unix_seconds - days * kSecondsPerDay;
    const CivilDate date = civil_from_days(days);
    char buffer[48];
    std::snprintf(buffer, sizeof buffer, "%04lld-%02d-%02dT%02d:%02d:%02dZ",
                  static_cast<long long>(date.year), date.month, date.day,
                  static_cast<int>(second_of_day / 3600), static_cast<int>(second_of_day / 60 % 60),
                  static_cast<int>(second_of_day % 60));
    return buffer;
}

bool parse_rfc3339(std::string_view text, std::int64_t &unix_seconds) {
    std::size_t pos = 0;
    int year, month, day;
    if (!read_digits(text, pos, 4, year) || !expect(text, pos, '-') ||
        !read_digits(text, pos, 2, month) || !expect(text, pos, '-') ||
        !read_digits(text, pos, 2, day))
        return false;
    if (month < 1 || month > 12 || day < 1 || day > days_in_month(year, month)) return false;
    const std::int64_t days = days_from_civil(year, month, day);

    if (pos == text.size()) {  // bare date: midnight UTC
        unix_seconds = days * kSecondsPerDay;
        return true;
    }

    // RFC 3339 allows 't' and (section 5.6 note) a space for the separator.
    const char separator = text[pos++];
    if (separator != 'T' && separator != 't' && separator != ' ') return false;
    int hour, minute, second;
    if (!read_digits(text, pos, 2, hour) || !expect(text, pos, ':') ||
        !read_digits(text, pos, 2, minute) || !expect(text, pos, ':') ||
        !read_digits(text, pos, 2, second))
        return false;
    // Leap seconds (":60") are not representable in unix time; refuse them.
    if (hour > 23 || minute > 59 || second > 59) return false;

    // Fractional seconds are dropped: caps and expiries work in whole seconds.
    if (pos < text.size() && text[pos] == '.') {
        ++pos;
        const std::size_t first_fraction_digit = pos;
        while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') ++pos;
        if (pos == first_fraction_digit) return false;
    }

    if (pos >= text.size()) return false;  // a time needs a zone
    std::int64_t offset_seconds = 0;
    const char zone = text[pos++];
    if (zone == 'Z' || zone == 'z') {
        offset_seconds = 0;
    } else if (zone == '+' || zone == '-') {
        int offset_hours, offset_minutes;
        if (!read_digits(text, pos, 2, offset_hours) || !expect(text, pos, ':') ||
            !read_digits(text, pos, 2, offset_minutes))
            return false;
        if (offset_hours > 23 || offset_minutes > 59) return false;
        offset_seconds = (offset_hours * 3600 + offset_minutes * 60) * (zone == '-' ? -1 : 1);
    } else {
        return false;
    }
    if (pos != text.size()) return false;

    // Local time = UTC + offset, so UTC = local - offset.
    unix_seconds = days * kSecondsPerDay + hour * 3600 + minute * 60 + second - offset_seconds;
    return true;
}

}  // namespace spendcap
