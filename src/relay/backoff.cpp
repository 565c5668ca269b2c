// Backoff, Retry-After and durations: integer milliseconds throughout, every
// product checked, so a large setting caps instead of wrapping.
#include "relay/backoff.h"

#include <algorithm>
#include <array>
#include <limits>

namespace spendcap::relay {

namespace {

constexpr std::int64_t kInt64Max = std::numeric_limits<std::int64_t>::max();

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Plain decimal digits; false if empty, not all digits or past int64.
bool parse_digits(std::string_view text, std::int64_t &value) {
    value = 0;
    if (text.empty()) return false;
    for (char c : text) {
        if (!is_digit(c) || value > (kInt64Max - (c - '0')) / 10) return false;
        value = value * 10 + (c - '0');
    }
    return true;
}

// Exactly `width` digits at text[pos], as HTTP dates write them.
bool fixed_digits(std::string_view text, std::size_t pos, std::size_t width, int &value) {
    value = 0;
    if (pos + width > text.size()) return false;
    for (std::size_t i = pos; i < pos + width; ++i) {
        if (!is_digit(text[i])) return false;
        value = value * 10 + (text[i] - '0');
    }
    return true;
}

int index_of(std::string_view name, const std::array<std::string_view, 12> &names, std::size_t count) {
    for (std::size_t i = 0; i < count; ++i)
        if (names[i] == name) return static_cast<int>(i);
    return -1;
}

bool leap_year(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

int days_in_month(int y, int m) {
    static const int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && leap_year(y) ? 29 : kDays[m - 1];
}

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
std::int64_t days_from_civil(std::int64_t y, int m, int d) {
    y -= m <= 2;
    const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
    const std::int64_t year_of_era = y - era * 400;
    const std::int64_t day_of_year = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const std::int64_t day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    return era * 146097 + day_of_era - 719468;
}

// "Sun, 06 Nov 1994 08:49:37 GMT" (RFC 9110's IMF-fixdate), as unix seconds.
std::optional<std::int64_t> parse_imf_fixdate(std::string_view text) {
    static const std::array<std::string_view, 12> kWeekdays = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
    static const std::array<std::string_view, 12> kMonths = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                             "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    if (text.size() != 29 || text.substr(3, 2) != ", " || text[7] != ' ' || text[11] != ' ' || text[16] != ' ' ||
        text[19] != ':' || text[22] != ':' || text.substr(25) != " GMT")
        return std::nullopt;
    if (index_of(text.substr(0, 3), kWeekdays, 7) < 0) return std::nullopt;
    const int month = index_of(text.substr(8, 3), kMonths, 12) + 1;
    int day, year, hour, minute, second;
    if (month == 0 || !fixed_digits(text, 5, 2, day) || !fixed_digits(text, 12, 4, year) ||
        !fixed_digits(text, 17, 2, hour) || !fixed_digits(text, 20, 2, minute) || !fixed_digits(text, 23, 2, second))
        return std::nullopt;
    // 60 is a leap second, which the date format allows.
    if (day < 1 || day > days_in_month(year, month) || hour > 23 || minute > 59 || second > 60) return std::nullopt;
    return days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second;
}

std::string_view trim_ows(std::string_view text) {
    while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
    while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
    return text;
}

std::int64_t seconds_to_bounded_ms(std::int64_t seconds) {
    if (seconds <= 0) return 0;
    return seconds >= kMaxRetryAfterMs / 1000 ? kMaxRetryAfterMs : seconds * 1000;
}

}  // namespace

std::int64_t next_delay_ms(const RetryConfig &retry, int attempts_failed) {
    if (attempts_failed <= 0) return 0;
    std::int64_t delay = std::min(retry.first_ms, retry.max_ms);
    for (int i = 1; i < attempts_failed; ++i) {
        if (delay >= retry.max_ms / 2) return retry.max_ms;
        delay *= 2;
    }
    return delay;
}

std::optional<std::int64_t> parse_retry_after_ms(std::string_view value, std::int64_t now_unix_seconds) {
    value = trim_ows(value);
    if (!value.empty() && std::all_of(value.begin(), value.end(), is_digit)) {
        std::int64_t seconds = 0;
        // Only too many digits fail to parse: a very long wait, so the bound.
        return parse_digits(value, seconds) ? seconds_to_bounded_ms(seconds) : kMaxRetryAfterMs;
    }
    const std::optional<std::int64_t> at = parse_imf_fixdate(value);
    if (!at) return std::nullopt;
    return seconds_to_bounded_ms(*at - now_unix_seconds);
}

bool should_give_up(const RetryConfig &retry, std::int64_t first_attempt_ms, std::int64_t now_ms) {
    // Compared as a deadline so that no subtraction can overflow.
    if (first_attempt_ms > kInt64Max - retry.give_up_after_ms) return false;
    return now_ms >= first_attempt_ms + retry.give_up_after_ms;
}

std::int64_t parse_duration_ms(std::string_view text) {
    std::size_t digits = 0;
    while (digits < text.size() && is_digit(text[digits])) ++digits;
    const std::string_view unit = text.substr(digits);
    std::int64_t ms_per_unit = 0;
    if (unit == "ms") ms_per_unit = 1;
    else if (unit == "s") ms_per_unit = 1000;
    else if (unit == "m") ms_per_unit = 60 * 1000;
    else if (unit == "h") ms_per_unit = 60 * 60 * 1000;
    else return 0;
    std::int64_t count = 0;
    if (!parse_digits(text.substr(0, digits), count) || count <= 0 || count > kInt64Max / ms_per_unit) return 0;
    return count * ms_per_unit;
}

}  // namespace spendcap::relay
