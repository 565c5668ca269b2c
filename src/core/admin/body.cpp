// The management API's request bodies, read strictly and checked field by
// field (json/object_reader.h), each error a 400 naming the field.
#include "admin/body.h"

#include <algorithm>
#include <utility>

#include "base/zones.h"
#include "json/object_reader.h"
#include "policy/limits_json.h"

// JSON null stands for "absent" only where the policy file takes an empty
// value too (`limits`); elsewhere a null is a wrong type. Counts are JSON
// integers; amounts are strings or numbers, a number read from its own text
// in the body (jansson would give a double), never through a double.

namespace spendcap::admin {

namespace {

constexpr std::int64_t kMaxGraceSeconds = 30 * 86400;
constexpr std::size_t kMaxNameBytes = 256;
constexpr std::size_t kMaxIdempotencyKeyBytes = 128;

std::string quoted(std::string_view name) { return "`" + std::string(name) + "`"; }

// The body's 400, for the caller to return.
std::nullopt_t refuse(ApiError &error, std::string message) {
    error = invalid_request(std::move(message));
    return std::nullopt;
}

// A string member that must be an id valid_id() accepts.
bool read_id(json::ObjectReader &reader, const char *name, std::optional<std::string> &out) {
    if (!reader.string(name, out)) return false;
    if (out && !valid_id(*out)) return reader.fail(reader.label(name) + " " + kIdRule);
    return true;
}

}  // namespace

std::optional<KeyCreate> parse_key_create(std::string_view text, ApiError &error) {
    json::Body body;
    std::string message;
    if (!json::load_object(text, body, message)) return refuse(error, message);
    json::ObjectReader reader(body, message);
    KeyCreate create;
    std::optional<std::string> project, id, name;
    if (!reader.only({"project", "id", "name", "limits", "expires_at"}) || !reader.required("project") ||
        !read_id(reader, "project", project) || !read_id(reader, "id", id) || !reader.string("name", name) ||
        !read_limits(reader, "limits", create.limits) || !reader.time("expires_at", create.expires_at))
        return refuse(error, message);
    // /keys/self is the caller's own key: a key named so could not be reached.
    if (id && *id == "self")
        return refuse(error, "`id` must not be `self`, which /keys/self keeps for the caller's own key");
    if (name && name->size() > kMaxNameBytes)
        return refuse(error, "`name` must be at most " + std::to_string(kMaxNameBytes) + " bytes");
    create.project = std::move(*project);
    create.id = std::move(id);
    create.name = name ? std::move(*name) : std::string();
    return create;
}

std::optional<Rotate> parse_rotate(std::string_view text, ApiError &error) {
    json::Body body;
    std::string message;
    if (!json::load_object(text, body, message, true)) return refuse(error, message);
    json::ObjectReader reader(body, message);
    std::optional<std::int64_t> grace;
    if (!reader.only({"grace_seconds"})) return refuse(error, message);
    if (!reader.count("grace_seconds", grace) || (grace && *grace > kMaxGraceSeconds))
        return refuse(error, "`grace_seconds` must be an integer from 0 to " + std::to_string(kMaxGraceSeconds) +
                                 " (30 days)");
    Rotate rotate;
    rotate.grace_seconds = grace.value_or(0);
    return rotate;
}

std::optional<Limits> parse_limits_put(std::string_view text, ApiError &error) {
    std::string message;
    std::optional<Limits> limits = parse_limits(text, message);
    if (!limits) return refuse(error, message);
    return limits;
}

std::optional<ProjectPut> parse_project_put(std::string_view text, ApiError &error) {
    json::Body body;
    std::string message;
    if (!json::load_object(text, body, message)) return refuse(error, message);
    json::ObjectReader reader(body, message);
    ProjectPut put;
    std::optional<std::string> org;
    if (!reader.only({"org", "limits"}) || !reader.required("org") || !read_id(reader, "org", org) ||
        !read_limits(reader, "limits", put.limits))
        return refuse(error, message);
    put.org = std::move(*org);
    return put;
}

std::optional<OrgPut> parse_org_put(std::string_view text, const Policy &policy, ApiError &error) {
    json::Body body;
    std::string message;
    if (!json::load_object(text, body, message)) return refuse(error, message);
    json::ObjectReader reader(body, message);
    OrgPut put;
    std::optional<std::string> plan;
    std::optional<std::string> zone;
    if (!reader.only({"plan", "created_at", "prepaid", "low_balance_usd", "timezone", "limits"}) ||
        !reader.string("timezone", zone) ||
        !reader.string("plan", plan) || !reader.time("created_at", put.created_at) ||
        !reader.boolean("prepaid", put.prepaid) || !reader.amount("low_balance_usd", put.low_balance_usd) ||
        !read_limits(reader, "limits", put.limits))
        return refuse(error, message);
    // The same cross-field rules as an org of the file.
    if (plan) {
        auto found = policy.plans.find(*plan);
        if (found == policy.plans.end())
            return refuse(error,
                          "`plan` names plan " + quoted(*plan) + ", which is not defined in the policy file's `plans`");
        // The ceilings' age_days are counted from created_at.
        if (!found->second.ceilings.empty() && !put.limits.monthly_usd && !put.created_at)
            return refuse(error, "`created_at` is required with plan " + quoted(*plan) +
                                     ", whose monthly ceiling rises with account age (or give `limits.monthly_usd`)");
        put.plan = std::move(*plan);
    }
    // Without a balance there is nothing for the threshold to watch.
    if (put.low_balance_usd && !put.prepaid) return refuse(error, "`low_balance_usd` needs `\"prepaid\": true`");
    if (zone) {
        if (!known_time_zone(*zone))
            return refuse(error, "`timezone` " + quoted(*zone) +
                                     " is not a time zone of the tz database (such as Europe/Berlin)");
        put.timezone = *zone == "UTC" ? "" : std::move(*zone);
    }
    return put;
}

std::optional<Topup> parse_topup(std::string_view text, ApiError &error) {
    json::Body body;
    std::string message;
    if (!json::load_object(text, body, message)) return refuse(error, message);
    json::ObjectReader reader(body, message);
    std::optional<Nanos> amount;
    std::optional<std::string> key;
    if (!reader.only({"amount_usd", "idempotency_key"}) || !reader.required("amount_usd") ||
        !reader.amount("amount_usd", amount) || !reader.required("idempotency_key") ||
        !reader.string("idempotency_key", key))
        return refuse(error, message);
    if (*amount <= 0) return refuse(error, "`amount_usd` must be more than 0");
    // It becomes part of a Redis key and is echoed in answers.
    const bool printable = std::all_of(key->begin(), key->end(), [](char c) { return c >= 0x20 && c < 0x7f; });
    if (key->empty() || key->size() > kMaxIdempotencyKeyBytes || !printable)
        return refuse(error, "`idempotency_key` must be 1 to " + std::to_string(kMaxIdempotencyKeyBytes) +
                                 " printable ASCII characters");
    Topup topup;
    topup.amount = *amount;
    topup.idempotency_key = std::move(*key);
    return topup;
}

std::optional<Nanos> parse_cleared(std::string_view text, ApiError &error) {
    json::Body body;
    std::string message;
    if (!json::load_object(text, body, message)) return refuse(error, message);
    json::ObjectReader reader(body, message);
    std::optional<Nanos> cleared;
    if (!reader.only({"cleared_usd"}) || !reader.required("cleared_usd") || !reader.amount("cleared_usd", cleared))
        return refuse(error, message);
    return cleared;
}

}  // namespace spendcap::admin
