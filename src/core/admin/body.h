// The management API's request bodies, validated as the policy file validates
// the same fields; an error names the field and answers 400.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "admin/api.h"
#include "base/money.h"
#include "policy/policy.h"

namespace spendcap::admin {

// An error names the field ("`limits.monthly_usd` must be ..."). Unknown
// fields are refused. Amounts are decimal USD, string or number, parsed exactly.
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
    std::string timezone;                      // "" = UTC; a zone of the tz database
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

}  // namespace spendcap::admin
