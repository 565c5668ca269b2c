// The management API's shared types (SPEC section 7): the calls it knows and
// the error answers every part of it gives.
#pragma once

#include <cstddef>
#include <string>

namespace spendcap::admin {

// The most an API request body may hold; larger ones get 413 before parsing.
constexpr std::size_t kMaxBodyBytes = 64 * 1024;

enum class Call {
    key_create,            // POST   /keys
    keys_list,             // GET    /keys?project=P | ?org=O
    key_get,               // GET    /keys/ID
    key_revoke,            // DELETE /keys/ID
    key_rotate,            // POST   /keys/ID/rotate
    key_limits_put,        // PUT    /keys/ID/limits
    key_limits_delete,     // DELETE /keys/ID/limits
    key_usage,             // GET    /keys/ID/usage
    key_budgets,           // GET    /keys/ID/budgets
    self_get,              // GET    /keys/self            (the key's own secret as bearer)
    self_usage,            // GET    /keys/self/usage
    self_budgets,          // GET    /keys/self/budgets
    project_put,           // PUT    /projects/ID
    project_get,           // GET    /projects/ID
    project_usage,         // GET    /projects/ID/usage
    project_limits_put,    // PUT    /projects/ID/limits
    project_limits_delete, // DELETE /projects/ID/limits
    org_put,               // PUT    /orgs/ID
    org_get,               // GET    /orgs/ID
    org_usage,             // GET    /orgs/ID/usage
    org_limits_put,        // PUT    /orgs/ID/limits
    org_limits_delete,     // DELETE /orgs/ID/limits
    customer_usage,        // GET    /orgs/O/customers/C/usage
    customer_limits_put,   // PUT    /orgs/O/customers/C/limits
    customer_limits_delete,// DELETE /orgs/O/customers/C/limits
    balance_get,           // GET    /orgs/ID/balance
    topup,                 // POST   /orgs/ID/topups
    cleared_put,           // PUT    /orgs/ID/cleared
    events_get,            // GET    /orgs/ID/events?after=EID&count=N or ?latest=N
    orgs_list,             // GET    /orgs
    projects_list,         // GET    /projects?org=O
    key_usage_daily,       // GET    /keys/ID/usage/daily?days=N&format=csv
    self_usage_daily,      // GET    /keys/self/usage/daily   (the key's own secret as bearer)
    project_usage_daily,   // GET    /projects/ID/usage/daily
    org_usage_daily,       // GET    /orgs/ID/usage/daily
    customer_usage_daily,  // GET    /orgs/O/customers/C/usage/daily
    key_check,             // POST   /keys/ID/check     (an LLM request body: would it pass now?)
    self_check,            // POST   /keys/self/check   (the key's own secret as bearer)
};

// "key_create", ... (log lines, tests).
const char *call_name(Call c);
// The self-service calls, which the key's own secret authorizes (and only them).
bool is_self_call(Call c);
// Whether the call changes anything (writes; an audit event follows).
bool is_change(Call c);

// An error answer: {"error": {"code", "message"}} (render_error, admin/render.h).
struct ApiError {
    int status = 0;       // 400, 401, 404, 405, 409, 413, 503
    std::string code;     // invalid_request, unauthorized, not_found, method_not_allowed,
                          // conflict, payload_too_large, unavailable
    std::string message;
    std::string allow;    // 405 only: the Allow header, e.g. "GET, PUT"
};

ApiError invalid_request(std::string message);
ApiError unauthorized();                  // 401 "missing or wrong admin token"
ApiError not_found(std::string message);  // 404
ApiError conflict(std::string message);   // 409
ApiError unavailable();                   // 503 "redis is unavailable or too slow"

}  // namespace spendcap::admin
