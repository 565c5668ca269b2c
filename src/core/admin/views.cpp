// What the management API's answers show, built from the policy file's
// entities and the records the API wrote over them.
#include "admin/views.h"

#include "admin/ops_support.h"
#include "policy/limits_json.h"
#include "accounting/forecast.h"
#include "policy/model_patterns.h"
#include "redis/keys.h"

#include <algorithm>

namespace spendcap::admin {

namespace {

std::optional<std::int64_t> time_field(const Fields &f, const char *name) {
    const std::string *t = field(f, name);
    if (t == nullptr || t->empty()) return std::nullopt;
    return to_int(*t);
}

// A record's `limits` over `limits`; a record whose limits do not read leaves them.
void override_limits(const Fields &record, Limits &limits) {
    if (const std::string *text = field(record, "limits")) {
        std::string ignored;
        if (std::optional<Limits> parsed = parse_limits(*text, ignored)) limits = *parsed;
    }
}

}  // namespace

const Key *file_key_by_id(const Policy &policy, const std::string &id) { return policy.find_key_by_id(id); }

KeyView key_view(const Key *file_key, const std::string &id, const std::string &org, const Fields &record) {
    KeyView v;
    v.id = id;
    v.org = org;
    if (file_key != nullptr) {
        v.project = file_key->project;
        v.limits = file_key->limits;
        v.expires_at = file_key->expires_at;
        v.revoked = file_key->revoked;
        v.from_file = true;
    }
    if (const std::string *project = field(record, "project")) v.project = *project;
    if (const std::string *name = field(record, "name")) v.name = *name;
    override_limits(record, v.limits);
    if (field(record, "expires_at") != nullptr) v.expires_at = time_field(record, "expires_at");
    if (const std::string *revoked = field(record, "revoked")) v.revoked = v.revoked || *revoked == "1";
    v.created_at = time_field(record, "created_at");
    return v;
}

std::optional<ProjectView> project_view(const Policy &policy, const std::string &id, const std::string &org,
                                        const Fields &record) {
    ProjectView v;
    v.id = id;
    v.org = org;
    auto file = policy.projects.find(id);
    if (file != policy.projects.end()) {
        v.org = file->second.org;
        v.limits = file->second.limits;
        v.from_file = true;
    } else if (record.empty()) {
        return std::nullopt;
    }
    override_limits(record, v.limits);
    return v;
}

std::optional<OrgView> org_view(const Policy &policy, const std::string &id, const Fields &record, Nanos cleared) {
    OrgView v;
    v.id = id;
    v.cleared = cleared;
    auto file = policy.orgs.find(id);
    if (file != policy.orgs.end()) {
        v.plan = file->second.plan;
        v.created_at = file->second.created_at;
        v.prepaid = file->second.prepaid;
        v.low_balance_usd = file->second.low_balance_usd;
        v.timezone = file->second.timezone;
        v.limits = file->second.limits;
        v.from_file = true;
    } else if (record.empty()) {
        return std::nullopt;
    }
    if (const std::string *plan = field(record, "plan")) v.plan = *plan;
    if (field(record, "created_at") != nullptr) v.created_at = time_field(record, "created_at");
    if (const std::string *prepaid = field(record, "prepaid")) v.prepaid = *prepaid == "1";
    if (field(record, "low_balance") != nullptr) v.low_balance_usd = time_field(record, "low_balance");
    if (const std::string *zone = field(record, "timezone")) v.timezone = *zone;
    override_limits(record, v.limits);
    return v;
}

Limits customer_limits(const Policy &policy, const std::string &customer, const Fields &record) {
    Limits limits = policy.customers.limits_for(customer);
    if (const std::string *text = field(record, "limits")) {
        std::string ignored;
        if (std::optional<Limits> parsed = parse_limits(*text, ignored))
            limits = parsed->or_else(policy.customers.default_limits);
    }
    return limits;
}

namespace {

std::vector<Window> windows_of(const Limits &limits, bool model) {
    std::vector<Window> out;
    for (Window w : {Window::daily, Window::weekly, Window::monthly, Window::lifetime}) {
        // a scope's own: every window but weekly; a per-model limit's: those it caps
        const bool kept = model ? limits.has_window(w) : (w != Window::weekly || limits.has_weekly());
        if (kept) out.push_back(w);
    }
    return out;
}

std::string with_model(const std::string &id, const std::string &pattern) {
    return pattern.empty() ? id : id + ":model:" + encode_pattern(pattern);
}

void append_keys(std::vector<std::string> &out, const std::string &org, Scope scope, const std::string &id,
                 const Periods &p, const std::vector<Window> &windows) {
    for (Window w : windows) {
        out.push_back(keys::counter(org, keys::Measure::spend, scope, id, window_suffix(p, w)));
        if (w == Window::lifetime) continue;
        out.push_back(keys::counter(org, keys::Measure::requests, scope, id, window_suffix(p, w)));
        out.push_back(keys::counter(org, keys::Measure::tokens, scope, id, window_suffix(p, w)));
    }
    out.push_back(keys::rate(org, scope, id, "rpm", p.minute));
    out.push_back(keys::rate(org, scope, id, "tpm", p.minute));
}

std::size_t count_of(const std::vector<Window> &windows) {
    std::size_t n = 2;
    for (Window w : windows) n += w == Window::lifetime ? 1 : 3;
    return n;
}

// Windows and rates of one scope or one pattern, read from values[at...].
void read_windows(const Limits &limits, const std::vector<Window> &windows, std::optional<Nanos> monthly_cap,
                  const std::vector<Reply> &values, std::size_t &at, const Periods &p,
                  std::vector<WindowUsage> &out, RateUsage &rpm, RateUsage &tpm) {
    for (Window window : windows) {
        WindowUsage w;
        w.window = window;
        w.period = window == Window::daily     ? p.day
                   : window == Window::weekly  ? p.week
                   : window == Window::monthly ? p.month
                                               : "";
        w.reset_at = window_reset(p, window);
        w.spent = to_int(values.at(at++));
        w.cap = limits.cost_cap(window);
        if (window == Window::monthly && monthly_cap) w.cap = monthly_cap;
        if (window != Window::lifetime) {
            w.requests = to_int(values.at(at++));
            w.requests_cap = limits.request_cap(window);
            w.tokens = to_int(values.at(at++));
            w.tokens_cap = limits.token_cap(window);
            if (w.cap) w.forecast = forecast_exhaustion(w.spent, *w.cap, window_start(p, window), w.reset_at, p.now);
        }
        out.push_back(w);
    }
    rpm = RateUsage{to_int(values.at(at)), limits.rpm, p.minute_reset};
    tpm = RateUsage{to_int(values.at(at + 1)), limits.tpm, p.minute_reset};
    at += 2;
}

}  // namespace

std::vector<std::string> usage_keys(const std::string &org, Scope scope, const std::string &id, const Periods &p,
                                    const Limits &limits) {
    std::vector<std::string> out;
    append_keys(out, org, scope, id, p, windows_of(limits, false));
    for (const ModelLimits &m : limits.models)
        append_keys(out, org, scope, with_model(id, m.pattern), p, windows_of(m.limits, true));
    return out;
}

std::size_t usage_key_count(const Limits &limits) {
    std::size_t n = count_of(windows_of(limits, false));
    for (const ModelLimits &m : limits.models) n += count_of(windows_of(m.limits, true));
    return n;
}

UsageView usage_of(Scope scope, const std::string &id, const std::string &org, const Limits &limits,
                   std::optional<Nanos> monthly_cap, const std::vector<Reply> &values, const Periods &p,
                   std::size_t first) {
    UsageView u;
    u.scope = scope;
    u.id = id;
    u.org = org;
    std::size_t at = first;
    read_windows(limits, windows_of(limits, false), monthly_cap, values, at, p, u.windows, u.rpm, u.tpm);
    for (const ModelLimits &m : limits.models) {
        ModelUsage model;
        model.model = m.pattern;
        read_windows(m.limits, windows_of(m.limits, true), std::nullopt, values, at, p, model.windows, model.rpm,
                     model.tpm);
        u.models.push_back(std::move(model));
    }
    return u;
}

void append_layers(const UsageView &usage, std::vector<Layer> &layers) {
    auto add = [&](const std::vector<WindowUsage> &windows, const std::string &model) {
        for (const WindowUsage &w : windows) {
            if (!w.cap) continue;
            Layer l;
            l.scope = usage.scope;
            l.id = usage.id;
            l.window = window_name(w.window);
            l.cap = *w.cap;
            l.spent = w.spent;
            l.remaining = std::max<Nanos>(saturating_sub(l.cap, l.spent), 0);
            l.reset_at = w.reset_at;
            l.forecast = w.forecast;
            l.model = model;
            layers.push_back(l);
        }
    };
    add(usage.windows, "");
    for (const ModelUsage &m : usage.models) add(m.windows, m.model);
}

}  // namespace spendcap::admin
