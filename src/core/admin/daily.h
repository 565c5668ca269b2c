// Daily usage (SPEC section 11): the last N days of one scope's daily
// counters, oldest first and ending with today, as JSON or CSV.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/money.h"
#include "policy/policy.h"
#include "redis/reply.h"

namespace spendcap::admin {

constexpr int kMaxDailyDays = 35;     // daily counters expire 35 days after their day (SPEC section 6)
constexpr int kDefaultDailyDays = 30;

// The `n` civil dates ("YYYY-MM-DD") that end with `today`, oldest first:
// recent_days("2027-01-01", 3) is {"2026-12-30", "2026-12-31", "2027-01-01"}.
// `today` is Periods::day, whatever zone made it: the dates step back whole
// calendar days from it and never look at a clock. Empty when `today` is not
// a valid date or `n` < 1.
std::vector<std::string> recent_days(const std::string &today, int n);

// The counters daily usage reads, three per date in this order: spend,
// requests, tokens of `date` (sc:{ORG}:spend:SCOPE:ID:d:DATE, ...:reqs:...,
// ...:tokens:...); all in the org's slot.
std::vector<std::string> daily_keys(const std::string &org, Scope scope, const std::string &id,
                                    const std::vector<std::string> &dates);

struct DayUsage {
    std::string date;
    Nanos spent = 0;
    std::int64_t requests = 0;
    std::int64_t tokens = 0;
};
struct DailyView {
    Scope scope = Scope::key;
    std::string id, org;
    std::vector<DayUsage> days;  // oldest first
};

// The view from the values of daily_keys (nil, or anything not an integer,
// is 0); false when `values` does not hold three per date.
bool daily_of(Scope scope, const std::string &id, const std::string &org, const std::vector<std::string> &dates,
              const std::vector<Reply> &values, DailyView &out);

// {"scope", "id", "org", "days": [{"date", "spent_nanousd", "spent_usd", "requests", "tokens"}...]}
std::string render_daily(const DailyView &daily);
// text/csv: the header row "date,spent_usd,spent_nanousd,requests,tokens",
// then one row per day, oldest first; every line ends with "\n" (LF).
std::string render_daily_csv(const DailyView &daily);

}  // namespace spendcap::admin
