// Error answers in the envelope of the API the client called (SPEC section 5).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "accounting/cap.h"
#include "base/periods.h"
#include "json/escape.h"  // append_json_string, which the envelopes are built with
#include "policy/policy.h"
#include "request/request.h"

namespace spendcap {

enum class ErrorCode {
    spend_limit_exceeded,     // 402
    request_limit_exceeded,   // 402
    token_limit_exceeded,     // 402
    insufficient_credit,      // 402 (prepaid balance)
    rate_limit_exceeded,      // 429 (rpm / tpm)
    model_not_allowed,        // 403 (allowed_models)
    invalid_api_key,          // 401
    api_key_expired,          // 401
    api_key_revoked,          // 401
    invalid_request,          // 400
    model_not_priced,         // 400
    spend_cap_unavailable,    // 503
};

const char *error_code_name(ErrorCode c);  // "spend_limit_exceeded", ...
int error_status(ErrorCode c);              // 402, 429, 401, 400, 503
// The caller's own error (its key or its body: 401, 400), not a cap's
// refusal nor the gateway's failure: $spend_cap_decision `reject`.
bool callers_error(ErrorCode c);

ErrorCode error_code_for(LimitKind limit);

struct ErrorReply {
    int status = 0;
    std::string body;          // JSON, Content-Type: application/json
    int retry_after = 0;       // seconds; > 0 only for 429 / 503
};

// "api key has reached its monthly spend limit", "project has reached its
// daily request limit", "customer has exceeded its requests per minute limit",
// "insufficient credit balance"; a per-model limit's ends "for gpt-4o*".
std::string cap_message(const CapRef &cap);

// "model gpt-4o is not allowed for this api key" (403 model_not_allowed).
std::string model_not_allowed_message(const std::string &model, Scope scope);

// Renders the envelope. For a cap's code pass the cap (message from
// cap_message, plus "scope", and but for the balance "window" ("minute" for
// rates) and "reset_at"; 429 gets retry_after); for other codes `message`
// is used as is (a default per code when empty). OpenAI surface:
// {"error":{"message":...,"type":"invalid_request_error","param":null,"code":...}}
// Anthropic: {"type":"error","error":{"type":<per status>,"message":...,"code":...}}
// with Anthropic types 402 billing_error, 403 permission_error, 429 rate_limit_error, 401
// authentication_error, 400 invalid_request_error, 503 api_error.
// 503 carries retry_after = 1.
ErrorReply render_error(Surface surface, ErrorCode code, const std::string &message,
                        const std::optional<CapRef> &cap = std::nullopt);

}  // namespace spendcap
