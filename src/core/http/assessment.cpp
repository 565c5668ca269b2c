// The body's checks in the order the access phase makes them: JSON and a
// model, a reach that a reservation can bound, a price, the model's bounds.
#include "http/assessment.h"

namespace spendcap {

BodyAssessment assess_body(const Policy &policy, std::string_view body, std::string_view anthropic_beta) {
    BodyAssessment out;
    RequestParse parsed = parse_request_body(body);
    if (!parsed.ok) {
        out.refusal = ErrorCode::invalid_request;
        out.message = parsed.error;
        return out;
    }
    out.info = std::move(parsed.info);
    if (out.info.model.size() > kMaxModelNameBytes) {
        out.refusal = ErrorCode::invalid_request;
        out.message = "`model` is longer than " + std::to_string(kMaxModelNameBytes) + " bytes";
        return out;
    }
    out.reach = reach_of(body, anthropic_beta);
    if (!out.reach.refusal.empty()) {
        out.refusal = ErrorCode::invalid_request;
        out.message = out.reach.refusal;
        return out;
    }
    out.price = policy.price_for(out.info.model);
    if (out.price == nullptr) {
        out.refusal = ErrorCode::model_not_priced;
        out.message = "model `" + out.info.model + "` is not priced";
        return out;
    }
    std::string too_much = bounds_error(out.info, *out.price);
    if (!too_much.empty()) {
        out.refusal = ErrorCode::invalid_request;
        out.message = std::move(too_much);
    }
    return out;
}

Estimate estimate_of(const BodyAssessment &assessed, const Policy &policy, std::int64_t sent_bytes) {
    return estimate_worst_case(*assessed.price, policy, sent_bytes, assessed.info.max_output_tokens,
                               assessed.info.choices, assessed.reach);
}

}  // namespace spendcap
