// The management API's answers: what it shows of keys, projects, orgs, usage,
// budgets, balances and events, and of an error, as JSON in the documented order.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "admin/api.h"
#include "admin/body.h"  // Topup
#include "base/money.h"
#include "base/periods.h"
#include "policy/policy.h"

namespace spendcap::admin {

// {"error": {"code", "message"}}; the status and Allow header are the caller's.
std::string render_error(const ApiError &e);

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
    std::string timezone;                     // "" -> "UTC"
    Limits limits;
    Nanos cleared = 0;
    bool from_file = false;
};
// {"id", "plan", "created_at", "prepaid", "low_balance_nanousd"/"low_balance_usd" (null),
//  "timezone", "limits", "cleared_nanousd"/"cleared_usd", "source"}
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
    std::optional<std::int64_t> forecast;      // forecast_exhausted_at (accounting/forecast.h)
};
struct RateUsage {
    std::int64_t used = 0;
    std::optional<std::int64_t> cap;
    std::int64_t reset_at = 0;
};
// A per-model limit's windows and rates.
struct ModelUsage {
    std::string model;                  // the pattern
    std::vector<WindowUsage> windows;   // the windows it caps
    RateUsage rpm, tpm;
};
struct UsageView {
    Scope scope = Scope::key;
    std::string id, org;
    std::vector<WindowUsage> windows;   // daily, weekly (with a weekly limit), monthly, lifetime
    RateUsage rpm, tpm;                 // rendered null when their cap is absent
    std::vector<ModelUsage> models;     // rendered only when the limits have any
};
// {"scope", "id", "org", "windows": [{"window", "period", "reset_at", "spent_nanousd",
//  "spent_usd", "cap_nanousd", "cap_usd", "remaining_nanousd", "remaining_usd",
//  "requests", "requests_cap", "tokens", "tokens_cap", "forecast_exhausted_at"}...],
//  "rates": {"rpm": R|null, "tpm": R|null}[, "models": [{"model", "windows", "rates"}...]]}
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
    std::optional<std::int64_t> forecast;  // forecast_exhausted_at
    std::string model;           // a per-model cap's pattern; "" -> null
};
// {"key": ID, "budgets": [LAYER...]}; "binding": true on the first layer with
// the least remaining among those every request meets (a per-model cap
// binds only its models' requests), false on the others.
std::string render_budgets(const std::string &key_id, const std::vector<Layer> &layers);

// POST /keys/ID/check's answer: what the access phase would decide now.
struct CheckView {
    bool allowed = false;
    int status = 200;
    std::string code;                    // "" -> null (allowed)
    std::optional<Scope> scope;          // the refusing cap's (or allowed_models') scope
    std::string window;                  // "" -> null
    std::string model;                   // the refusing per-model limit's pattern; "" -> null
    std::string message;                 // the envelope's message; "" -> null
    Nanos estimate = 0;
    std::int64_t estimate_tokens = 0;
    std::optional<Layer> binding;        // allowed: the budget with the least remaining after it
};
// {"allowed", "status", "code", "scope", "window", "model", "message", "estimate_nanousd",
//  "estimate_usd", "estimate_tokens", "binding": LAYER|null}
std::string render_check(const CheckView &check);

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
