// The policy file (SPEC section 2): prices, orgs, projects, keys and their caps.
// policy.cpp holds the model's lookups and rules, parse.cpp reads the file.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/money.h"
#include "base/text_file.h"
#include "base/periods.h"

namespace spendcap {

enum class Scope { key, project, org, customer };

const char *scope_name(Scope s);  // "key", "project", "org", "customer" (Redis keys, x-spend-scope)
const char *scope_word(Scope s);  // "api key", "project", "account", "customer" (messages)

struct ModelLimits;

// Caps of one scope; absent = no cap. Cost caps in nano-USD, the others are
// counts of requests or tokens (rpm / tpm per UTC minute).
struct Limits {
    std::optional<Nanos> daily_usd;
    std::optional<Nanos> weekly_usd;
    std::optional<Nanos> monthly_usd;
    std::optional<Nanos> lifetime_usd;
    std::optional<std::int64_t> daily_requests;
    std::optional<std::int64_t> weekly_requests;
    std::optional<std::int64_t> monthly_requests;
    std::optional<std::int64_t> daily_tokens;
    std::optional<std::int64_t> weekly_tokens;
    std::optional<std::int64_t> monthly_tokens;
    std::optional<std::int64_t> rpm;
    std::optional<std::int64_t> tpm;
    // Limits of the requests whose model matches a pattern (SPEC section 2b),
    // in the order written; their own limits hold no `models` or
    // `allowed_models` of their own.
    std::vector<ModelLimits> models;
    // The patterns a request's model must match (none: any model).
    std::optional<std::vector<std::string>> allowed_models;

    const std::optional<Nanos> &cost_cap(Window w) const;
    // Request / token caps exist for the daily, weekly and monthly windows only.
    const std::optional<std::int64_t> &request_cap(Window w) const;
    const std::optional<std::int64_t> &token_cap(Window w) const;
    // Whether any weekly limit is set: only then are weekly counters kept.
    bool has_weekly() const { return weekly_usd || weekly_requests || weekly_tokens; }
    // Whether any limit of window `w` is set (cost, requests or tokens).
    bool has_window(Window w) const { return cost_cap(w) || request_cap(w) || token_cap(w); }
    // Field by field: this one's limit where set, else `fallback`'s
    // (`models` and `allowed_models` each as a whole).
    Limits or_else(const Limits &fallback) const;
};

struct ModelLimits {
    std::string pattern;  // "gpt-4o*" (policy/model_patterns.h)
    Limits limits;
};

// A fraction of a cost cap that emits a warning event, parsed exactly.
struct WarnFraction {
    std::string label;          // canonical decimal: "0.5", "0.95", "1"
    std::int64_t billionths;    // 0.5 -> 500'000'000; 0 < billionths <= 1e9
};

// One row of a paid plan's ceilings: applies when the org's cleared spend is
// at least cleared_usd and its account is at least age_days old.
struct CeilingRow {
    Nanos cleared_usd = 0;
    std::int64_t age_days = 0;
    Nanos monthly_usd = 0;
};

struct Plan {
    std::string name;
    Limits limits;                    // apply where the org sets none
    std::vector<CeilingRow> ceilings; // non-empty: a monthly ceiling that rises (first row 0 / 0)
};

// Prices in nano-USD per million tokens.
struct ModelPrice {
    std::string name;
    Nanos input = 0;
    Nanos output = 0;
    std::optional<Nanos> cached_input;  // OpenAI cached prompt tokens
    std::optional<Nanos> cache_write;   // Anthropic cache_creation_input_tokens (5-minute cache)
    // Anthropic's one-hour cache writes (cache_creation.ephemeral_1h_input_tokens);
    // a model with cache_write and without it gets 2 x input, Anthropic's price.
    std::optional<Nanos> cache_write_1h;
    std::optional<Nanos> cache_read;    // Anthropic cache_read_input_tokens
    std::optional<std::int64_t> max_output_tokens;
    // Input tokens a request may hold at most; what a request whose input is
    // not all in its body reserves (SPEC section 3). None: the policy's default.
    std::optional<std::int64_t> context_window;

    // The highest rate any input token can be billed at (input, cached_input,
    // cache_write, cache_write_1h, cache_read): what the worst-case estimate uses.
    Nanos max_input_rate() const;
};

struct Org {
    std::string id;
    Limits limits;                          // as written in the file
    std::string plan;                       // "" = no plan
    std::optional<std::int64_t> created_at; // unix seconds (needed with a ceilings plan)
    bool prepaid = false;                   // also draws from sc:{ORG}:balance
    std::optional<Nanos> low_balance_usd;   // only with prepaid
    // IANA time zone of its (and its projects', keys' and customers') daily,
    // weekly and monthly windows (SPEC section 2b); "" = UTC.
    std::string timezone;
};

// Customer caps: every customer gets default_limits; an override replaces
// the defaults field by field.
struct Customers {
    Limits default_limits;
    std::map<std::string, Limits> overrides;

