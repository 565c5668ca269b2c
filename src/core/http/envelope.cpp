// Error bodies in the shape each provider's SDKs already parse (SPEC section 5).
// Built by hand rather than with jansson so the field order is exactly the
// documented one.
#include "http/envelope.h"

#include <algorithm>

namespace spendcap {

namespace {


const char *openai_type(int status) {
    // OpenAI answers client errors as invalid_request_error (a bad key too)
    // and its own failures as server_error.
    return status >= 500 ? "server_error" : "invalid_request_error";
}

const char *anthropic_type(int status) {
    switch (status) {
    case 400: return "invalid_request_error";
    case 401: return "authentication_error";
    case 402: return "billing_error";
    case 403: return "permission_error";
    case 429: return "rate_limit_error";
    default: return "api_error";
    }
}

const char *default_message(ErrorCode code) {
    switch (code) {
    case ErrorCode::spend_limit_exceeded: return "spend limit reached";
    case ErrorCode::request_limit_exceeded: return "request limit reached";
    case ErrorCode::token_limit_exceeded: return "token limit reached";
    case ErrorCode::insufficient_credit: return "insufficient credit balance";
    case ErrorCode::rate_limit_exceeded: return "rate limit exceeded";
    case ErrorCode::model_not_allowed: return "model is not allowed";
    case ErrorCode::invalid_api_key: return "invalid api key";
    case ErrorCode::api_key_expired: return "api key has expired";
    case ErrorCode::api_key_revoked: return "api key has been revoked";
    case ErrorCode::invalid_request: return "invalid request";
    case ErrorCode::model_not_priced: return "model is not priced";
    case ErrorCode::spend_cap_unavailable: return "spend cap service unavailable, retry shortly";
    }
    return "error";
}

bool is_rate(LimitKind limit) { return limit == LimitKind::rpm || limit == LimitKind::tpm; }

// ,"scope":"key","window":"monthly","reset_at":"..."|null
void append_cap_fields(std::string &out, const CapRef &cap) {
    out += ",\"scope\":";
    append_json_string(out, scope_name(cap.scope));
    if (cap.limit == LimitKind::balance) return;  // a balance has no window to wait for
    out += ",\"window\":";
    append_json_string(out, is_rate(cap.limit) ? "minute" : window_name(cap.window));
    out += ",\"reset_at\":";
    if ((!is_rate(cap.limit) && cap.window == Window::lifetime) || cap.reset_at == 0)
        out += "null";
    else
        append_json_string(out, format_rfc3339(cap.reset_at));
    if (!cap.model.empty()) {
        out += ",\"model\":";
        append_json_string(out, cap.model);
    }
}

}  // namespace

const char *error_code_name(ErrorCode c) {
    switch (c) {
    case ErrorCode::spend_limit_exceeded: return "spend_limit_exceeded";
    case ErrorCode::request_limit_exceeded: return "request_limit_exceeded";
    case ErrorCode::token_limit_exceeded: return "token_limit_exceeded";
    case ErrorCode::insufficient_credit: return "insufficient_credit";
    case ErrorCode::rate_limit_exceeded: return "rate_limit_exceeded";
    case ErrorCode::model_not_allowed: return "model_not_allowed";
    case ErrorCode::invalid_api_key: return "invalid_api_key";
    case ErrorCode::api_key_expired: return "api_key_expired";
    case ErrorCode::api_key_revoked: return "api_key_revoked";
    case ErrorCode::invalid_request: return "invalid_request";
    case ErrorCode::model_not_priced: return "model_not_priced";
    case ErrorCode::spend_cap_unavailable: return "spend_cap_unavailable";
    }
    return "invalid_request";
}

bool callers_error(ErrorCode c) {
    const int status = error_status(c);
    return status == 400 || status == 401;
}

int error_status(ErrorCode c) {
    switch (c) {
    case ErrorCode::spend_limit_exceeded:
    case ErrorCode::request_limit_exceeded:
    case ErrorCode::token_limit_exceeded:
    case ErrorCode::insufficient_credit: return 402;
    case ErrorCode::rate_limit_exceeded: return 429;
    case ErrorCode::model_not_allowed: return 403;
    case ErrorCode::invalid_api_key:
    case ErrorCode::api_key_expired:
    case ErrorCode::api_key_revoked: return 401;
    case ErrorCode::invalid_request:
    case ErrorCode::model_not_priced: return 400;
    case ErrorCode::spend_cap_unavailable: return 503;
    }
    return 500;
}

ErrorCode error_code_for(LimitKind limit) {
    switch (limit) {
    case LimitKind::spend: return ErrorCode::spend_limit_exceeded;
    case LimitKind::requests: return ErrorCode::request_limit_exceeded;
    case LimitKind::tokens: return ErrorCode::token_limit_exceeded;
    case LimitKind::rpm:
    case LimitKind::tpm: return ErrorCode::rate_limit_exceeded;
    case LimitKind::balance: return ErrorCode::insufficient_credit;
    }
    return ErrorCode::spend_limit_exceeded;
}

namespace {

std::string plain_cap_message(const CapRef &cap) {
    const std::string who = scope_word(cap.scope);
    switch (cap.limit) {
    case LimitKind::spend: return who + " has reached its " + window_name(cap.window) + " spend limit";
    case LimitKind::requests: return who + " has reached its " + window_name(cap.window) + " request limit";
    case LimitKind::tokens: return who + " has reached its " + window_name(cap.window) + " token limit";
    case LimitKind::rpm: return who + " has exceeded its requests per minute limit";
    case LimitKind::tpm: return who + " has exceeded its tokens per minute limit";
    case LimitKind::balance: return "insufficient credit balance";
    }
    return who + " has reached a limit";
}

}  // namespace

std::string cap_message(const CapRef &cap) {
    std::string message = plain_cap_message(cap);
    if (!cap.model.empty()) message += " for " + cap.model;
    return message;
}

std::string model_not_allowed_message(const std::string &model, Scope scope) {
    return "model " + model + " is not allowed for this " + scope_word(scope);
}

ErrorReply render_error(Surface surface, ErrorCode code, const std::string &message,
                        const std::optional<CapRef> &cap) {
    ErrorReply reply;
    reply.status = error_status(code);
    reply.retry_after = reply.status == 503 ? 1 : 0;

    // Only a cap's own code names the scope and window that tripped.
    const CapRef *tripped = cap && error_code_for(cap->limit) == code ? &*cap : nullptr;
    if (tripped && reply.status == 429)
        reply.retry_after = static_cast<int>(std::max<std::int64_t>(tripped->retry_after, 1));
    std::string text = message;
    if (text.empty()) text = tripped ? cap_message(*tripped) : default_message(code);

    std::string &body = reply.body;
    if (surface == Surface::openai) {
        body = "{\"error\":{\"message\":";
        append_json_string(body, text);
        body += ",\"type\":";
        append_json_string(body, openai_type(reply.status));
        body += ",\"param\":null,\"code\":";
        append_json_string(body, error_code_name(code));
    } else {
        body = "{\"type\":\"error\",\"error\":{\"type\":";
        append_json_string(body, anthropic_type(reply.status));
        body += ",\"message\":";
        append_json_string(body, text);
        body += ",\"code\":";
        append_json_string(body, error_code_name(code));
    }
    if (tripped) append_cap_fields(body, *tripped);
    body += "}}";
    return reply;
}

}  // namespace spendcap
