// The Redis side of one request: the keys and Lua scripts that check and
// reserve every cap atomically in one round trip, and settle it later.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "money.h"
#include "periods.h"
#include "policy.h"

namespace spendcap {

// Lua sources and their SHA-1 (for EVALSHA; EVAL them on NOSCRIPT).
const std::string &reserve_script();
const std::string &reserve_script_sha1();
const std::string &settle_script();
const std::string &settle_script_sha1();

enum class CounterKind { spend, requests };

// One Redis counter a request touches.
struct Counter {
    CounterKind kind;
    Scope scope;
    Window window;
    std::string key;                 // e.g. sc:{acme}:spend:key:key_prod_1:m:2026-11
    std::optional<std::int64_t> cap; // nano-USD for spend; none = count only
    std::int64_t expire_at = 0;      // EXPIREAT (0 = never)
};

// Every counter of a key's request, in check order: scope key -> project -> org,
// within a scope daily -> monthly -> lifetime, spend counters then request
// counters. All are counted; only those with a cap are checked.
std::vector<Counter> counters_for(const Policy &policy, const Key &key, const Periods &periods);

// Redis command argv (EVALSHA form) that checks `spent + delta <= cap` for
// every capped counter in order and, only if all pass, adds the estimate to
// every spend counter and 1 to every request counter, sets expiries, and
// records the reservation under sc:{ORG}:resv:REQUEST_ID (expires in 1 day)
// so that settlement replaces exactly what was reserved.
std::vector<std::string> reserve_command(const std::string &org,
                                         const std::vector<Counter> &counters,
                                         Nanos estimate,
                                         const std::string &request_id);

struct ReserveOutcome {
    enum class Kind { allowed, blocked, error } kind = Kind::error;
    // blocked: the first counter (index into counters) whose cap would be crossed.
    std::size_t blocked_index = 0;
    // allowed: the cost cap with the least remaining after this reservation.
    std::optional<std::size_t> tightest_index;
    Nanos tightest_remaining = 0;
    std::string error;
};

// The script's reply, already checked to be an array of integers by the caller.
ReserveOutcome decode_reserve_reply(const std::vector<Counter> &counters,
                                    const std::vector<long long> &reply);

// Redis command argv (EVALSHA form) that settles a request exactly once
// (marker sc:{ORG}:settled:REQUEST_ID, 1 day): if Redis recorded the
// reservation (`estimate`, from reserve_command), replaces it by `cost` in
// every spend counter; if not, adds `cost`, and when `count_unreserved` is set
// (a fail-open request that reached the upstream) 1 to every request counter.
// Reply: 1 settled now, 0 already settled.
std::vector<std::string> settle_command(const std::string &org,
                                        const std::vector<Counter> &counters,
                                        Nanos estimate,
                                        Nanos cost,
                                        const std::string &request_id,
                                        bool count_unreserved);

}  // namespace spendcap
