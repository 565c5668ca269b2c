// The management API's logic (SPEC section 7): routing, body validation and
// the JSON of every answer, without NGINX or Redis.
//
// Choices the header leaves open:
// - Paths are matched as given (NGINX has already percent-decoded the URI);
//   one leading and one trailing "/" are optional. "/keys/self..." never
//   names a key whose id is "self": /keys/self/rotate and /keys/self/limits
//   are 404, and a key cannot be created with the id "self".
// - Queries are percent-decoded ('+' stays a '+': no id may hold a space, so
//   nothing needs it as one). A parameter the call does not take, one given
//   twice or a malformed escape is 400, for every call. keys_list takes
//   exactly one of project= and org=; events_get takes after= (a stream id
//   "MS-SEQ") and count= (1..1000), and its Route always holds "count",
//   normalized ("100" when not given).
// - Bodies: JSON null stands for "absent" only where the policy file takes an
//   empty value too (`limits`); elsewhere a null is a wrong type. Counts are
//   JSON integers; amounts are strings or numbers, a number read from its own
//   text in the body (jansson would give a double), never through a double.
// - render_events: an event field whose name is already taken in its object
//   (the stream entry's own "id": a warning event's `id` names the capped
//   scope) is written as "data_" + name, as the webhook body keeps fields
//   under "data".
// - Answers are built by hand, in the documented field order, every string
//   escaped, invalid UTF-8 (an id from a path or a Redis field is only
//   bytes) written as U+FFFD.
#include "admin/api.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cstdio>
#include <initializer_list>
#include <limits>
#include <map>
#include <stdexcept>
#include <utility>

#include "json/object_reader.h"
#include "json/writer.h"
#include "policy/limits_json.h"

namespace spendcap::admin {

using json::json_array;
using json::ObjectWriter;

namespace {

std::string quoted(std::string_view name) { return "`" + std::string(name) + "`"; }

constexpr std::int64_t kMaxGraceSeconds = 30 * 86400;
constexpr std::size_t kMaxNameBytes = 256;
constexpr std::size_t kMaxIdempotencyKeyBytes = 128;
constexpr std::int64_t kDefaultEventCount = 100;
constexpr std::int64_t kMaxEventCount = 1000;

// ---------------------------------------------------------------- JSON

Nanos remaining_of(Nanos cap, Nanos spent) { return std::max<Nanos>(saturating_sub(cap, spent), 0); }

bool fail(ApiError &error, std::string message) {
    error = invalid_request(std::move(message));
    return false;
}

// A body's 400, for the caller to return.
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

// ---------------------------------------------------------------- routing

std::string percent_decode(std::string_view text, bool &ok) {
    auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    };
    std::string out;
    out.reserve(text.size());
    ok = true;
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (text[i] != '%') {
            out += text[i];
            continue;
        }
        const int high = i + 2 < text.size() ? hex(text[i + 1]) : -1;
        const int low = i + 2 < text.size() ? hex(text[i + 2]) : -1;
        if (high < 0 || low < 0) {
            ok = false;
            return out;
        }
        out += static_cast<char>(high * 16 + low);
        i += 2;
    }
    return out;
}

