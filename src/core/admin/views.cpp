// What the management API's answers show, built from the policy file's
// entities and the records the API wrote over them.
#include "admin/views.h"

#include "admin/ops_support.h"
#include "policy/limits_json.h"
#include "redis/keys.h"

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

std::vector<std::string> usage_keys(const std::string &org, Scope scope, const std::string &id, const Periods &p) {
    std::vector<std::string> out;
    for (Window w : {Window::daily, Window::monthly, Window::lifetime})
        out.push_back(keys::counter(org, keys::Measure::spend, scope, id, window_suffix(p, w)));
    for (Window w : {Window::daily, Window::monthly})
        out.push_back(keys::counter(org, keys::Measure::requests, scope, id, window_suffix(p, w)));
    for (Window w : {Window::daily, Window::monthly})
        out.push_back(keys::counter(org, keys::Measure::tokens, scope, id, window_suffix(p, w)));
    out.push_back(keys::rate(org, scope, id, "rpm", p.minute));
    out.push_back(keys::rate(org, scope, id, "tpm", p.minute));
    return out;
}

UsageView usage_of(Scope scope, const std::string &id, const std::string &org, const Limits &limits,
                   std::optional<Nanos> monthly_cap, const std::vector<Reply> &values, const Periods &p) {
    UsageView u;
    u.scope = scope;
    u.id = id;
    u.org = org;
    const Window windows[] = {Window::daily, Window::monthly, Window::lifetime};
    for (int i = 0; i < 3; ++i) {
        WindowUsage w;
        w.window = windows[i];
        w.period = i == 0 ? p.day : i == 1 ? p.month : "";
        w.reset_at = window_reset(p, windows[i]);
        w.spent = to_int(values[static_cast<std::size_t>(i)]);
        w.cap = limits.cost_cap(windows[i]);
        if (i == 1 && monthly_cap) w.cap = monthly_cap;
        if (i < 2) {
            w.requests = to_int(values[static_cast<std::size_t>(3 + i)]);
            w.requests_cap = limits.request_cap(windows[i]);
            w.tokens = to_int(values[static_cast<std::size_t>(5 + i)]);
            w.tokens_cap = limits.token_cap(windows[i]);
        }
        u.windows.push_back(w);
    }
    u.rpm = RateUsage{to_int(values[7]), limits.rpm, p.minute_reset};
    u.tpm = RateUsage{to_int(values[8]), limits.tpm, p.minute_reset};
    return u;
}

}  // namespace spendcap::admin
