// What the management API's answers show, built from the policy file's
// entities and the records the API wrote over them, and usage from counters.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "admin/render.h"
#include "base/periods.h"
#include "identity/records.h"
#include "policy/policy.h"
#include "redis/reply.h"

namespace spendcap::admin {

// The views an answer renders, from the file's entity and the org's record
// over it (either may be missing; nullopt when both are).
KeyView key_view(const Key *file_key, const std::string &id, const std::string &org, const Fields &record);
std::optional<ProjectView> project_view(const Policy &policy, const std::string &id, const std::string &org,
                                        const Fields &record);
std::optional<OrgView> org_view(const Policy &policy, const std::string &id, const Fields &record, Nanos cleared);

// The file key with this id, if any (the file indexes keys by hash).
const Key *file_key_by_id(const Policy &policy, const std::string &id);

// A customer's limits in force: its record's over the file's default
// limits, else the file's for it (a record that does not read: the file's).
Limits customer_limits(const Policy &policy, const std::string &customer, const Fields &record);

// The counters of one scope that usage reads: per window (daily, weekly
// when a weekly limit is set, monthly, lifetime) spend, requests and tokens
// (lifetime: spend only); rpm; tpm; then the same for each per-model limit,
// over the windows it caps.
std::vector<std::string> usage_keys(const std::string &org, Scope scope, const std::string &id, const Periods &p,
                                    const Limits &limits);
// USAGE from the values of usage_keys (read from `first` on; it must hold
// them all: usage_key_count); `monthly_cap`, when set, replaces the limits'
// monthly cap (a plan's ceiling). Forecasts are taken at p.now.
UsageView usage_of(Scope scope, const std::string &id, const std::string &org, const Limits &limits,
                   std::optional<Nanos> monthly_cap, const std::vector<Reply> &values, const Periods &p,
                   std::size_t first = 0);
std::size_t usage_key_count(const Limits &limits);

// LAYERs of a scope's usage: each cost cap (lifetime included), then each
// per-model one with its pattern.
void append_layers(const UsageView &usage, std::vector<Layer> &layers);

}  // namespace spendcap::admin
