// What a request settles at (SPEC section 3 step 7), decided from what the
// response showed: the usage it reported, or the reservation, or nothing.
#pragma once

#include <optional>
#include <string>

#include "base/money.h"
#include "policy/policy.h"
#include "request/request.h"
#include "usage/usage.h"

namespace spendcap {

// What the response showed, as the glue saw it.
struct ResponseSeen {
    bool read = false;                  // a usage reader ran over the response
    bool unreadable = false;            // an encoding it cannot read, or a body not in memory
    UsageScanner::State state = UsageScanner::State::reading;  // the reader's end state
    std::optional<Usage> usage;         // what it found (complete or not)
    std::string error;                  // the reader's error, when malformed
    unsigned status = 0;                // the provider's status; 0: no answer
    bool request_sent = false;          // the request reached the provider
};

struct Settlement {
    Nanos cost = 0;
    Usage usage;                         // the tokens counted (the estimate's when from the reservation)
    const char *from = "usage";          // $spend_cap_settled_from: "usage" or "reservation"
    std::string warning;                 // why it settles at the reservation ("" when it does not)
};

// Usage from a complete response; usage beyond plausible() is not taken at
// face value (the reservation); no usage: the reservation if the provider ran
// the request (2xx, or no answer after it was sent), else nothing; never
// below what an incomplete response did report.
Settlement settle_at(const ResponseSeen &seen, const Estimate &estimate, const ModelPrice &price);

// Where a request stands when its log phase runs, for plan_settlement.
struct SettleFacts {
    bool reserve_sent = false;      // its reserve left for Redis
    bool fail_open = false;         // Redis failed and the request went on, unreserved
    bool refused = false;           // Redis refused it (a cap)
    bool reserve_failed = false;    // Redis answered its reserve with an error: nothing changed
    bool reached_provider = false;  // allowed, allowed in a dry run, or let through failing open
    bool has_ledger = false;        // its counters were taken
};

// Whether the request settles, and whether in its reserve's batch record.
struct SettlePlan {
    bool settle = false;
    bool in_batch = false;  // its reserve landed, or may have: look in its batch
};

// Nothing to settle when nothing was counted: no reserve left (unless it
// failed open: its real cost is still added), Redis refused it, or answered
// its reserve with an error and it never reached the provider; or no
// counters were taken. Everything else settles (a reserve that timed out
// too: settling a request refused here at nothing gives back what Redis may
// still have reserved).
SettlePlan plan_settlement(const SettleFacts &facts);

}  // namespace spendcap
