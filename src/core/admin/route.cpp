// Which call a management API request makes: the path matched against the
// table of calls, the method against the path's, the query decoded and checked.
#include "admin/route.h"

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <utility>
#include <vector>

#include "admin/daily.h"  // kMaxDailyDays, kDefaultDailyDays
#include "policy/policy.h"

namespace spendcap::admin {

namespace {

// A query's count: 1 to `digits` decimal digits, from 1 to `max`.
bool bounded_count(const std::string &text, std::size_t digits, std::int64_t max, std::int64_t &out) {
    if (text.empty() || text.size() > digits) return false;
    std::int64_t value = 0;
    for (char c : text) {
        if (c < '0' || c > '9') return false;
        value = value * 10 + (c - '0');
    }
    if (value < 1 || value > max) return false;
    out = value;
    return true;
}

constexpr std::int64_t kDefaultEventCount = 100;
constexpr std::int64_t kMaxEventCount = 1000;

std::string quoted(std::string_view name) { return "`" + std::string(name) + "`"; }

bool fail(ApiError &error, std::string message) {
    error = invalid_request(std::move(message));
    return false;
}

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
        {"keys/self/usage/daily", {{{"GET", Call::self_usage_daily}}}},
        {"keys/self/check", {{{"POST", Call::self_check}}}},
        {"keys/:/check", {{{"POST", Call::key_check}}}},
        {"keys/:", {{{"GET", Call::key_get}, {"DELETE", Call::key_revoke}}}},
        {"keys/:/rotate", {{{"POST", Call::key_rotate}}}},
        {"keys/:/limits", {{{"PUT", Call::key_limits_put}, {"DELETE", Call::key_limits_delete}}}},
        {"keys/:/usage", {{{"GET", Call::key_usage}}}},
        {"keys/:/usage/daily", {{{"GET", Call::key_usage_daily}}}},
        {"keys/:/budgets", {{{"GET", Call::key_budgets}}}},
        {"projects", {{{"GET", Call::projects_list}}}},
        {"projects/:", {{{"GET", Call::project_get}, {"PUT", Call::project_put}}}},
        {"projects/:/usage", {{{"GET", Call::project_usage}}}},
        {"projects/:/usage/daily", {{{"GET", Call::project_usage_daily}}}},
        {"projects/:/limits", {{{"PUT", Call::project_limits_put}, {"DELETE", Call::project_limits_delete}}}},
        {"orgs", {{{"GET", Call::orgs_list}}}},
        {"orgs/:", {{{"GET", Call::org_get}, {"PUT", Call::org_put}}}},
        {"orgs/:/usage", {{{"GET", Call::org_usage}}}},
        {"orgs/:/usage/daily", {{{"GET", Call::org_usage_daily}}}},
        {"orgs/:/limits", {{{"PUT", Call::org_limits_put}, {"DELETE", Call::org_limits_delete}}}},
        {"orgs/:/balance", {{{"GET", Call::balance_get}}}},
        {"orgs/:/topups", {{{"POST", Call::topup}}}},
        {"orgs/:/cleared", {{{"PUT", Call::cleared_put}}}},
        {"orgs/:/events", {{{"GET", Call::events_get}}}},
        {"orgs/:/customers/:/usage", {{{"GET", Call::customer_usage}}}},
        {"orgs/:/customers/:/usage/daily", {{{"GET", Call::customer_usage_daily}}}},
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
        if (!refuse_others({"after", "count", "latest"})) return false;
        auto latest = query.find("latest");
        if (latest != query.end()) {
            // The newest N (a page's "latest events"), still oldest first.
            if (query.count("after") || query.count("count"))
                return fail(error, "`latest` is given alone (not with `after` or `count`)");
            std::int64_t n = 0;
            if (!bounded_count(latest->second, 7, kMaxEventCount, n))
                return fail(error, "`latest` must be an integer from 1 to " + std::to_string(kMaxEventCount));
            latest->second = std::to_string(n);
            return true;
        }
        auto after = query.find("after");
        if (after != query.end() && !valid_stream_id(after->second))
            return fail(error, "`after` must be an event id such as \"1700000000000-0\"");
        std::int64_t count = kDefaultEventCount;
        auto given = query.find("count");
        if (given != query.end() && !bounded_count(given->second, 7, kMaxEventCount, count))
            return fail(error, "`count` must be an integer from 1 to " + std::to_string(kMaxEventCount));
        query["count"] = std::to_string(count);
        return true;
    }
    case Call::projects_list:
        if (!refuse_others({"org"})) return false;
        if (query.count("org") == 0) return fail(error, "`org` is required");
        if (!valid_id(query.at("org"))) return fail(error, "`org` " + std::string(kIdRule));
        return true;
    case Call::key_usage_daily:
    case Call::self_usage_daily:
    case Call::project_usage_daily:
    case Call::org_usage_daily:
    case Call::customer_usage_daily: {
        if (!refuse_others({"days", "format"})) return false;
        auto format = query.find("format");
        if (format != query.end() && format->second != "csv")
            return fail(error, "`format` must be \"csv\" (or left out for JSON)");
        std::int64_t days = kDefaultDailyDays;
        auto given = query.find("days");
        if (given != query.end() && !bounded_count(given->second, 2, kMaxDailyDays, days))
            return fail(error, "`days` must be an integer from 1 to " + std::to_string(kMaxDailyDays));
        query["days"] = std::to_string(days);
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

}  // namespace

// Choices the header leaves open:
// - Paths are matched as given (NGINX has already percent-decoded the URI);
//   one leading and one trailing "/" are optional. "/keys/self..." never
//   names a key whose id is "self": /keys/self/rotate and /keys/self/limits
//   are 404, and a key cannot be created with the id "self".
// - Queries are percent-decoded ('+' stays a '+': no id may hold a space, so
//   nothing needs it as one). A parameter the call does not take, one given
//   twice or a malformed escape is 400, for every call. keys_list takes
//   exactly one of project= and org=; events_get takes after= (a stream id
//   "MS-SEQ") and count= (1..1000), and its Route then always holds "count",
//   normalized ("100" when not given), or latest= (1..1000) alone. projects_list needs org=. The
//   .../usage/daily calls take days= (1..35; their Route always holds
//   "days", "30" when not given) and format= (only "csv").
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

}  // namespace spendcap::admin