std::vector<std::string_view> split(std::string_view text, char separator) {
    std::vector<std::string_view> parts;
    std::size_t start = 0;
    while (true) {
        const std::size_t end = text.find(separator, start);
        parts.push_back(text.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
        if (end == std::string_view::npos) return parts;
        start = end + 1;
    }
}

// What a path allows: each method and the call it makes.
struct PathMethods {
    std::vector<std::pair<const char *, Call>> methods;  // in Allow order
};

// The path's calls by shape: "keys", "keys/self/usage", "keys/:/limits",
// "orgs/:/customers/:/usage" (':' for an id: no id holds one).
const std::map<std::string, PathMethods> &path_table() {
    static const std::map<std::string, PathMethods> table = {
        {"keys", {{{"GET", Call::keys_list}, {"POST", Call::key_create}}}},
        {"keys/self", {{{"GET", Call::self_get}}}},
        {"keys/self/usage", {{{"GET", Call::self_usage}}}},
        {"keys/self/budgets", {{{"GET", Call::self_budgets}}}},
        {"keys/:", {{{"GET", Call::key_get}, {"DELETE", Call::key_revoke}}}},
        {"keys/:/rotate", {{{"POST", Call::key_rotate}}}},
        {"keys/:/limits", {{{"PUT", Call::key_limits_put}, {"DELETE", Call::key_limits_delete}}}},
        {"keys/:/usage", {{{"GET", Call::key_usage}}}},
        {"keys/:/budgets", {{{"GET", Call::key_budgets}}}},
        {"projects/:", {{{"GET", Call::project_get}, {"PUT", Call::project_put}}}},
        {"projects/:/usage", {{{"GET", Call::project_usage}}}},
        {"projects/:/limits", {{{"PUT", Call::project_limits_put}, {"DELETE", Call::project_limits_delete}}}},
        {"orgs/:", {{{"GET", Call::org_get}, {"PUT", Call::org_put}}}},
        {"orgs/:/usage", {{{"GET", Call::org_usage}}}},
        {"orgs/:/limits", {{{"PUT", Call::org_limits_put}, {"DELETE", Call::org_limits_delete}}}},
        {"orgs/:/balance", {{{"GET", Call::balance_get}}}},
        {"orgs/:/topups", {{{"POST", Call::topup}}}},
        {"orgs/:/cleared", {{{"PUT", Call::cleared_put}}}},
        {"orgs/:/events", {{{"GET", Call::events_get}}}},
        {"orgs/:/customers/:/usage", {{{"GET", Call::customer_usage}}}},
        {"orgs/:/customers/:/limits",
         {{{"PUT", Call::customer_limits_put}, {"DELETE", Call::customer_limits_delete}}}},
    };
    return table;
}

Routed route_error(ApiError error) {
    Routed routed;
    routed.error = std::move(error);
    return routed;
}

bool valid_stream_id(std::string_view id) {
    const std::size_t dash = id.find('-');
    if (dash == std::string_view::npos) return false;
    for (std::string_view part : {id.substr(0, dash), id.substr(dash + 1)}) {
        if (part.empty() || part.size() > 20) return false;
        std::uint64_t value = 0;
        for (char c : part) {
            if (c < '0' || c > '9') return false;
            const std::uint64_t digit = static_cast<std::uint64_t>(c - '0');
            if (value > (std::numeric_limits<std::uint64_t>::max() - digit) / 10) return false;
            value = value * 10 + digit;
        }
    }
    return true;
}

// Checks the query against what the call takes.
bool check_query(Route &route, ApiError &error) {
    auto &query = route.query;
    auto refuse_others = [&](std::initializer_list<std::string_view> taken) {
        for (const auto &[name, value] : query) {
            (void)value;
            if (std::find(taken.begin(), taken.end(), name) == taken.end())
                return fail(error, "unknown query parameter " + quoted(name));
        }
        return true;
    };
    switch (route.call) {
    case Call::keys_list: {
        if (!refuse_others({"project", "org"})) return false;
        const bool by_project = query.count("project") != 0, by_org = query.count("org") != 0;
        if (by_project == by_org)
            return fail(error, by_project ? "give one of `project` and `org`, not both"
                                          : "`project` or `org` is required (exactly one)");
        const char *name = by_project ? "project" : "org";
        if (!valid_id(query.at(name))) return fail(error, quoted(name) + " " + kIdRule);
        return true;
    }
    case Call::events_get: {
        if (!refuse_others({"after", "count"})) return false;
        auto after = query.find("after");
        if (after != query.end() && !valid_stream_id(after->second))
            return fail(error, "`after` must be an event id such as \"1700000000000-0\"");
        std::int64_t count = kDefaultEventCount;
        auto given = query.find("count");
        if (given != query.end()) {
            count = 0;
            const std::string &text = given->second;
            bool ok = !text.empty() && text.size() <= 7;
            for (char c : text) {
                if (c < '0' || c > '9') ok = false;
                if (ok) count = count * 10 + (c - '0');
            }
            if (!ok || count < 1 || count > kMaxEventCount)
                return fail(error, "`count` must be an integer from 1 to " + std::to_string(kMaxEventCount));
        }
        query["count"] = std::to_string(count);
        return true;
    }
    default:
        return refuse_others({});
    }
}

bool parse_query(std::string_view query, std::map<std::string, std::string> &out, ApiError &error) {
    if (query.empty()) return true;
    for (std::string_view pair : split(query, '&')) {
        if (pair.empty()) continue;  // "a=1&&b=2"
        const std::size_t equals = pair.find('=');
        bool name_ok = false, value_ok = true;
        std::string name = percent_decode(pair.substr(0, equals), name_ok);
        std::string value;
        if (equals != std::string_view::npos) value = percent_decode(pair.substr(equals + 1), value_ok);
        if (!name_ok || !value_ok) return fail(error, "the query string has a malformed percent escape");
        if (!out.emplace(std::move(name), std::move(value)).second)
            return fail(error, "query parameter " + quoted(pair.substr(0, equals)) + " is given twice");
    }
    return true;
}

// ---------------------------------------------------------------- randomness

// `count` base62 characters, each equally likely: a byte of 248 or more
// (248 = 4 * 62) is drawn again instead of wrapping the alphabet.
std::string random_base62(std::size_t count) {
    static const char kAlphabet[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    std::string out;
    out.reserve(count);
    unsigned char buffer[64];
    while (out.size() < count) {
        if (RAND_bytes(buffer, sizeof buffer) != 1) {
            OPENSSL_cleanse(buffer, sizeof buffer);
            throw std::runtime_error("the system's random source failed");
        }
        for (unsigned char byte : buffer) {
            if (byte >= 248) continue;
            out += kAlphabet[byte % 62];
            if (out.size() == count) break;
        }
    }
    OPENSSL_cleanse(buffer, sizeof buffer);
    return out;
}

// ---------------------------------------------------------------- rendering

std::string key_object(const KeyView &key, const std::string &secret) {
    ObjectWriter object;
    object.string("id", key.id)
        .string_or_null("name", key.name)
        .string("project", key.project)
        .string("org", key.org)
        .raw("limits", limits_json(key.limits))
        .time("expires_at", key.expires_at)
        .boolean("revoked", key.revoked)
        .time("created_at", key.created_at)
        .string("source", key.from_file ? "file" : "api");
    if (!secret.empty()) object.string("secret", secret);
    return object.done();
}

std::string window_object(const WindowUsage &w) {
    const bool lifetime = w.window == Window::lifetime;
    ObjectWriter object;
    object.string("window", window_name(w.window));
    if (lifetime)
        object.null("period").null("reset_at");
    else
        object.string_or_null("period", w.period).reset_time("reset_at", w.reset_at);
    object.amount("spent", w.spent)
        .amount("cap", w.cap)
        .amount("remaining", w.cap ? std::optional<Nanos>(remaining_of(*w.cap, w.spent)) : std::nullopt)
        // No lifetime counter of requests or tokens is kept (SPEC section 6): null, not 0.
        .integer("requests", lifetime ? std::nullopt : std::optional<std::int64_t>(w.requests))
        .integer("requests_cap", lifetime ? std::nullopt : w.requests_cap)
        .integer("tokens", lifetime ? std::nullopt : std::optional<std::int64_t>(w.tokens))
        .integer("tokens_cap", lifetime ? std::nullopt : w.tokens_cap);
    return object.done();
}

std::string rate_object(const RateUsage &rate) {
    if (!rate.cap) return "null";
    return ObjectWriter()
        .integer("used", rate.used)
        .integer("cap", *rate.cap)
        .reset_time("reset_at", rate.reset_at)
        .done();
}

}  // namespace

// ---------------------------------------------------------------- calls

const char *call_name(Call c) {
    switch (c) {
    case Call::key_create: return "key_create";
    case Call::keys_list: return "keys_list";
    case Call::key_get: return "key_get";
    case Call::key_revoke: return "key_revoke";
    case Call::key_rotate: return "key_rotate";
    case Call::key_limits_put: return "key_limits_put";
    case Call::key_limits_delete: return "key_limits_delete";
    case Call::key_usage: return "key_usage";
    case Call::key_budgets: return "key_budgets";
    case Call::self_get: return "self_get";
    case Call::self_usage: return "self_usage";
    case Call::self_budgets: return "self_budgets";
    case Call::project_put: return "project_put";
    case Call::project_get: return "project_get";
    case Call::project_usage: return "project_usage";
    case Call::project_limits_put: return "project_limits_put";
    case Call::project_limits_delete: return "project_limits_delete";
    case Call::org_put: return "org_put";
    case Call::org_get: return "org_get";
    case Call::org_usage: return "org_usage";
    case Call::org_limits_put: return "org_limits_put";
    case Call::org_limits_delete: return "org_limits_delete";
    case Call::customer_usage: return "customer_usage";
    case Call::customer_limits_put: return "customer_limits_put";
    case Call::customer_limits_delete: return "customer_limits_delete";
    case Call::balance_get: return "balance_get";
    case Call::topup: return "topup";
    case Call::cleared_put: return "cleared_put";
    case Call::events_get: return "events_get";
    }
    return "unknown";
}

bool is_self_call(Call c) { return c == Call::self_get || c == Call::self_usage || c == Call::self_budgets; }

bool is_change(Call c) {
    switch (c) {
    case Call::key_create:
    case Call::key_revoke:
    case Call::key_rotate:
    case Call::key_limits_put:
    case Call::key_limits_delete:
    case Call::project_put:
    case Call::project_limits_put:
    case Call::project_limits_delete:
    case Call::org_put:
    case Call::org_limits_put:
    case Call::org_limits_delete:
    case Call::customer_limits_put:
    case Call::customer_limits_delete:
    case Call::topup:
    case Call::cleared_put: return true;
    default: return false;
    }
}

// ---------------------------------------------------------------- errors

ApiError invalid_request(std::string message) { return ApiError{400, "invalid_request", std::move(message), ""}; }
ApiError unauthorized() { return ApiError{401, "unauthorized", "missing or wrong admin token", ""}; }
ApiError not_found(std::string message) { return ApiError{404, "not_found", std::move(message), ""}; }
ApiError conflict(std::string message) { return ApiError{409, "conflict", std::move(message), ""}; }
ApiError unavailable() { return ApiError{503, "unavailable", "redis is unavailable or too slow", ""}; }

std::string render_error(const ApiError &e) {
    const std::string inner = ObjectWriter().string("code", e.code).string("message", e.message).done();
    return ObjectWriter().raw("error", inner).done();
}

// ---------------------------------------------------------------- route

Routed route(std::string_view method, std::string_view path, std::string_view query) {
    std::string_view trimmed = path;
    if (!trimmed.empty() && trimmed.front() == '/') trimmed.remove_prefix(1);
    if (!trimmed.empty() && trimmed.back() == '/') trimmed.remove_suffix(1);
    const std::string shown = "/" + std::string(trimmed);
    const std::vector<std::string_view> segments = split(trimmed, '/');

    // The shape of the path: ids become ':' ("keys/self" stays itself).
    Route found;
    std::string shape;
    std::vector<std::string_view> ids;
    for (std::size_t i = 0; i < segments.size(); ++i) {
        const bool id_position = i == 1 || (i == 3 && segments[0] == "orgs" && segments[2] == "customers");
        const bool self = i == 1 && segments[0] == "keys" && segments[1] == "self";
        if (i) shape += '/';
        if (id_position && !self) {
            shape += ':';
            ids.push_back(segments[i]);
        } else {
            shape += segments[i];
        }
    }
    const auto &table = path_table();
    auto entry = table.find(shape);
    if (entry == table.end()) return route_error(not_found("no API call at " + quoted(shown)));
    for (std::string_view id : ids)
        if (!valid_id(id)) return route_error(not_found("no such resource: " + quoted(id) + " is not a valid id"));

    const PathMethods &allowed = entry->second;
    // HEAD is GET without the body (NGINX sends the headers only).
    const std::string_view as = method == "HEAD" ? std::string_view("GET") : method;
    auto call = std::find_if(allowed.methods.begin(), allowed.methods.end(),
                             [&](const auto &m) { return as == m.first; });
    if (call == allowed.methods.end()) {
        ApiError error{405, "method_not_allowed", "", ""};
        for (const auto &m : allowed.methods) error.allow += (error.allow.empty() ? "" : ", ") + std::string(m.first);
        error.message = "method " + std::string(method) + " is not allowed on " + quoted(shown) + " (allowed: " +
                        error.allow + ")";
        return route_error(std::move(error));
    }
    found.call = call->second;
    if (!ids.empty()) found.id = std::string(ids[0]);
    if (ids.size() > 1) found.customer = std::string(ids[1]);

    ApiError error;
    if (!parse_query(query, found.query, error) || !check_query(found, error)) return route_error(std::move(error));
    Routed routed;
    routed.route = std::move(found);
    return routed;
}

bool token_matches(std::string_view expected, std::string_view presented) {
    // Every byte of the longer one is read whatever the content; only the
    // lengths decide how many.
    const std::size_t longest = std::max(expected.size(), presented.size());
    unsigned difference = expected.size() != presented.size() ? 1u : 0u;
    for (std::size_t i = 0; i < longest; ++i) {
        const unsigned char a = i < expected.size() ? static_cast<unsigned char>(expected[i]) : 0;
        const unsigned char b = i < presented.size() ? static_cast<unsigned char>(presented[i]) : 0;
        difference |= static_cast<unsigned>(a ^ b);
    }
    // An empty token would let an empty bearer in; config load refuses one, and so does this.
    return difference == 0 && !expected.empty();
}

// ---------------------------------------------------------------- bodies

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
    if (!reader.only({"plan", "created_at", "prepaid", "low_balance_usd", "limits"}) ||
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

// ---------------------------------------------------------------- answers

std::string new_secret() { return "sk-sc-" + random_base62(43); }
std::string new_key_id() { return "key_" + random_base62(16); }

std::string render_key(const KeyView &key, const std::string &secret) { return key_object(key, secret); }

std::string render_keys(const std::vector<KeyView> &keys) {
    std::vector<std::string> objects;
    objects.reserve(keys.size());
    for (const KeyView &key : keys) objects.push_back(key_object(key, ""));
    return ObjectWriter().raw("keys", json_array(objects)).done();
}

std::string render_project(const ProjectView &project) {
    return ObjectWriter()
        .string("id", project.id)
        .string("org", project.org)
        .raw("limits", limits_json(project.limits))
        .string("source", project.from_file ? "file" : "api")
        .done();
}

std::string render_org(const OrgView &org) {
    return ObjectWriter()
        .string("id", org.id)
        .string_or_null("plan", org.plan)
        .time("created_at", org.created_at)
        .boolean("prepaid", org.prepaid)
        .amount("low_balance", org.low_balance_usd)
        .raw("limits", limits_json(org.limits))
        .amount("cleared", org.cleared)
        .string("source", org.from_file ? "file" : "api")
        .done();
}

std::string render_usage(const UsageView &usage) {
    std::vector<std::string> windows;
    windows.reserve(usage.windows.size());
    for (const WindowUsage &w : usage.windows) windows.push_back(window_object(w));
    return ObjectWriter()
        .string("scope", scope_name(usage.scope))
        .string("id", usage.id)
        .string("org", usage.org)
        .raw("windows", json_array(windows))
        .raw("rates", ObjectWriter().raw("rpm", rate_object(usage.rpm)).raw("tpm", rate_object(usage.tpm)).done())
        .done();
}

std::string render_budgets(const std::string &key_id, const std::vector<Layer> &layers) {
    std::size_t binding = 0;  // the first with the least remaining
    for (std::size_t i = 1; i < layers.size(); ++i)
        if (layers[i].remaining < layers[binding].remaining) binding = i;
    std::vector<std::string> objects;
    objects.reserve(layers.size());
    for (std::size_t i = 0; i < layers.size(); ++i) {
        const Layer &layer = layers[i];
        objects.push_back(ObjectWriter()
                              .string("scope", scope_name(layer.scope))
                              .string("id", layer.id)
                              .string("window", layer.window)
                              .amount("cap", layer.cap)
                              .amount("spent", layer.spent)
                              .amount("remaining", layer.remaining)
                              .reset_time("reset_at", layer.reset_at)
                              .boolean("binding", i == binding)
                              .done());
    }
    return ObjectWriter().string("key", key_id).raw("budgets", json_array(objects)).done();
}

std::string render_balance(const BalanceView &b) {
    return ObjectWriter()
        .string("org", b.org)
        .amount("balance", b.balance)
        .amount("reserved", b.reserved)
        .amount("available", saturating_sub(b.balance, b.reserved))
        .amount("low_balance", b.low_balance)
        .done();
}

std::string render_topup(const std::string &org, const Topup &topup, Nanos balance_after, bool applied) {
    return ObjectWriter()
        .string("org", org)
        .string("idempotency_key", topup.idempotency_key)
        .amount("amount", topup.amount)
        .amount("balance", balance_after)
        .boolean("applied", applied)
        .done();
}

std::string render_events(const std::vector<Event> &events, const std::string &after) {
    std::vector<std::string> objects;
    objects.reserve(events.size());
    for (const Event &event : events) {
        ObjectWriter object;
        object.string("id", event.id);
        std::vector<std::string> taken{"id"};
        for (const auto &[name, value] : event.fields) {
            std::string written = name;
            while (std::find(taken.begin(), taken.end(), written) != taken.end()) written = "data_" + written;
            object.string(written, value);
            taken.push_back(std::move(written));
        }
        objects.push_back(object.done());
    }
    ObjectWriter answer;
    answer.raw("events", json_array(objects));
    if (!events.empty())
        answer.string("next", events.back().id);
    else
        answer.string_or_null("next", after);
    return answer.done();
}

}  // namespace spendcap::admin