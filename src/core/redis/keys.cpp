// The key schema: one function a key.
#include "redis/keys.h"

namespace spendcap::keys {

std::string key_lookup(const std::string &sha256) { return "sc:key:" + sha256; }
std::string key_id(const std::string &id) { return "sc:keyid:" + id; }
std::string project_index(const std::string &id) { return "sc:project:" + id; }
std::string api_orgs() { return "sc:orgs"; }

std::string org_prefix(const std::string &org) { return "sc:{" + org + "}:"; }

namespace {
const char *measure_name(Measure m) {
    switch (m) {
    case Measure::spend: return "spend";
    case Measure::requests: return "reqs";
    case Measure::tokens: return "tokens";
    }
    return "spend";
}
}  // namespace

std::string counter(const std::string &org, Measure measure, Scope scope, const std::string &id,
                    const std::string &window_suffix) {
    return org_prefix(org) + measure_name(measure) + ":" + scope_name(scope) + ":" + id + ":" + window_suffix;
}

std::string rate(const std::string &org, Scope scope, const std::string &id, const char *rate,
                 const std::string &minute) {
    return org_prefix(org) + "rate:" + scope_name(scope) + ":" + id + ":" + rate + ":" + minute;
}

std::string balance(const std::string &org) { return org_prefix(org) + "balance"; }
std::string held(const std::string &org) { return org_prefix(org) + "balance:held"; }
std::string cleared(const std::string &org) { return org_prefix(org) + "cleared"; }
std::string settlements(const std::string &org) { return org_prefix(org) + "settlements"; }
std::string events(const std::string &org) { return org_prefix(org) + "events"; }

std::string config(const std::string &org) { return org_prefix(org) + "config"; }
std::string key_record(const std::string &org, const std::string &id) { return org_prefix(org) + "key:" + id; }
std::string project_record(const std::string &org, const std::string &id) {
    return org_prefix(org) + "project:" + id;
}
std::string org_record(const std::string &org) { return org_prefix(org) + "org"; }
std::string customer_record(const std::string &org, const std::string &id) {
    return org_prefix(org) + "customer:" + id;
}
std::string api_keys(const std::string &org) { return org_prefix(org) + "keys"; }
std::string api_projects(const std::string &org) { return org_prefix(org) + "projects"; }
std::string topup(const std::string &org, const std::string &idempotency_sha256) {
    return org_prefix(org) + "topup:" + idempotency_sha256;
}

std::string reserved(const std::string &org) { return org_prefix(org) + "reserved"; }
std::string deadlines(const std::string &org) { return org_prefix(org) + "reserved:deadlines"; }
std::string settled(const std::string &org) { return org_prefix(org) + "settled"; }
std::string released(const std::string &org) { return org_prefix(org) + "released"; }
std::string gone(const std::string &org) { return org_prefix(org) + "gone"; }

std::string markers(const std::string &org, const std::string &window_suffix) {
    return org_prefix(org) + "markers:" + window_suffix;
}
std::string low_balance(const std::string &org) { return org_prefix(org) + "low_balance"; }
std::string key_expired(const std::string &org, const std::string &key_id, std::int64_t expires_at) {
    return org_prefix(org) + "expired:" + key_id + ":" + std::to_string(expires_at);
}

std::string legacy_batch_deadlines(const std::string &org) { return org_prefix(org) + "deadlines"; }
std::string legacy_request_deadlines(const std::string &org) { return org_prefix(org) + "reservations"; }
std::string legacy_record(const std::string &org, const std::string &id) { return org_prefix(org) + "resv:" + id; }
std::string legacy_released(const std::string &org, const std::string &request_id) {
    return org_prefix(org) + "released:" + request_id;
}

}  // namespace spendcap::keys
