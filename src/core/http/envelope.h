// Error answers in the envelope of the API the client called (SPEC section 5).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "base/periods.h"
#include "policy/policy.h"
#include "request/request.h"

namespace spendcap {

enum class ErrorCode {
    spend_limit_exceeded,     // 402
    request_limit_exceeded,   // 402
    token_limit_exceeded,     // 402
    insufficient_credit,      // 402 (prepaid balance)
    rate_limit_exceeded,      // 429 (rpm / tpm)
    invalid_api_key,          // 401
    api_key_expired,          // 401
    api_key_revoked,          // 401
    invalid_request,          // 400
    model_not_priced,         // 400
    spend_cap_unavailable,    // 503
};

// Appends `text` as a JSON string literal; invalid UTF-8 becomes U+FFFD, so
// the answer always parses whatever bytes a message or an id holds.
void append_json_string(std::string &out, std::string_view text);

const char *error_code_name(ErrorCode c);  // "spend_limit_exceeded", ...
int error_status(ErrorCode c);              // 402, 429, 401, 400, 503

// What a cap counts.
enum class LimitKind { spend, requests, tokens, rpm, tpm, balance };

// Which cap tripped, for 402 / 429 bodies.
struct CapRef {
    Scope scope;
    Window window;              // spend / requests / tokens
    std::int64_t reset_at = 0;  // unix seconds; 0 (lifetime) -> "reset_at": null
    LimitKind limit = LimitKind::spend;
    std::int64_t retry_after = 0;  // rpm / tpm: seconds to the end of the minute
};

ErrorCode error_code_for(LimitKind limit);
// For $spend_cap_blocked_by: "key:monthly" (cost caps), "key:daily_requests",
// "project:monthly_tokens", "customer:rpm", "org:tpm", "org:balance".
std::string blocked_by_label(const CapRef &cap);

struct ErrorReply {
    int status = 0;
    std::string body;          // JSON, Content-Type: application/json
    int retry_after = 0;       // seconds; > 0 only for 429 / 503
};

// "api key has reached its monthly spend limit", "project has reached its
// daily request limit", "customer has exceeded its requests per minute limit",
// "insufficient credit balance".
std::string cap_message(const CapRef &cap);

// Renders the envelope. For a cap's code pass the cap (message from
// cap_message, plus "scope", and but for the balance "window" ("minute" for
// rates) and "reset_at"; 429 gets retry_after); for other codes `message`
// is used as is (a default per code when empty). OpenAI surface:
// {"error":{"message":...,"type":"invalid_request_error","param":null,"code":...}}
// Anthropic: {"type":"error","error":{"type":<per status>,"message":...,"code":...}}
// with Anthropic types 402 billing_error, 429 rate_limit_error, 401
// authentication_error, 400 invalid_request_error, 503 api_error.
// 503 carries retry_after = 1.
ErrorReply render_error(Surface surface, ErrorCode code, const std::string &message,
                        const std::optional<CapRef> &cap = std::nullopt);

}  // namespace spendcap
