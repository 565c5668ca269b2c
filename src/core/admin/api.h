// The management API's logic (SPEC section 7), without NGINX or Redis: which
// call a method and path name, what a request body says (validated as the
// policy file is, naming the field), and the JSON of every answer. The glue
// (ngx_http_spend_cap_admin.cpp) reads the request, runs the Redis side
// (records.h) and sends what these functions render.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/money.h"
#include "base/periods.h"
#include "policy/policy.h"

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
    events_get,            // GET    /orgs/ID/events?after=EID&count=N
};

// "key_create", ... (log lines, tests).
const char *call_name(Call c);
// The self-service calls, which the key's own secret authorizes (and only them).
bool is_self_call(Call c);
// Whether the call changes anything (writes; an audit event follows).
bool is_change(Call c);

// An error answer: {"error": {"code", "message"}}.
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
std::string render_error(const ApiError &e);

struct Route {
    Call call = Call::key_get;
    std::string id;        // key / project / org id (empty for key_create, keys_list, self_*)
    std::string customer;  // customer_* calls
    std::map<std::string, std::string> query;  // decoded ?a=b&c=d
};

// `path` is relative to the API's location prefix, without the query
// ("/keys/key_1/limits", "keys/key_1/limits" and a trailing "/" alike);
// `method` as NGINX has it ("GET", ...). 404 for an unknown path or an id
// that valid_id() refuses; 405 with `allow` for a known path and another
// method (HEAD is answered as GET). Query strings are percent-decoded; an unknown parameter or a bad
// count is 400.
struct Routed {
    std::optional<Route> route;
    ApiError error;  // when !route
};
Routed route(std::string_view method, std::string_view path, std::string_view query);

// The admin token check, in time independent of where they differ.
bool token_matches(std::string_view expected, std::string_view presented);

// Bodies, validated as the policy file validates the same fields: an error
// names the field ("`limits.monthly_usd` must be ..."). Unknown fields are
// refused. Amounts are decimal USD, string or number, parsed exactly.
struct KeyCreate {
    std::string project;
    std::optional<std::string> id;    // none: generated
    std::string name;                 // "" none
    Limits limits;
    std::optional<std::int64_t> expires_at;  // unix seconds
};
struct Rotate {
    std::int64_t grace_seconds = 0;   // 0 .. 30 days
};
struct ProjectPut {
    std::string org;
    Limits limits;
};
struct OrgPut {
    std::string plan;                          // "" none; must be a plan of the file
    std::optional<std::int64_t> created_at;    // unix seconds
    bool prepaid = false;
    std::optional<Nanos> low_balance_usd;      // only with prepaid
    Limits limits;
};
struct Topup {
    Nanos amount = 0;                // > 0
    std::string idempotency_key;     // 1..128 printable bytes
};

// Each returns the body's value, or sets `error` (400) and returns nullopt.
// `policy` is the file's, for plans (an org's plan must exist, a ceilings
// plan needs created_at).
std::optional<KeyCreate> parse_key_create(std::string_view body, ApiError &error);
std::optional<Rotate> parse_rotate(std::string_view body, ApiError &error);  // "" = {}
// PUT .../limits: a LIMITS object (policy/limits_json.h).
std::optional<Limits> parse_limits_put(std::string_view body, ApiError &error);
std::optional<ProjectPut> parse_project_put(std::string_view body, ApiError &error);
std::optional<OrgPut> parse_org_put(std::string_view body, const Policy &policy, ApiError &error);
std::optional<Topup> parse_topup(std::string_view body, ApiError &error);
std::optional<Nanos> parse_cleared(std::string_view body, ApiError &error);  // {"cleared_usd": A}, A may be 0

// A new secret: "sk-sc-" and 43 base62 characters (256 random bits), and a
// new key id "key_" and 16 base62 characters. Throws std::runtime_error if
// the system's random source fails.
std::string new_secret();
std::string new_key_id();

