// The Redis side of one request: the keys it touches and the two Lua scripts
// that check and reserve every limit atomically in one round trip, and
// settle it in one more.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "envelope.h"
#include "money.h"
#include "periods.h"
#include "policy.h"

namespace spendcap {

// Lua sources and their SHA-1 (for EVALSHA; EVAL them on NOSCRIPT).
const std::string &reserve_script();
const std::string &reserve_script_sha1();
const std::string &settle_script();
const std::string &settle_script_sha1();
const std::string &sweep_script();

// spend_cap_reservation_ttl's bounds: a reservation record outlives its
// deadline by a day, and the settlement marker that stops a late resend
// lasts a day too.
constexpr std::int64_t kDefaultReservationTtlMs = 15 * 60 * 1000;
constexpr std::int64_t kMaxReservationTtlMs = 12 * 3600 * 1000;

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
// project -> org -> customer (each: spend daily/monthly/lifetime, requests
// daily/monthly, tokens daily/monthly), then the prepaid balance, then the
// rates of each scope that has one, then the balance's `held` counter.
struct Ledger {
    std::string org;
    std::vector<Counter> counters;
    std::optional<std::size_t> balance;        // index of the balance counter (prepaid orgs)
    std::optional<std::size_t> held;           // index of its held counter
    std::optional<Nanos> low_balance;          // low_balance_usd of a prepaid org
    std::optional<std::size_t> ceiling_counter;  // the org's monthly spend counter, when a
    std::vector<CeilingRow> ceilings;          // paid plan decides its cap: the rows whose
                                               // age condition holds, in policy order
    std::vector<WarnFraction> warn_at;
    Periods periods;
};

// Empty `customer` = no customer scope. Throws only std::bad_alloc.
Ledger ledger_for(const Policy &policy, const Key &key, const std::string &customer,
                  const Periods &periods);

// The spend a warn_at fraction of a cap stands for: ceil(cap * fraction).
// A counter crosses it when it goes from below it to at or above it.
Nanos warn_threshold(Nanos cap, const WarnFraction &fraction);

// Redis command argv (EVALSHA form). The script first gives back the org's
// reservations whose deadline has passed (at most 8), then checks every
// capped counter in order (`current + delta <= cap`; the balance:
// `balance >= estimate`; a paid plan's monthly cap chosen from
// sc:{ORG}:cleared) and, only if all pass (or in a dry run), adds the
// estimate to every counter a check reads (all or nothing; the others get
// the real figure at settlement, once), draws it from the balance,
// records how to give it back under sc:{ORG}:resv:REQUEST_ID with a deadline
// `ttl_ms` from now (Redis's clock) in sc:{ORG}:reservations, and appends
// the warning events whose thresholds it crossed. A request a cost cap
// refuses appends spend_cap_reached once per cap and period. A request
// already settled (a resend arriving late) changes nothing.
std::vector<std::string> reserve_command(const Ledger &ledger, const Amounts &estimate,
                                         const std::string &request_id, bool dry_run,
                                         std::int64_t ttl_ms = kDefaultReservationTtlMs);

struct ReserveOutcome {
    enum class Kind { allowed, blocked, error } kind = Kind::error;
    // blocked, or allowed in a dry run that a cap would have blocked: the first
    // counter (index into the ledger's counters) that refused.
    std::optional<std::size_t> refused_by;
    // The paid plan's monthly cap that applied (when the ledger has ceilings).
    std::optional<Nanos> ceiling_cap;
    // allowed: the cost cap with the least remaining after this reservation.
    std::optional<std::size_t> tightest_index;
    Nanos tightest_cap = 0;
    Nanos tightest_remaining = 0;
    std::string error;
};

// The script's reply, already checked to be an array of integers by the caller.
ReserveOutcome decode_reserve_reply(const Ledger &ledger, const std::vector<long long> &reply);

// The x-spend-* headers of an allowed request (SPEC section 5): the cost cap
// with the least remaining after its reservation; none when no cost cap applies.
struct SpendHeaders {
    std::string limit_usd;      // x-spend-limit-usd
    std::string remaining_usd;  // x-spend-remaining-usd
    std::string reset;          // x-spend-reset (RFC 3339); "" for a lifetime cap
    std::string scope;          // x-spend-scope, e.g. key:monthly
};
std::optional<SpendHeaders> spend_headers(const Ledger &ledger, const ReserveOutcome &outcome);

// The cap a refusing counter stands for, for the error body and $spend_cap_blocked_by.
CapRef cap_ref(const Ledger &ledger, std::size_t counter_index);

// Redis command argv (EVALSHA form) that settles a request exactly once
// (marker sc:{ORG}:settled:REQUEST_ID, 1 day): if its reservation is still
// recorded, replaces the reserved `estimate` by `real` in every counter
// (adds `real` to those the reservation left alone) and the balance
// (rates only while their minute's counter lives); if not (never made, or
// given back at its deadline), adds `real`. `real.requests` is 1 for a
// request that reached the provider, 0 for one refused before it, which
// then ends counted nowhere. All or nothing: a write Redis refuses leaves
// everything as it was (the reply is that error). Appends the warning
// events a rise crossed, and low_balance once when the real balance falls
// below low_balance_usd. `ceiling_cap`: the paid plan's cap the reservation
// saw. Reply: 1 settled now, 0 already settled.
std::vector<std::string> settle_command(const Ledger &ledger, const Amounts &estimate,
                                        const Amounts &real, const std::string &request_id,
                                        const std::optional<Nanos> &ceiling_cap);

// One request's settlement, for a batch.
struct SettleItem {
    Ledger ledger;
    Amounts estimate;
    Amounts real;
    std::string request_id;
    std::optional<Nanos> ceiling_cap;
};

// The settlements of several requests of one org (settle_command's rules
// for each) in one script call: every counter written once, with the batch's
// sum; all or nothing. Empty if the items are not all of one org.
std::vector<std::string> settle_batch_command(const std::vector<SettleItem> &items);

// Redis command argv (EVALSHA form) that gives back at most `most` of the
// org's reservations whose deadline has passed (their workers died or their
// settlements were lost); the reserve script does the same for the orgs it
// serves. Reply: how many it gave back.
std::vector<std::string> sweep_command(const std::string &org, std::int64_t most);

// Redis command argv (EVALSHA form) that appends one key_expired event
// (id, expires_at) the first time an expired key is refused; empty if the key
// has no expires_at.
const std::string &key_expired_script();
std::vector<std::string> key_expired_command(const std::string &org, const Key &key, std::int64_t now);

}  // namespace spendcap
