// Which cap refused a request: what the 402/429 answer, the log variable
// and the x-spend-* headers say about it.
#pragma once

#include <cstdint>
#include <string>

#include "base/periods.h"
#include "policy/policy.h"

namespace spendcap {

// What a cap counts.
enum class LimitKind { spend, requests, tokens, rpm, tpm, balance };

// Which cap tripped, for 402 / 429 bodies.
struct CapRef {
    Scope scope = Scope::key;
    Window window = Window::daily;  // spend / requests / tokens
    std::int64_t reset_at = 0;  // unix seconds; 0 (lifetime) -> "reset_at": null
    LimitKind limit = LimitKind::spend;
    std::int64_t retry_after = 0;  // rpm / tpm: seconds to the end of the minute
    std::string model;             // a per-model limit's pattern ("" the scope's own)
};

// For $spend_cap_blocked_by: "key:monthly" (cost caps), "key:daily_requests",
// "project:monthly_tokens", "customer:rpm", "org:tpm", "org:balance", and a
// per-model limit's with its pattern: "key:monthly:gpt-4o*".
std::string blocked_by_label(const CapRef &cap);

// The limit's name as the policy file writes it, for the metrics'
// spend_cap_blocked_total{scope,limit}: "monthly_usd", "daily_requests",
// "lifetime_usd", "monthly_tokens", "rpm", "tpm", "balance".
std::string limit_label(const CapRef &cap);

}  // namespace spendcap
