// A request's counters from the policy (SPEC section 6 key names), and the
// cache that builds them once per key and minute.
#include "accounting/ledger.h"

#include "identity/records.h"
#include "redis/keys.h"

#include <algorithm>
#include <functional>

namespace spendcap {

Nanos warn_threshold(Nanos cap, const WarnFraction &fraction) {
    const __int128 product = static_cast<__int128>(std::max<Nanos>(cap, 0)) * fraction.billionths;
    return static_cast<Nanos>((product + kNanosPerUsd - 1) / kNanosPerUsd);
}

namespace {

// A spend counter whose cap can tell events (warnings, the cap reached): its
// label "SCOPE ID WINDOW PERIOD" and the markers hash of its window and period
// (only those: a ledger is cached per key and minute, and most counters have no cap).
void name_for_events(Counter &c, const std::string &org, const std::string &id, const std::string &suffix) {
    // the period is the suffix's part after "d:" / "m:" (none for life)
    const std::size_t colon = suffix.find(':');
    c.label = std::string(scope_name(c.scope)) + " " + id + " " + window_name(c.window) + " "
              + (colon == std::string::npos ? std::string() : suffix.substr(colon + 1));
    c.markers = keys::markers(org, suffix);
}

Ledger build_ledger(const Policy &policy, const Key &key, const Project &project, const Org &org,
                    const std::string &customer, const Limits &customer_limits, const Periods &periods) {
    Ledger ledger;
    ledger.org = org.id;
    ledger.key_id = key.id;
    ledger.periods = periods;
    ledger.warn_at = policy.warn_at;

    struct ScopeOf {
        Scope scope;
        std::string id;
        Limits limits;
    };
    std::vector<ScopeOf> scopes = {
        {Scope::key, key.id, key.limits},
        {Scope::project, project.id, project.limits},
        {Scope::org, org.id, policy.org_limits(org)},
    };
    if (!customer.empty()) scopes.push_back({Scope::customer, customer, customer_limits});

    std::vector<Counter> &counters = ledger.counters;
    counters.reserve(scopes.size() * 9 + 3);
    auto windowed = [&](CounterKind kind, keys::Measure measure, const ScopeOf &s, Window w,
                        std::optional<std::int64_t> cap) {
        const std::string suffix = window_suffix(periods, w);
        Counter c{kind, s.scope, w, keys::counter(org.id, measure, s.scope, s.id, suffix), cap,
                  window_expire_at(periods, w), "", ""};
        if (kind == CounterKind::spend && cap) name_for_events(c, org.id, s.id, suffix);
        counters.push_back(std::move(c));
    };
    for (const ScopeOf &s : scopes) {
        for (Window w : {Window::daily, Window::monthly, Window::lifetime})
            windowed(CounterKind::spend, keys::Measure::spend, s, w, s.limits.cost_cap(w));
        const std::vector<CeilingRow> *ceiling = s.scope == Scope::org ? policy.dynamic_ceiling(org) : nullptr;
        if (ceiling != nullptr) {
            ledger.ceiling_counter = counters.size() - 2;  // the monthly one
            name_for_events(counters[*ledger.ceiling_counter], org.id, s.id, window_suffix(periods, Window::monthly));
            const std::int64_t age = org.created_at ? periods.now - *org.created_at : 0;
            ledger.ceilings = ceilings_by_age(*ceiling, age);
        }
        for (Window w : {Window::daily, Window::monthly})
            windowed(CounterKind::requests, keys::Measure::requests, s, w, s.limits.request_cap(w));
        for (Window w : {Window::daily, Window::monthly})
            windowed(CounterKind::tokens, keys::Measure::tokens, s, w, s.limits.token_cap(w));
    }
    if (org.prepaid) {
        ledger.balance = counters.size();
        counters.push_back(Counter{CounterKind::balance, Scope::org, Window::lifetime, keys::balance(org.id),
                                   std::nullopt, 0, "", ""});
    }
    for (const ScopeOf &s : scopes) {
        if (s.limits.rpm)
            counters.push_back(Counter{CounterKind::rpm, s.scope, Window::daily,
                                       keys::rate(org.id, s.scope, s.id, "rpm", periods.minute), s.limits.rpm,
                                       periods.minute_expire_at, "", ""});
        if (s.limits.tpm)
            counters.push_back(Counter{CounterKind::tpm, s.scope, Window::daily,
                                       keys::rate(org.id, s.scope, s.id, "tpm", periods.minute), s.limits.tpm,
                                       periods.minute_expire_at, "", ""});
    }
    if (org.prepaid) {
        ledger.held = counters.size();
        counters.push_back(Counter{CounterKind::held, Scope::org, Window::lifetime, keys::held(org.id), std::nullopt,
                                   0, "", ""});
        ledger.low_balance = org.low_balance_usd;
    }
    return ledger;
}

}  // namespace

Ledger ledger_for(const Policy &policy, const Key &key, const std::string &customer,
                  const Periods &periods) {
    return build_ledger(policy, key, policy.project_of(key), policy.org_of(key), customer,
                        customer.empty() ? Limits{} : policy.customers.limits_for(customer), periods);
}

Ledger ledger_for(const Policy &policy, const Identity &identity, const Periods &periods) {
    Ledger ledger = build_ledger(policy, identity.key, identity.project, identity.org, identity.customer,
                                 identity.customer_limits, periods);
    ledger.config_version = identity.version;
    return ledger;
}

LedgerCache::LedgerCache(std::size_t slots) : slots_(std::max<std::size_t>(slots, 1)) {}

std::shared_ptr<const Ledger> LedgerCache::get(const Policy &policy, const Identity &identity, std::int64_t now) {
    const std::int64_t minute = now / 60;
    std::uint64_t h = identity.serial * 0xff51afd7ed558ccdULL + static_cast<std::uint64_t>(minute) * 0x9e3779b97f4a7c15ULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    Slot &slot = slots_[h % slots_.size()];
    // A serial is never reused, so it alone tells identities (and their
    // customers and versions) apart.
    if (slot.ledger && slot.generation == policy.generation && slot.serial == identity.serial
        && slot.minute == minute) {
        ++hits_;
        return slot.ledger;
    }
    ++misses_;
    auto ledger = std::make_shared<const Ledger>(ledger_for(policy, identity, periods_at(now)));
    slot.generation = policy.generation;
    slot.key = nullptr;
    slot.serial = identity.serial;
    slot.customer.clear();
    slot.minute = minute;
    slot.ledger = ledger;
    return ledger;
}

std::shared_ptr<const Ledger> LedgerCache::get(const Policy &policy, const Key &key, const std::string &customer,
                                               std::int64_t now) {
    const std::int64_t minute = now / 60;
    // Keys sit at a fixed spacing in memory: mix every bit of the address
    // (murmur3's finalizer), or a power-of-two table would use a few slots.
    std::uint64_t h = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(&key));
    h ^= std::hash<std::string>()(customer) * 31 + static_cast<std::uint64_t>(minute) * 0x9e3779b97f4a7c15ULL;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    Slot &slot = slots_[h % slots_.size()];
    if (slot.ledger && slot.generation == policy.generation && slot.serial == 0 && slot.key == &key
        && slot.minute == minute && slot.customer == customer) {
        ++hits_;
        return slot.ledger;
    }
    ++misses_;
    auto ledger = std::make_shared<const Ledger>(ledger_for(policy, key, customer, periods_at(now)));
    slot.generation = policy.generation;
    slot.key = &key;
    slot.serial = 0;
    slot.customer = customer;
    slot.minute = minute;
    slot.ledger = ledger;
    return ledger;
}

}  // namespace spendcap
