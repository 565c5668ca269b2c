// The counters one request touches (SPEC section 6), built from the policy
// for a key at one moment, and a bounded cache of them: a key's ledger
// depends only on the policy, the key, the customer and the UTC minute.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/money.h"
#include "base/periods.h"
#include "policy/policy.h"

namespace spendcap {

enum class CounterKind {
    spend,     // nano-USD per window
    requests,  // per window
    tokens,    // per window
    rpm,       // requests in the current UTC minute
    tpm,       // tokens in the current UTC minute
    balance,   // a prepaid org's balance: drawn, must stay >= the estimate
    held,      // a prepaid org's reservations not yet settled (balance + held = real balance)
};

// One Redis counter a request touches.
struct Counter {
    CounterKind kind;
    Scope scope;
    Window window;                   // spend / requests / tokens
    std::string key;                 // e.g. sc:{acme}:spend:key:key_prod_1:m:2026-11
    std::optional<std::int64_t> cap; // none = counted, not checked (balance: checked against the estimate)
    std::int64_t expire_at = 0;      // EXPIREAT (0 = never)
    // Capped spend counters and a plan's ceiling counter only (their events):
    // "SCOPE ID WINDOW PERIOD", and the markers hash of their window and
    // period (keys.h).
    std::string label;
    std::string markers;
    // The pattern of a per-model limit (SPEC section 2b), "" for the scope's own.
    std::string model;
    // A capped daily / weekly / monthly spend counter's period, "START RESET"
    // (unix seconds), for the settlement's forecast; "" none.
    std::string forecast;
};

// What a request adds to its counters: reserved as the worst case, settled
// to the real amounts. `requests` is 1 for a request that reached the
// provider, 0 for one refused before it (it then counts nowhere).
struct Amounts {
    Nanos cost = 0;
    std::int64_t tokens = 0;
    std::int64_t requests = 1;
};

// Every Redis entry one request touches, in check order: scopes key ->
// project -> org -> customer (each: spend daily/weekly/monthly/lifetime,
// requests and tokens daily/weekly/monthly, weekly ones only for a scope
// with a weekly limit; then the windows of the per-model limits whose
// pattern matches the request's model), then the prepaid balance, then the
// rates of each scope (its own, then its models'), then the balance's
// `held` counter.
struct Ledger {
    std::string org;
    std::string key_id;
    // The request's model when any scope has per-model limits or allowed
    // models (the ledger then depends on it), else "".
    std::string model;
    bool by_model = false;
    // The first scope whose allowed_models the model is outside of: the
    // request is refused with 403 model_not_allowed before any reserve.
    std::optional<Scope> model_refused_by;
    std::vector<Counter> counters;
    std::optional<std::size_t> balance;        // index of the balance counter (prepaid orgs)
    std::optional<std::size_t> held;           // index of its held counter
    std::optional<Nanos> low_balance;          // low_balance_usd of a prepaid org
    std::optional<std::size_t> ceiling_counter;  // the org's monthly spend counter, when a
    std::vector<CeilingRow> ceilings;          // paid plan decides its cap: the rows whose
                                               // age condition holds, in policy order
    std::vector<WarnFraction> warn_at;
    Periods periods;
    // The org's config version (records.h) the caps were read at: the reserve
    // script refuses to decide against caps that have changed since ("" none).
    std::string config_version;
};

// Empty `customer` = no customer scope. `model`: the request's (per-model
// limits and allowed models look at it). Throws only std::bad_alloc.
Ledger ledger_for(const Policy &policy, const Key &key, const std::string &customer,
                  const Periods &periods, const std::string &model = "");

struct Identity;
// The same for a key resolved with the org's records (records.h).
Ledger ledger_for(const Policy &policy, const Identity &identity, const Periods &periods,
                  const std::string &model = "");


// The spend a warn_at fraction of a cap stands for: ceil(cap * fraction).
// A counter crosses it when it goes from below it to at or above it.
Nanos warn_threshold(Nanos cap, const WarnFraction &fraction);

// Ledgers by (policy, key, customer, UTC minute), so that a request does not
// build the same two dozen key names again. Direct-mapped: a fixed number
// of slots, a newcomer replaces what its slot held, so memory is bounded
// whatever the number of keys. A ledger taken from it has the minute's
// periods: `periods.now` is the minute's first request's, so callers that
// need the second pass their own time (cap_ref).
class LedgerCache {
public:
    explicit LedgerCache(std::size_t slots = 2048);
    // `policy_generation` tells policies apart (Policy::generation): a Key
    // pointer is only compared within one policy.
    std::shared_ptr<const Ledger> get(const Policy &policy, const Key &key, const std::string &customer,
                                      std::int64_t now, const std::string &model = "");
    // By the identity's serial (unique, never reused) and the minute.
    std::shared_ptr<const Ledger> get(const Policy &policy, const Identity &identity, std::int64_t now,
                                      const std::string &model = "");
    std::size_t hits() const { return hits_; }
    std::size_t misses() const { return misses_; }

private:
    struct Slot {
        std::uint64_t generation = 0;
        const Key *key = nullptr;
        std::uint64_t serial = 0;  // an Identity's, or 0 for a file Key's slot
        std::string customer;
        std::int64_t minute = -1;
        std::shared_ptr<const Ledger> ledger;
    };
    // A ledger that depends on the model is looked for again in a second
    // slot that mixes the model in, so that two models of one key do not
    // evict each other.
    template <typename Same, typename Build>
    std::shared_ptr<const Ledger> lookup(std::uint64_t hash, const std::string &model, Same same, Build build);
    std::vector<Slot> slots_;
    PeriodsCache calendars_;
    std::size_t hits_ = 0, misses_ = 0;
};

}  // namespace spendcap
