// What the access phase decides from a request's body before Redis (SPEC
// section 3, steps 2 and 3): shared by the access phase and by the
// management API's POST /keys/ID/check, so that "would this pass?" is
// answered by the same code that decides.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "http/envelope.h"
#include "policy/policy.h"
#include "request/reach.h"
#include "request/request.h"

namespace spendcap {

// A model name longer than this is refused (400): no provider names a model
// so, and model patterns (policy/model_patterns.h) are matched against it on
// every request, in time proportional to its length.
constexpr std::size_t kMaxModelNameBytes = 256;

struct BodyAssessment {
    // Set: the request is refused (400 invalid_request / model_not_priced)
    // with `message`, before anything is reserved.
    std::optional<ErrorCode> refusal;
    std::string message;
    RequestInfo info;
    RequestReach reach;
    const ModelPrice *price = nullptr;  // set unless refused
};

// Parses the body (its model, bounds and reach) and prices its model.
BodyAssessment assess_body(const Policy &policy, std::string_view body, std::string_view anthropic_beta);

// The worst case of an assessed request whose body, as the upstream gets
// it, is `sent_bytes` long (the access phase may add a field or two).
Estimate estimate_of(const BodyAssessment &assessed, const Policy &policy, std::int64_t sent_bytes);

}  // namespace spendcap
