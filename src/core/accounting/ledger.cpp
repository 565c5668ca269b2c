// A request's counters from the policy (SPEC section 6 key names), and the
// cache that builds them once per key and minute.
#include "accounting/ledger.h"

#include "identity/records.h"
#include "policy/model_patterns.h"
#include "redis/keys.h"

#include <algorithm>
#include <functional>

namespace spendcap {

Nanos warn_threshold(Nanos cap, const WarnFraction &fraction) {
    const __int128 product = static_cast<__int128>(std::max<Nanos>(cap, 0)) * fraction.billionths;
    return static_cast<Nanos>((product + kNanosPerUsd - 1) / kNanosPerUsd);
}

namespace {

// A spend counter whose cap can tell events (warnings, the cap reached, the
// forecast): its label "SCOPE ID WINDOW PERIOD[ MODEL]" and the markers hash
// of its window and period (only those: a ledger is cached per key and
// minute, and most counters have no cap).
void name_for_events(Counter &c, const std::string &org, const std::string &id, const std::string &suffix) {
    // the period is the suffix's part after "d:" / "w:" / "m:" (none for life)
    const std::size_t colon = suffix.find(':');
    c.label = std::string(scope_name(c.scope)) + " " + id + " " + window_name(c.window) + " "
              + (colon == std::string::npos ? std::string() : suffix.substr(colon + 1));
    if (!c.model.empty()) c.label += " " + c.model;
    c.markers = keys::markers(org, suffix);
}

// "START RESET" of a capped spend counter's period (not lifetime's).
void name_for_forecast(Counter &c, const Periods &periods) {
    if (c.window == Window::lifetime) return;
    c.forecast = std::to_string(window_start(periods, c.window)) + " " + std::to_string(window_reset(periods, c.window));
}

struct ScopeOf {
    Scope scope;
    std::string id;
    Limits limits;
};

bool any_model_rules(const std::vector<ScopeOf> &scopes) {
    for (const ScopeOf &s : scopes)
        if (!s.limits.models.empty() || s.limits.allowed_models) return true;
    return false;
}

Ledger build_ledger(const Policy &policy, const Key &key, const Project &project, const Org &org,
                    const std::string &customer, const Limits &customer_limits, const Periods &periods,
                    const std::string &model) {
    Ledger ledger;
    ledger.org = org.id;
    ledger.key_id = key.id;
    ledger.periods = periods;
    ledger.warn_at = policy.warn_at;

    std::vector<ScopeOf> scopes = {
        {Scope::key, key.id, key.limits},
        {Scope::project, project.id, project.limits},
        {Scope::org, org.id, policy.org_limits(org)},
    };
    if (!customer.empty()) scopes.push_back({Scope::customer, customer, customer_limits});
    ledger.by_model = any_model_rules(scopes);
    if (ledger.by_model) ledger.model = model;

    // Per scope, the per-model limits whose pattern matches the model.
    std::vector<std::vector<const ModelLimits *>> matching(scopes.size());
    for (std::size_t x = 0; x < scopes.size(); ++x) {
        const Limits &limits = scopes[x].limits;
        if (limits.allowed_models && !ledger.model_refused_by) {
            bool allowed = false;
            for (const std::string &pattern : *limits.allowed_models) allowed = allowed || model_matches(pattern, model);
            if (!allowed) ledger.model_refused_by = scopes[x].scope;
        }
        for (const ModelLimits &m : limits.models)
            if (model_matches(m.pattern, model)) matching[x].push_back(&m);
    }

    std::vector<Counter> &counters = ledger.counters;
    counters.reserve(scopes.size() * 9 + 3);
    // `pattern`: a per-model limit's, whose counters sit under ...:model:PATTERN.
    auto windowed = [&](CounterKind kind, keys::Measure measure, const ScopeOf &s, Window w,
                        std::optional<std::int64_t> cap, const std::string &pattern) {
        const std::string suffix = window_suffix(periods, w);
        const std::string id = pattern.empty() ? s.id : s.id + ":model:" + encode_pattern(pattern);
        Counter c{kind, s.scope, w, keys::counter(org.id, measure, s.scope, id, suffix), cap,
                  window_expire_at(periods, w), "", "", pattern, ""};
        if (kind == CounterKind::spend && cap) {
            name_for_events(c, org.id, s.id, suffix);
            name_for_forecast(c, periods);
        }
        counters.push_back(std::move(c));
    };
    for (std::size_t x = 0; x < scopes.size(); ++x) {
        const ScopeOf &s = scopes[x];
        const bool weekly = s.limits.has_weekly();
        for (Window w : {Window::daily, Window::weekly, Window::monthly, Window::lifetime})
            if (w != Window::weekly || weekly)
                windowed(CounterKind::spend, keys::Measure::spend, s, w, s.limits.cost_cap(w), "");
        const std::vector<CeilingRow> *ceiling = s.scope == Scope::org ? policy.dynamic_ceiling(org) : nullptr;
        if (ceiling != nullptr) {
            ledger.ceiling_counter = counters.size() - 2;  // the monthly one
            name_for_events(counters[*ledger.ceiling_counter], org.id, s.id, window_suffix(periods, Window::monthly));
            const std::int64_t age = org.created_at ? periods.now - *org.created_at : 0;
            ledger.ceilings = ceilings_by_age(*ceiling, age);
        }
        for (Window w : {Window::daily, Window::weekly, Window::monthly})
            if (w != Window::weekly || weekly)
                windowed(CounterKind::requests, keys::Measure::requests, s, w, s.limits.request_cap(w), "");
        for (Window w : {Window::daily, Window::weekly, Window::monthly})
            if (w != Window::weekly || weekly)
                windowed(CounterKind::tokens, keys::Measure::tokens, s, w, s.limits.token_cap(w), "");
        // A per-model limit keeps the counters of the windows it caps only.
        for (const ModelLimits *m : matching[x]) {
            for (Window w : {Window::daily, Window::weekly, Window::monthly, Window::lifetime}) {
                if (!m->limits.has_window(w)) continue;
                windowed(CounterKind::spend, keys::Measure::spend, s, w, m->limits.cost_cap(w), m->pattern);
                if (w == Window::lifetime) continue;
                windowed(CounterKind::requests, keys::Measure::requests, s, w, m->limits.request_cap(w), m->pattern);
                windowed(CounterKind::tokens, keys::Measure::tokens, s, w, m->limits.token_cap(w), m->pattern);
            }
        }
    }
    if (org.prepaid) {
        ledger.balance = counters.size();
        counters.push_back(Counter{CounterKind::balance, Scope::org, Window::lifetime, keys::balance(org.id),
                                   std::nullopt, 0, "", "", "", ""});
    }
    auto rates = [&](const ScopeOf &s, const Limits &limits, const std::string &pattern) {
        const std::string id = pattern.empty() ? s.id : s.id + ":model:" + encode_pattern(pattern);
        if (limits.rpm)
            counters.push_back(Counter{CounterKind::rpm, s.scope, Window::daily,
                                       keys::rate(org.id, s.scope, id, "rpm", periods.minute), limits.rpm,
                                       periods.minute_expire_at, "", "", pattern, ""});
        if (limits.tpm)
            counters.push_back(Counter{CounterKind::tpm, s.scope, Window::daily,
                                       keys::rate(org.id, s.scope, id, "tpm", periods.minute), limits.tpm,
                                       periods.minute_expire_at, "", "", pattern, ""});
    };
    for (std::size_t x = 0; x < scopes.size(); ++x) {
        rates(scopes[x], scopes[x].limits, "");
        for (const ModelLimits *m : matching[x]) rates(scopes[x], m->limits, m->pattern);
    }
    if (org.prepaid) {
        ledger.held = counters.size();
        counters.push_back(Counter{CounterKind::held, Scope::org, Window::lifetime, keys::held(org.id), std::nullopt,
                                   0, "", "", "", ""});
        ledger.low_balance = org.low_balance_usd;
    }
    return ledger;
}

}  // namespace


Ledger ledger_for(const Policy &policy, const Key &key, const std::string &customer,
                  const Periods &periods, const std::string &model) {
    return build_ledger(policy, key, policy.project_of(key), policy.org_of(key), customer,
                        customer.empty() ? Limits{} : policy.customers.limits_for(customer), periods, model);
}

Ledger ledger_for(const Policy &policy, const Identity &identity, const Periods &periods, const std::string &model) {
    Ledger ledger = build_ledger(policy, identity.key, identity.project, identity.org, identity.customer,
                                 identity.customer_limits, periods, model);
    ledger.config_version = identity.version;
    return ledger;
}

LedgerCache::LedgerCache(std::size_t slots) : slots_(std::max<std::size_t>(slots, 1)) {}

namespace {

std::uint64_t mix(std::uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

}  // namespace

template <typename Same, typename Build>
std::shared_ptr<const Ledger> LedgerCache::lookup(std::uint64_t hash, const std::string &model, Same same,
                                                  Build build) {
    Slot *slot = &slots_[hash % slots_.size()];
    if (slot->ledger && same(*slot)) {
        if (!slot->ledger->by_model || slot->ledger->model == model) {
            ++hits_;
            return slot->ledger;
        }
        // this key's ledgers depend on the model: its second slot
        slot = &slots_[mix(hash ^ std::hash<std::string>()(model)) % slots_.size()];
        if (slot->ledger && same(*slot) && slot->ledger->model == model) {
            ++hits_;
            return slot->ledger;
        }
    }
    ++misses_;
    slot->ledger = build(*slot);
    return slot->ledger;
}

std::shared_ptr<const Ledger> LedgerCache::get(const Policy &policy, const Identity &identity, std::int64_t now,
                                               const std::string &model) {
    const std::int64_t minute = now / 60;
    const std::uint64_t h =
        mix(identity.serial * 0xff51afd7ed558ccdULL + static_cast<std::uint64_t>(minute) * 0x9e3779b97f4a7c15ULL);
    // A serial is never reused, so it alone tells identities (and their
    // customers and versions) apart.
    auto same = [&](const Slot &slot) {
        return slot.generation == policy.generation && slot.serial == identity.serial && slot.minute == minute;
    };
    auto build = [&](Slot &slot) {
        slot.generation = policy.generation;
        slot.key = nullptr;
        slot.serial = identity.serial;
        slot.customer.clear();
        slot.minute = minute;
        return std::make_shared<const Ledger>(
            ledger_for(policy, identity, calendars_.periods(identity.org.timezone, now), model));
    };
    return lookup(h, model, same, build);
}

std::shared_ptr<const Ledger> LedgerCache::get(const Policy &policy, const Key &key, const std::string &customer,
                                               std::int64_t now, const std::string &model) {
    const std::int64_t minute = now / 60;
    // Keys sit at a fixed spacing in memory: mix every bit of the address
    // (murmur3's finalizer), or a power-of-two table would use a few slots.
    std::uint64_t h = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(&key));
    h ^= std::hash<std::string>()(customer) * 31 + static_cast<std::uint64_t>(minute) * 0x9e3779b97f4a7c15ULL;
    h = mix(h);
    auto same = [&](const Slot &slot) {
        return slot.generation == policy.generation && slot.serial == 0 && slot.key == &key && slot.minute == minute
               && slot.customer == customer;
    };
    auto build = [&](Slot &slot) {
        slot.generation = policy.generation;
        slot.key = &key;
        slot.serial = 0;
        slot.customer = customer;
        slot.minute = minute;
        return std::make_shared<const Ledger>(
            ledger_for(policy, key, customer, calendars_.periods(policy.org_of(key).timezone, now), model));
    };
    return lookup(h, model, same, build);
}

}  // namespace spendcap