// What an answer shows of a key (never its secret, but once at creation and rotation).
struct KeyView {
    std::string id, name, project, org;
    Limits limits;
    std::optional<std::int64_t> expires_at;   // RFC 3339 or null
    bool revoked = false;
    std::optional<std::int64_t> created_at;   // null for a file key
    bool from_file = false;                   // "source": "file" | "api"
};
// KEY; with `secret` set it is added as "secret".
std::string render_key(const KeyView &key, const std::string &secret = "");
// {"keys": [KEY...]}
std::string render_keys(const std::vector<KeyView> &keys);

struct ProjectView {
    std::string id, org;
    Limits limits;
    bool from_file = false;
};
std::string render_project(const ProjectView &project);  // {"id", "org", "limits", "source"}

struct OrgView {
    std::string id, plan;                     // plan "" -> null
    std::optional<std::int64_t> created_at;
    bool prepaid = false;
    std::optional<Nanos> low_balance_usd;
    Limits limits;
    Nanos cleared = 0;
    bool from_file = false;
};
// {"id", "plan", "created_at", "prepaid", "low_balance_nanousd"/"low_balance_usd" (null),
//  "limits", "cleared_nanousd"/"cleared_usd", "source"}
std::string render_org(const OrgView &org);

// USAGE. A window's figures; a cap absent is null, and so is its remaining.
struct WindowUsage {
    Window window = Window::daily;
    std::string period;          // "2026-12-01", "2026-12", "" (lifetime -> null)
    std::int64_t reset_at = 0;   // 0 -> null
    Nanos spent = 0;
    std::optional<Nanos> cap;
    std::int64_t requests = 0;                 // lifetime: rendered null (no counter is kept)
    std::optional<std::int64_t> requests_cap;  // lifetime: always null
    std::int64_t tokens = 0;
    std::optional<std::int64_t> tokens_cap;
};
struct RateUsage {
    std::int64_t used = 0;
    std::optional<std::int64_t> cap;
    std::int64_t reset_at = 0;
};
struct UsageView {
    Scope scope = Scope::key;
    std::string id, org;
    std::vector<WindowUsage> windows;   // daily, monthly, lifetime
    RateUsage rpm, tpm;                 // rendered null when their cap is absent
};
// {"scope", "id", "org", "windows": [{"window", "period", "reset_at", "spent_nanousd",
//  "spent_usd", "cap_nanousd", "cap_usd", "remaining_nanousd", "remaining_usd",
//  "requests", "requests_cap", "tokens", "tokens_cap"}...], "rates": {"rpm": R|null, "tpm": R|null}}
// remaining = max(cap - spent, 0).
std::string render_usage(const UsageView &usage);

// LAYER: one cost cap a request of the key meets, in check order.
struct Layer {
    Scope scope = Scope::key;
    std::string id;
    std::string window;          // "daily", "monthly", "lifetime", "balance"
    Nanos cap = 0;               // the balance layer: the balance
    Nanos spent = 0;             // the balance layer: reserved
    Nanos remaining = 0;         // the balance layer: available
    std::int64_t reset_at = 0;   // 0 -> null
};
// {"key": ID, "budgets": [LAYER...]}; "binding": true on the first layer with
// the least remaining, false on the others.
std::string render_budgets(const std::string &key_id, const std::vector<Layer> &layers);

struct BalanceView {
    std::string org;
    Nanos balance = 0;     // settled
    Nanos reserved = 0;    // held by requests in flight
    std::optional<Nanos> low_balance;
};
// {"org", "balance_nanousd", "balance_usd", "reserved_*", "available_*" (balance - reserved),
//  "low_balance_nanousd"/"low_balance_usd" (null)}
std::string render_balance(const BalanceView &b);

// {"org", "idempotency_key", "amount_nanousd", "amount_usd", "balance_nanousd", "balance_usd", "applied"}
std::string render_topup(const std::string &org, const Topup &topup, Nanos balance_after, bool applied);

// One stream entry: its id and its fields as XADD stored them.
struct Event {
    std::string id;
    std::vector<std::pair<std::string, std::string>> fields;
};
// {"events": [{"id": EID, "type": ..., ...fields}], "next": EID of the last one (or the
// `after` given when there is none, null when that is empty too)}
std::string render_events(const std::vector<Event> &events, const std::string &after);

}  // namespace spendcap::admin
