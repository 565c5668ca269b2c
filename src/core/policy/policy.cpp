// The policy's model (SPEC section 2): scope names, limits and their merging,
// the Policy's lookups, the id rules and the paid-plan ceilings.
#include "policy/policy.h"

#include <algorithm>
#include <initializer_list>

namespace spendcap {

const char *scope_name(Scope s) {
    switch (s) {
    case Scope::key: return "key";
    case Scope::project: return "project";
    case Scope::org: return "org";
    case Scope::customer: return "customer";
    }
    return "key";
}

const char *scope_word(Scope s) {
    switch (s) {
    case Scope::key: return "api key";
    case Scope::project: return "project";
    case Scope::org: return "account";
    case Scope::customer: return "customer";
    }
    return "api key";
}

const std::optional<Nanos> &Limits::cost_cap(Window w) const {
    switch (w) {
    case Window::daily: return daily_usd;
    case Window::weekly: return weekly_usd;
    case Window::monthly: return monthly_usd;
    case Window::lifetime: return lifetime_usd;
    }
    return lifetime_usd;
}

namespace {
const std::optional<std::int64_t> kNoCount;  // no request / token counter for lifetime
}  // namespace

const std::optional<std::int64_t> &Limits::request_cap(Window w) const {
    switch (w) {
    case Window::daily: return daily_requests;
    case Window::weekly: return weekly_requests;
    case Window::monthly: return monthly_requests;
    case Window::lifetime: break;
    }
    return kNoCount;
}

const std::optional<std::int64_t> &Limits::token_cap(Window w) const {
    switch (w) {
    case Window::daily: return daily_tokens;
    case Window::weekly: return weekly_tokens;
    case Window::monthly: return monthly_tokens;
    case Window::lifetime: break;
    }
    return kNoCount;
}

Limits Limits::or_else(const Limits &fallback) const {
    Limits merged = *this;
    // Every field, so a new limit added to Limits must be added here too.
    for (auto field : {&Limits::daily_usd, &Limits::weekly_usd, &Limits::monthly_usd, &Limits::lifetime_usd})
        if (!(merged.*field)) merged.*field = fallback.*field;
    for (auto field : {&Limits::daily_requests, &Limits::weekly_requests, &Limits::monthly_requests,
                       &Limits::daily_tokens, &Limits::weekly_tokens, &Limits::monthly_tokens, &Limits::rpm,
                       &Limits::tpm})
        if (!(merged.*field)) merged.*field = fallback.*field;
    if (merged.models.empty()) merged.models = fallback.models;
    if (!merged.allowed_models) merged.allowed_models = fallback.allowed_models;
    return merged;
}

Limits Customers::limits_for(const std::string &customer_id) const {
    auto found = overrides.find(customer_id);
    return found != overrides.end() ? found->second.or_else(default_limits) : default_limits;
}

Nanos ModelPrice::max_input_rate() const {
    Nanos highest = input;
    for (const std::optional<Nanos> *rate : {&cached_input, &cache_write, &cache_write_1h, &cache_read})
        if (rate->has_value() && **rate > highest) highest = **rate;
    return highest;
}

const ModelPrice *Policy::price_for(const std::string &model) const {
    auto found = models.find(model);
    if (found != models.end()) return &found->second;
    if (unknown_model == "reject") return nullptr;
    auto stand_in = models.find(unknown_model);
    return stand_in != models.end() ? &stand_in->second : nullptr;
}

const Key *Policy::find_key(const std::string &sha256_hex) const {
    auto found = keys_by_sha256.find(sha256_hex);
    return found != keys_by_sha256.end() ? &found->second : nullptr;
}

// A loaded policy guarantees both lookups succeed; the empty fallbacks only
// keep a caller's mistake from throwing across NGINX's C frames.
const Key *Policy::find_key_by_id(const std::string &id) const {
    auto found = keys_by_id.find(id);
    return found != keys_by_id.end() ? found->second : nullptr;
}

const Project &Policy::project_of(const Key &k) const {
    static const Project kNoProject;
    auto found = projects.find(k.project);
    return found != projects.end() ? found->second : kNoProject;
}

const Org &Policy::org_of(const Key &k) const {
    static const Org kNoOrg;
    auto found = orgs.find(project_of(k).org);
    return found != orgs.end() ? found->second : kNoOrg;
}

const Plan *Policy::plan_of(const Org &org) const {
    if (org.plan.empty()) return nullptr;
    auto found = plans.find(org.plan);
    return found != plans.end() ? &found->second : nullptr;
}

Limits Policy::org_limits(const Org &org) const {
    const Plan *plan = plan_of(org);
    if (!plan) return org.limits;
    Limits merged = org.limits.or_else(plan->limits);
    // A ceilings plan's monthly cap depends on cleared spend and age (Redis state).
    if (dynamic_ceiling(org)) merged.monthly_usd.reset();
    return merged;
}

const std::vector<CeilingRow> *Policy::dynamic_ceiling(const Org &org) const {
    const Plan *plan = plan_of(org);
    if (!plan || plan->ceilings.empty() || org.limits.monthly_usd) return nullptr;
    return &plan->ceilings;
}

const char *const kIdRule = "must be 1 to 128 of the characters A-Z a-z 0-9 _ . @ + -, and not `.` or `..`";

bool valid_id(std::string_view id) {
    if (id.empty() || id.size() > 128 || id == "." || id == "..") return false;
    for (unsigned char c : id) {
        const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
                        c == '.' || c == '@' || c == '+' || c == '-';
        if (!ok) return false;
    }
    return true;
}

bool fits_redis_key(std::string_view id) {
    if (id.empty() || id.size() > 128) return false;
    for (unsigned char c : id)
        if (c == ':' || c == '{' || c == '}' || c == ' ' || c < 0x20 || c == 0x7f) return false;
    return true;
}

std::int64_t Policy::context_window(const ModelPrice &price) const {
    return price.context_window ? *price.context_window : default_context_window;
}

std::vector<CeilingRow> ceilings_by_age(const std::vector<CeilingRow> &rows,
                                        std::int64_t account_age_seconds) {
    // age_days * 86400 <= age  <=>  age_days <= floor(age / 86400), which
    // cannot overflow however large age_days is. A created_at in the future
    // (clock skew) is a brand-new account, not one without a ceiling.
    constexpr std::int64_t kSecondsPerDay = 86400;
    const std::int64_t whole_days = std::max<std::int64_t>(account_age_seconds, 0) / kSecondsPerDay;
    std::vector<CeilingRow> old_enough;
    for (const CeilingRow &row : rows)
        if (row.age_days <= whole_days) old_enough.push_back(row);
    return old_enough;
}

std::optional<Nanos> ceiling_for(const std::vector<CeilingRow> &rows, Nanos cleared,
                                 std::int64_t account_age_seconds) {
    std::optional<Nanos> ceiling;
    for (const CeilingRow &row : ceilings_by_age(rows, account_age_seconds))
        if (row.cleared_usd <= std::max<Nanos>(cleared, 0)) ceiling = row.monthly_usd;
    return ceiling;
}

}  // namespace spendcap
