// Error answers in the envelope of the API the client called (SPEC section 5).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "periods.h"
#include "policy.h"
#include "request.h"

namespace spendcap {

enum class ErrorCode {
    spend_limit_exceeded,     // 402
    insufficient_credit,      // 402 (prepaid, later issue)
    invalid_api_key,          // 401
    api_key_expired,          // 401
    api_key_revoked,          // 401
    invalid_request,          // 400
    model_not_priced,         // 400
    spend_cap_unavailable,    // 503
};

const char *error_code_name(ErrorCode c);  // "spend_limit_exceeded", ...
int error_status(ErrorCode c);              // 402, 401, 400, 503

// Which cap tripped, for 402 bodies.
struct CapRef {
    Scope scope;
    Window window;
    std::int64_t reset_at = 0;  // unix seconds; 0 (lifetime) -> "reset_at": null
};

struct ErrorReply {
    int status = 0;
    std::string body;          // JSON, Content-Type: application/json
    int retry_after = 0;       // seconds; > 0 only for 429 / 503
};

// "api key has reached its monthly spend limit"
std::string cap_message(const CapRef &cap);

// Renders the envelope. For spend_limit_exceeded pass the cap (message from
// cap_message, plus "scope", "window", "reset_at"); for other codes `message`
// is used as is (a default per code when empty). OpenAI surface:
// {"error":{"message":...,"type":"invalid_request_error","param":null,"code":...}}
// Anthropic: {"type":"error","error":{"type":<per status>,"message":...,"code":...}}
// with Anthropic types 402 billing_error, 429 rate_limit_error, 401
// authentication_error, 400 invalid_request_error, 503 api_error.
// 503 carries retry_after = 1.
ErrorReply render_error(Surface surface, ErrorCode code, const std::string &message,
                        const std::optional<CapRef> &cap = std::nullopt);

}  // namespace spendcap
