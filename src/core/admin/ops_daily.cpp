// The management API's daily usage (SPEC section 11): GET .../usage/daily of a
// key, project, org or customer, the last N days of its daily counters read
// with one MGET, as JSON or (format=csv) CSV.
#include "admin/ops.h"

#include <cstdlib>
#include <utility>

#include "admin/daily.h"
#include "redis/keys.h"
#include "redis/script.h"

namespace spendcap::admin {

// Finds the scope's org (and that the scope exists), then reads its days.
// /keys/self/usage/daily comes through self_call, which authenticates the key.
std::optional<Command> Operation::daily_call() {
    const std::string id = route_.id;
    switch (route_.call) {
    case Call::key_usage_daily:
        return with_key(id, [this, id](const std::string &org, const Key *) {
            return usage_daily(Scope::key, id, org);
        });
    case Call::project_usage_daily:
        return with_project_org(id, [this, id](const std::string &org) {
            return usage_daily(Scope::project, id, org);
        });
    case Call::org_usage_daily:
        return with_org(id, [this, id]() { return usage_daily(Scope::org, id, id); });
    case Call::customer_usage_daily: {
        const std::string customer = route_.customer;
        return with_org(id, [this, id, customer]() { return usage_daily(Scope::customer, customer, id); });
    }
    default: return fail(not_found("no such call"));
    }
}

// The dates are whole days back from Periods::day, taken as every usage call
// takes its periods (so that today is the day the counters of today are named by).
std::optional<Command> Operation::usage_daily(Scope scope, const std::string &id, const std::string &org) {
  return with_org_periods(org, [this, scope, id, org](const Periods &p) -> std::optional<Command> {
    const int n = route_.query.count("days") ? std::atoi(route_.query.at("days").c_str()) : kDefaultDailyDays;
    const bool csv = route_.query.count("format") != 0;
    std::vector<std::string> dates = recent_days(p.day, n);
    if (dates.empty()) return fail(invalid_request("`days` must be an integer from 1 to " +
                                                   std::to_string(kMaxDailyDays)));
    std::vector<std::string> keys = daily_keys(org, scope, id, dates);
    return then(eval(scripts::mget(), std::move(keys), {}),
                [this, scope, id, org, dates = std::move(dates), csv](const Reply &r) -> std::optional<Command> {
                    DailyView view;
                    if (r.type != Reply::Type::array || !daily_of(scope, id, org, dates, r.elements, view))
                        return fail(unavailable());
                    if (csv) return finish_csv(render_daily_csv(view));
                    return finish(200, render_daily(view));
                });
  });
}

}  // namespace spendcap::admin
