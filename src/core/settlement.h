// What a request settles at (SPEC section 3 step 7), decided from what the
// response showed: the usage it reported, or the reservation, or nothing.
#pragma once

#include <optional>
#include <string>

#include "money.h"
#include "policy.h"
#include "request.h"
#include "usage.h"

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

}  // namespace spendcap
