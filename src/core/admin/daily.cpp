// Daily usage: the dates (civil days back from Periods::day), the counters
// they name, and the answer as JSON or CSV.
#include "admin/daily.h"

#include "admin/ops_support.h"
#include "json/writer.h"
#include "redis/keys.h"

namespace spendcap::admin {

namespace {

// Days since 1970-01-01 of a proleptic Gregorian date, and back
// (H. Hinnant's days_from_civil / civil_from_days).
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
    y -= m <= 2;
    const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = static_cast<unsigned>(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

void civil_from_days(std::int64_t z, std::int64_t &y, unsigned &m, unsigned &d) {
    z += 719468;
    const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = static_cast<unsigned>(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    y = static_cast<std::int64_t>(yoe) + era * 400;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    d = doy - (153 * mp + 2) / 5 + 1;
    m = mp < 10 ? mp + 3 : mp - 9;
    y += m <= 2;
}

bool is_leap(std::int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

unsigned days_in_month(std::int64_t y, unsigned m) {
    static const unsigned days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : days[m - 1];
}

// "YYYY-MM-DD", exactly: four-digit year, a real month and day.
bool parse_date(const std::string &text, std::int64_t &y, unsigned &m, unsigned &d) {
    if (text.size() != 10 || text[4] != '-' || text[7] != '-') return false;
    auto digits = [&](std::size_t from, std::size_t count, std::int64_t &out) {
        out = 0;
        for (std::size_t i = from; i < from + count; ++i) {
            if (text[i] < '0' || text[i] > '9') return false;
            out = out * 10 + (text[i] - '0');
        }
        return true;
    };
    std::int64_t mm = 0, dd = 0;
    if (!digits(0, 4, y) || !digits(5, 2, mm) || !digits(8, 2, dd)) return false;
    if (mm < 1 || mm > 12 || dd < 1 || dd > days_in_month(y, static_cast<unsigned>(mm))) return false;
    m = static_cast<unsigned>(mm);
    d = static_cast<unsigned>(dd);
    return true;
}

// "YYYY-MM-DD" of a year 0..9999.
std::string format_date(std::int64_t y, unsigned m, unsigned d) {
    std::string out = "0000-00-00";
    for (int i = 3; i >= 0; --i, y /= 10) out[static_cast<std::size_t>(i)] = static_cast<char>('0' + y % 10);
    out[5] = static_cast<char>('0' + m / 10);
    out[6] = static_cast<char>('0' + m % 10);
    out[8] = static_cast<char>('0' + d / 10);
    out[9] = static_cast<char>('0' + d % 10);
    return out;
}

}  // namespace

std::vector<std::string> recent_days(const std::string &today, int n) {
    std::int64_t y = 0;
    unsigned m = 0, d = 0;
    if (n < 1 || !parse_date(today, y, m, d)) return {};
    const std::int64_t last = days_from_civil(y, m, d);
    std::vector<std::string> out;
    out.reserve(static_cast<std::size_t>(n));
    for (int back = n - 1; back >= 0; --back) {
        std::int64_t yy = 0;
        unsigned mm = 0, dd = 0;
        civil_from_days(last - back, yy, mm, dd);
        if (yy < 0 || yy > 9999) return {};  // not a four-digit year: no counter is named so
        out.push_back(format_date(yy, mm, dd));
    }
    return out;
}

std::vector<std::string> daily_keys(const std::string &org, Scope scope, const std::string &id,
                                    const std::vector<std::string> &dates) {
    std::vector<std::string> out;
    out.reserve(dates.size() * 3);
    for (const std::string &date : dates) {
        const std::string suffix = "d:" + date;
        out.push_back(keys::counter(org, keys::Measure::spend, scope, id, suffix));
        out.push_back(keys::counter(org, keys::Measure::requests, scope, id, suffix));
        out.push_back(keys::counter(org, keys::Measure::tokens, scope, id, suffix));
    }
    return out;
}

bool daily_of(Scope scope, const std::string &id, const std::string &org, const std::vector<std::string> &dates,
              const std::vector<Reply> &values, DailyView &out) {
    if (values.size() != dates.size() * 3) return false;
    out.scope = scope;
    out.id = id;
    out.org = org;
    out.days.clear();
    out.days.reserve(dates.size());
    for (std::size_t i = 0; i < dates.size(); ++i) {
        DayUsage day;
        day.date = dates[i];
        day.spent = to_int(values[3 * i]);
        day.requests = to_int(values[3 * i + 1]);
        day.tokens = to_int(values[3 * i + 2]);
        out.days.push_back(std::move(day));
    }
    return true;
}

std::string render_daily(const DailyView &daily) {
    std::vector<std::string> days;
    days.reserve(daily.days.size());
    for (const DayUsage &day : daily.days)
        days.push_back(json::ObjectWriter()
                           .string("date", day.date)
                           .amount("spent", day.spent)
                           .integer("requests", day.requests)
                           .integer("tokens", day.tokens)
                           .done());
    return json::ObjectWriter()
        .string("scope", scope_name(daily.scope))
        .string("id", daily.id)
        .string("org", daily.org)
        .raw("days", json::json_array(days))
        .done();
}

std::string render_daily_csv(const DailyView &daily) {
    std::string out = "date,spent_usd,spent_nanousd,requests,tokens\n";
    for (const DayUsage &day : daily.days) {
        out += day.date;
        out += ',';
        out += format_usd(day.spent);
        out += ',';
        out += std::to_string(day.spent);
        out += ',';
        out += std::to_string(day.requests);
        out += ',';
        out += std::to_string(day.tokens);
        out += '\n';
    }
    return out;
}

}  // namespace spendcap::admin
