// The Redis side of requests: the arguments of the scripts (lua_scripts.h)
// that check and reserve every limit of a batch of requests atomically in
// one round trip, and settle them in one more, and what their replies say.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "accounting/cap.h"
#include "accounting/ledger.h"
#include "redis/script.h"
#include "base/money.h"
#include "base/periods.h"
#include "policy/policy.h"

namespace spendcap {

// spend_cap_reservation_ttl's bounds: a reservation record outlives its
// deadline by a day, and so do the markers that stop a late resend.
constexpr std::int64_t kDefaultReservationTtlMs = 15 * 60 * 1000;
constexpr std::int64_t kMaxReservationTtlMs = 12 * 3600 * 1000;

// One request's reservation, for a batch.
struct ReserveItem {
    std::shared_ptr<const Ledger> ledger;
    Amounts estimate;
    std::string request_id;
    bool dry_run = false;
};

// Redis command argv (EVALSHA form) that reserves a batch of requests of one
// org (empty if they are not all of one org, or a ledger is empty). The
// script decides each request in order: it checks every capped
// counter (`current + delta <= cap`; the balance: `balance >= estimate`; a
// paid plan's monthly cap chosen from sc:{ORG}:cleared) against the counters
// as the requests before it in the batch left them and, only if all pass
// (or in a dry run), adds the estimate to every counter a check reads (the
// others get the real figure at settlement, once) and draws it from the
// balance. With `check_due`, a refusal while reservations of the org are
// past their deadline (their workers died) changes nothing and replies {4}:
// the worker gives them back (release_sequence) and sends the batch again
// without the check, so that they never refuse a request. Then it writes
// each counter once with the batch's sum, records how to give each request
// back in the org's reservations (keys::reserved) with one deadline `ttl_ms`
// from now (Redis's clock) in keys::deadlines, and appends the warning
// events the batch crossed. Before anything, it checks that the org's
// config version (keys::config) is the one the ledgers were built at
// (Ledger::config_version, the same for every item): if not, it does
// nothing and replies {3}. A request a cost cap refuses appends
// spend_cap_reached once per cap and period. All or nothing; a batch whose
// requests were all settled before it arrived ({2}) changes nothing.
// `batch_id` must be unique (the module uses its first request's id), and so
// must the request ids within a batch (empty otherwise).
std::vector<std::string> reserve_batch_command(const std::vector<ReserveItem> &items, const std::string &batch_id,
                                               std::int64_t ttl_ms = kDefaultReservationTtlMs, bool check_due = true);

// One request as a batch of its own, `request_id` its batch id.
std::vector<std::string> reserve_command(const Ledger &ledger, const Amounts &estimate,
                                         const std::string &request_id, bool dry_run,
                                         std::int64_t ttl_ms = kDefaultReservationTtlMs);

// The same command as reserve_command deciding only: the script answers as
// it would for a reserve and writes nothing (no counter, record or event);
// POST /keys/ID/check's "would this pass?".
std::vector<std::string> check_command(const Ledger &ledger, const Amounts &estimate, const std::string &check_id);

struct ReserveOutcome {
    // stale: the org's records changed since the ledger's caps were read
    // (nothing done: read them again, then reserve again).
    enum class Kind { allowed, blocked, error, stale } kind = Kind::error;
    // blocked, or allowed in a dry run that a cap would have blocked: the first
    // counter (index into the ledger's counters) that refused.
    std::optional<std::size_t> refused_by;
    // The paid plan's monthly cap that applied (when the ledger has ceilings).
    std::optional<Nanos> ceiling_cap;
    // allowed: the budget with the least remaining after this reservation: a
    // cost cap, or a prepaid org's balance (its counter; cap = balance + held).
    std::optional<std::size_t> tightest_index;
    Nanos tightest_cap = 0;
    Nanos tightest_remaining = 0;
    std::string error;
};

// The reserve script's reply (a flat array of integers: per request the
// length of its part, then the part), split per request in order. Empty
// with `given_up` for {2} (the batch was given up), empty with `malformed`
// unless it holds exactly `requests` parts.
struct ReserveReplyParts {
    std::vector<std::vector<long long>> parts;
    bool given_up = false;
    bool stale = false;  // {3}: the batch's config version is not the org's (nothing done)
    // {4}: a request would be refused while reservations are past their
    // deadline (nothing done): give them back (release_sequence), then send
    // the batch again with check_due off
    bool due = false;
    bool malformed = false;
};
// The counters a reserve sends, in check order (the script neither reads nor
// writes the others, and gets no arguments for them); its reply follows them.
std::vector<std::size_t> reserved_counters(const Ledger &ledger);

ReserveReplyParts split_reserve_reply(const std::vector<long long> &flat, std::size_t requests);

// One request's part of the reply.
ReserveOutcome decode_reserve_reply(const Ledger &ledger, const std::vector<long long> &reply);

// The x-spend-* headers of an allowed request (SPEC section 5): the budget
// with the least remaining after its reservation, a prepaid balance included
// ("org:balance", no reset); none when no cost cap and no balance applies.
struct SpendHeaders {
    std::string limit_usd;      // x-spend-limit-usd
    std::string remaining_usd;  // x-spend-remaining-usd
    std::string reset;          // x-spend-reset (RFC 3339); "" for a lifetime cap
    std::string scope;          // x-spend-scope, e.g. key:monthly
};
std::optional<SpendHeaders> spend_headers(const Ledger &ledger, const ReserveOutcome &outcome);

// The cap a refusing counter stands for, for the error body and
// $spend_cap_blocked_by; `now` (unix seconds) for a rate's Retry-After
// (default: the ledger's own time, which a cached ledger has from earlier).
CapRef cap_ref(const Ledger &ledger, std::size_t counter_index, std::int64_t now = 0);

// One request's settlement. `real.requests` is 1 for a request that
// reached the provider, 0 for one refused before it, which then ends
// counted nowhere. `ceiling_cap`: the paid plan's cap the reservation saw.
struct SettleItem {
    std::shared_ptr<const Ledger> ledger;
    Amounts estimate;
    Amounts real;
    std::string request_id;
    std::optional<Nanos> ceiling_cap;
    std::string batch_id;           // its reserve's batch ("" when none was sent)
    bool reserve_answered = true;   // Redis said allowed: its record is authoritative
};

// Redis command argv (EVALSHA form) that settles several requests of one org
// in one script call, each exactly once, every counter written once with
// the batch's sum; all or nothing: a write Redis refuses leaves everything
// as it was (the reply is that error). Per request: while its reservation
// is held (keys::reserved), replaces the reserved `estimate` by `real` in
// every counter (adds `real` to those the reservation left alone) and the
// balance (rates only while their minute's counter lives); if it was given
// back at its deadline (keys::released) or never made, adds `real`. A
// request whose reserve was answered needs no marker: its reservation is
// gone once settled, so a resend does nothing. One whose reserve was not
// answered (timeout, lost connection, never sent) is noted in keys::settled
// for a day, and its batch in keys::gone if its reserve never landed, so
// that a late one does nothing. Counts the requests in keys::settlements.
// Appends the warning events a rise crossed, and low_balance once when the
// real balance falls below low_balance_usd. Reply: 1 settled now, 0 already
// settled. Empty if the items are not all of one org.
// Its last argument is kFirstSend; a resend after an outcome not known (its
// reply lost, or WAIT not confirming it) carries kSentBefore instead: a
// reservation missing at a first send never reached Redis (a failover lost
// it), and its request is then counted at its real cost.
std::vector<std::string> settle_batch_command(const std::vector<SettleItem> &items);
inline constexpr const char *kFirstSend = "0";
inline constexpr const char *kSentBefore = "1";

// One request as a batch of its own; its reserve's batch is its own id (as
// reserve_command makes it).
std::vector<std::string> settle_command(const Ledger &ledger, const Amounts &estimate,
                                        const Amounts &real, const std::string &request_id,
                                        const std::optional<Nanos> &ceiling_cap,
                                        bool reserve_answered = true);

// Redis command argv (EVALSHA form) that appends one key_expired event
// (id, expires_at) the first time an expired key is refused; empty if the key
// has no expires_at.
std::vector<std::string> key_expired_command(const std::string &org, const Key &key, std::int64_t now);

}  // namespace spendcap