    Limits limits_for(const std::string &customer_id) const;
};

struct Project {
    std::string id;
    std::string org;
    Limits limits;
};

struct Key {
    std::string id;
    std::string sha256;   // lowercase hex, 64 chars
    std::string project;
    Limits limits;
    std::optional<std::int64_t> expires_at;  // unix seconds
    bool revoked = false;
};

struct Policy {
    std::string file;
    std::uint64_t generation = 0;  // unique per parsed policy in this process (caches tell them apart)
    std::map<std::string, ModelPrice> models;
    std::string unknown_model = "reject";  // "reject" or a listed model's name
    std::int64_t default_max_output_tokens = 4096;
    std::int64_t default_context_window = 200000;
    std::vector<WarnFraction> warn_at;      // ascending, no duplicates
    std::map<std::string, Plan> plans;
    std::map<std::string, Org> orgs;
    std::map<std::string, Project> projects;
    std::unordered_map<std::string, Key> keys_by_sha256;
    std::unordered_map<std::string, const Key *> keys_by_id;  // into keys_by_sha256
    Customers customers;

    // The price to charge `model` at: the model itself, else the
    // `unknown_model` stand-in, else nullptr (reject: 400 model_not_priced).
    const ModelPrice *price_for(const std::string &model) const;
    // nullptr when no key has this hash (lowercase hex).
    const Key *find_key(const std::string &sha256_hex) const;
    // nullptr when no key of the file has this id.
    const Key *find_key_by_id(const std::string &id) const;
    // Both exist for any key of a loaded policy (validated at load).
    const Project &project_of(const Key &k) const;
    const Org &org_of(const Key &k) const;
    // nullptr when the org has no plan.
    const Plan *plan_of(const Org &org) const;
    // The model's context window, else default_context_window.
    std::int64_t context_window(const ModelPrice &price) const;
    // The org's own limits with its plan's filled in where it sets none.
    // monthly_usd stays empty when the plan's monthly cap is a ceiling
    // (see dynamic_ceiling), which depends on Redis state.
    Limits org_limits(const Org &org) const;
    // The ceilings that decide the org's monthly cap, or nullptr: set when
    // the org is on a plan with ceilings and has no monthly_usd of its own.
    const std::vector<CeilingRow> *dynamic_ceiling(const Org &org) const;
};

// Ids of keys, projects, orgs and customers (SPEC section 7): 1 to 128 of
// [A-Za-z0-9_.@+-], neither "." nor "..", so that every id is one URL path
// segment of the management API and one part of a Redis key such as
// sc:{ORG}:spend:customer:ID:m:2026-11.
bool valid_id(std::string_view id);
// The older, wider rule (1 to 128 bytes without ':', '{', '}', spaces or
// controls): what may already name an org in Redis (sc:orgs), which the
// sweeper still visits so that no reservation of it is left behind.
bool fits_redis_key(std::string_view id);
// How valid_id's rule reads in an error message.
extern const char *const kIdRule;

// The rows of a paid plan whose age condition holds for an account this old
// (a created_at in the future counts as age 0), in policy order. The reserve
// script picks among them by cleared spend, which only Redis knows.
std::vector<CeilingRow> ceilings_by_age(const std::vector<CeilingRow> &rows,
                                        std::int64_t account_age_seconds);

// The paid-plan rule: the last row whose two conditions both hold applies
// (negative cleared spend or age count as 0). nullopt when no row holds
// (never for a validated plan, whose first row is 0 / 0).
std::optional<Nanos> ceiling_for(const std::vector<CeilingRow> &rows, Nanos cleared,
                                 std::int64_t account_age_seconds);

// A bad policy file: names the file, the line (1-based, 0 if unknown) and the reason.
// what() is "FILE:LINE: REASON".
class PolicyError : public FileError {
public:
    using FileError::FileError;
};

// Parses and validates policy YAML. Throws PolicyError for bad YAML, unknown
// fields, wrong types, bad prices or limits, malformed sha256, duplicate key
// ids or hashes, a key whose project, a project whose org or an org whose
// plan is missing, bad warn_at fractions or plan ceilings, and fields that
// only make sense together (low_balance_usd without prepaid, a ceilings plan
// without created_at).
std::shared_ptr<const Policy> parse_policy(const std::string &yaml_text,
                                           const std::string &file_name);
// Reads the file (at configuration time only) and parses it.
std::shared_ptr<const Policy> load_policy_file(const std::string &path);

}  // namespace spendcap
