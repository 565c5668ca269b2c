// The management API's logic: routes, body validation (naming the field, as
// the policy file does) and the exact JSON of every answer.
#include "admin/api.h"
#include "admin/body.h"
#include "admin/daily.h"
#include "admin/render.h"
#include "admin/route.h"
#include "admin/secret.h"
#include "policy/limits_json.h"

#include <gtest/gtest.h>

#include <limits>
#include <set>

namespace spendcap::admin {
namespace {

constexpr std::int64_t k2026_12_01 = 1'796'083'200;
constexpr std::int64_t k2026_11_22 = 1'795'305'600;
constexpr std::int64_t k2027_01_01 = 1'798'761'600;

// ------------------------------------------------------------------ routes

Route routed_ok(std::string_view method, std::string_view path, std::string_view query = "") {
    Routed routed = route(method, path, query);
    EXPECT_TRUE(routed.route) << method << " " << path << "?" << query << ": " << routed.error.message;
    return routed.route.value_or(Route{});
}

ApiError routed_error(std::string_view method, std::string_view path, std::string_view query = "") {
    Routed routed = route(method, path, query);
    EXPECT_FALSE(routed.route) << method << " " << path << "?" << query << " was routed";
    return routed.error;
}

struct RouteCase {
    const char *method, *path, *query;
    Call call;
    const char *id, *customer;
};

TEST(AdminRoute, EveryCallByMethodAndPath) {
    const RouteCase cases[] = {
        {"POST", "/keys", "", Call::key_create, "", ""},
        {"GET", "/keys", "project=acme-prod", Call::keys_list, "", ""},
        {"GET", "/keys", "org=acme", Call::keys_list, "", ""},
        {"GET", "/keys/key_1", "", Call::key_get, "key_1", ""},
        {"DELETE", "/keys/key_1", "", Call::key_revoke, "key_1", ""},
        {"POST", "/keys/key_1/rotate", "", Call::key_rotate, "key_1", ""},
        {"PUT", "/keys/key_1/limits", "", Call::key_limits_put, "key_1", ""},
        {"DELETE", "/keys/key_1/limits", "", Call::key_limits_delete, "key_1", ""},
        {"GET", "/keys/key_1/usage", "", Call::key_usage, "key_1", ""},
        {"GET", "/keys/key_1/budgets", "", Call::key_budgets, "key_1", ""},
        {"GET", "/keys/self", "", Call::self_get, "", ""},
        {"GET", "/keys/self/usage", "", Call::self_usage, "", ""},
        {"GET", "/keys/self/budgets", "", Call::self_budgets, "", ""},
        {"PUT", "/projects/acme-prod", "", Call::project_put, "acme-prod", ""},
        {"GET", "/projects/acme-prod", "", Call::project_get, "acme-prod", ""},
        {"GET", "/projects/acme-prod/usage", "", Call::project_usage, "acme-prod", ""},
        {"PUT", "/projects/acme-prod/limits", "", Call::project_limits_put, "acme-prod", ""},
        {"DELETE", "/projects/acme-prod/limits", "", Call::project_limits_delete, "acme-prod", ""},
        {"PUT", "/orgs/acme", "", Call::org_put, "acme", ""},
        {"GET", "/orgs/acme", "", Call::org_get, "acme", ""},
        {"GET", "/orgs/acme/usage", "", Call::org_usage, "acme", ""},
        {"PUT", "/orgs/acme/limits", "", Call::org_limits_put, "acme", ""},
        {"DELETE", "/orgs/acme/limits", "", Call::org_limits_delete, "acme", ""},
        {"GET", "/orgs/acme/customers/cust_42/usage", "", Call::customer_usage, "acme", "cust_42"},
        {"PUT", "/orgs/acme/customers/cust_42/limits", "", Call::customer_limits_put, "acme", "cust_42"},
        {"DELETE", "/orgs/acme/customers/cust_42/limits", "", Call::customer_limits_delete, "acme", "cust_42"},
        {"GET", "/orgs/acme/balance", "", Call::balance_get, "acme", ""},
        {"POST", "/orgs/acme/topups", "", Call::topup, "acme", ""},
        {"PUT", "/orgs/acme/cleared", "", Call::cleared_put, "acme", ""},
        {"GET", "/orgs/acme/events", "", Call::events_get, "acme", ""},
        {"GET", "/orgs", "", Call::orgs_list, "", ""},
        {"GET", "/projects", "org=acme", Call::projects_list, "", ""},
        {"GET", "/keys/key_1/usage/daily", "", Call::key_usage_daily, "key_1", ""},
        {"GET", "/keys/self/usage/daily", "days=7", Call::self_usage_daily, "", ""},
        {"GET", "/projects/acme-prod/usage/daily", "format=csv", Call::project_usage_daily, "acme-prod", ""},
        {"GET", "/orgs/acme/usage/daily/", "", Call::org_usage_daily, "acme", ""},
        {"GET", "/orgs/acme/customers/cust_42/usage/daily", "", Call::customer_usage_daily, "acme", "cust_42"},
    };
    std::set<Call> seen;
    for (const RouteCase &c : cases) {
        SCOPED_TRACE(std::string(c.method) + " " + c.path);
        const Route r = routed_ok(c.method, c.path, c.query);
        EXPECT_EQ(r.call, c.call) << call_name(r.call);
        EXPECT_EQ(r.id, c.id);
        EXPECT_EQ(r.customer, c.customer);
        seen.insert(c.call);
    }
    EXPECT_EQ(seen.size(), static_cast<std::size_t>(Call::customer_usage_daily) + 1)
        << "a call of the enum is not covered";
}

TEST(AdminRoute, LeadingAndTrailingSlashesAreOptional) {
    for (const char *path : {"/keys/key_1/limits", "keys/key_1/limits", "/keys/key_1/limits/", "keys/key_1/limits/"}) {
        const Route r = routed_ok("PUT", path);
        EXPECT_EQ(r.call, Call::key_limits_put) << path;
        EXPECT_EQ(r.id, "key_1") << path;
    }
    EXPECT_EQ(routed_ok("POST", "keys/").call, Call::key_create);
    EXPECT_EQ(routed_ok("GET", "/keys/self/").call, Call::self_get);
}

TEST(AdminRoute, SelfNeverNamesAKey) {
    const Route self = routed_ok("GET", "/keys/self");
    EXPECT_EQ(self.call, Call::self_get);
    EXPECT_EQ(self.id, "");
    EXPECT_TRUE(is_self_call(self.call));

    // The key's own secret reads; it changes nothing.
    ApiError e = routed_error("DELETE", "/keys/self");
    EXPECT_EQ(e.status, 405);
    EXPECT_EQ(e.allow, "GET");
    EXPECT_EQ(routed_error("POST", "/keys/self/rotate").status, 404);
    EXPECT_EQ(routed_error("PUT", "/keys/self/limits").status, 404);
    EXPECT_EQ(routed_error("POST", "/keys/self/usage").allow, "GET");
}

TEST(AdminRoute, UnknownPathsAre404) {
    for (const char *path : {"", "/", "/foo", "/keys/key_1/nothing", "/keys/key_1/limits/extra", "/project",
                             "/org", "/orgs/acme/customers", "/orgs/acme/customers/c", "/orgs/acme/customers/c/x",
                             "/keys//limits", "//keys", "/keys/key_1//", "/Keys", "/orgs/acme/topup",
                             "/orgs/acme/usage/weekly", "/keys/key_1/usage/daily/x", "/keys/self/daily",
                             "/orgs/acme/balance/daily", "/projects/p/usage/Daily"}) {
        const ApiError e = routed_error("GET", path);
        EXPECT_EQ(e.status, 404) << path;
        EXPECT_EQ(e.code, "not_found") << path;
        EXPECT_EQ(e.allow, "") << path;
    }
    EXPECT_EQ(routed_error("GET", "/foo").message, "no API call at `/foo`");
}

TEST(AdminRoute, IdsValidIdRefusesAre404) {
    const std::string long_id(129, 'k');
    const std::vector<std::string> bad_paths = {"/keys/a:b", "/keys/a{b}", "/projects/a b", "/orgs/a\tb",
                                                "/orgs/acme/customers/a}/usage", "/keys/" + long_id,
                                                "/orgs/acme/customers/" + long_id + "/limits",
                                                std::string("/keys/a\x01")};
    for (const std::string &path : bad_paths) {
        const ApiError e = routed_error("GET", path);
        EXPECT_EQ(e.status, 404) << path;
        EXPECT_EQ(e.code, "not_found");
    }
    // '%' is no id's (NGINX decoded the path already): a literal "%20" is a bad id.
    EXPECT_EQ(routed_error("GET", "/projects/a%20b").status, 404);
    EXPECT_EQ(routed_error("GET", "/keys/a:b").message, "no such resource: `a:b` is not a valid id");
    EXPECT_EQ(routed_ok("GET", "/keys/" + std::string(128, 'k')).id, std::string(128, 'k'));
    // A bad id is 404 whatever the method.
    EXPECT_EQ(routed_error("PATCH", "/keys/a:b").status, 404);
}

TEST(AdminRoute, OtherMethodsAre405WithAllow) {
    struct Case {
        const char *method, *path, *allow;
    };
    const Case cases[] = {
        {"DELETE", "/keys", "GET, POST"},
        {"PUT", "/keys/key_1", "GET, DELETE"},
        {"GET", "/keys/key_1/rotate", "POST"},
        {"GET", "/keys/key_1/limits", "PUT, DELETE"},
        {"DELETE", "/keys/key_1/usage", "GET"},
        {"POST", "/keys/key_1/budgets", "GET"},
        {"POST", "/projects/p", "GET, PUT"},
        {"DELETE", "/projects/p/usage", "GET"},
        {"POST", "/projects/p/limits", "PUT, DELETE"},
        {"DELETE", "/orgs/acme", "GET, PUT"},
        {"PUT", "/orgs/acme/usage", "GET"},
        {"GET", "/orgs/acme/limits", "PUT, DELETE"},
        {"POST", "/orgs/acme/balance", "GET"},
        {"GET", "/orgs/acme/topups", "POST"},
        {"GET", "/orgs/acme/cleared", "PUT"},
        {"POST", "/orgs/acme/events", "GET"},
        {"PUT", "/orgs/acme/customers/c/usage", "GET"},
        {"GET", "/orgs/acme/customers/c/limits", "PUT, DELETE"},
        {"HEAD", "/keys/key_1/rotate", "POST"},
        {"get", "/keys/key_1", "GET, DELETE"},
    };
    for (const Case &c : cases) {
        const ApiError e = routed_error(c.method, c.path);
        EXPECT_EQ(e.status, 405) << c.method << " " << c.path;
        EXPECT_EQ(e.code, "method_not_allowed");
        EXPECT_EQ(e.allow, c.allow) << c.method << " " << c.path;
    }
    EXPECT_EQ(routed_error("PUT", "/keys/key_1").message,
              "method PUT is not allowed on `/keys/key_1` (allowed: GET, DELETE)");
    // HEAD is GET without the body: the same call, and the same authorization.
    EXPECT_EQ(routed_ok("HEAD", "/keys/key_1/usage").call, Call::key_usage);
    EXPECT_EQ(routed_ok("HEAD", "/keys/self").call, Call::self_get);
    EXPECT_TRUE(is_self_call(routed_ok("HEAD", "/keys/self/budgets").call));
}

TEST(AdminRoute, KeysListNeedsExactlyOneOfProjectAndOrg) {
    Route r = routed_ok("GET", "/keys", "project=acme-prod");
    EXPECT_EQ(r.query, (std::map<std::string, std::string>{{"project", "acme-prod"}}));
    r = routed_ok("GET", "/keys/", "org=acme");
    EXPECT_EQ(r.query.at("org"), "acme");

    ApiError e = routed_error("GET", "/keys");
    EXPECT_EQ(e.status, 400);
    EXPECT_EQ(e.code, "invalid_request");
    EXPECT_EQ(e.message, "`project` or `org` is required (exactly one)");
    e = routed_error("GET", "/keys", "project=p&org=o");
    EXPECT_EQ(e.message, "give one of `project` and `org`, not both");
    e = routed_error("GET", "/keys", "project=a:b");
    EXPECT_EQ(e.message, std::string("`project` ") + kIdRule);
    e = routed_error("GET", "/keys", "org=");
    EXPECT_EQ(e.message, std::string("`org` ") + kIdRule);
    e = routed_error("GET", "/keys", "org=acme&limit=5");
    EXPECT_EQ(e.status, 400);
    EXPECT_EQ(e.message, "unknown query parameter `limit`");
}

TEST(AdminRoute, QueriesArePercentDecoded) {
    EXPECT_EQ(routed_ok("GET", "/keys", "project=acme%2Dprod").query.at("project"), "acme-prod");
    EXPECT_EQ(routed_ok("GET", "/keys", "%6Frg=%41cme").query.at("org"), "Acme");
    EXPECT_EQ(routed_error("GET", "/keys", "org=%c3%a9t%C3%A9").status, 400);  // decoded, then not an id
    // '+' is not a space: no id may hold one, so it stays itself.
    EXPECT_EQ(routed_ok("GET", "/keys", "org=a+b").query.at("org"), "a+b");
    // Empty pieces are nothing.
    EXPECT_EQ(routed_ok("GET", "/keys", "&org=acme&").query.size(), 1u);
    // A space decoded is a bad id.
    EXPECT_EQ(routed_error("GET", "/keys", "org=a%20b").status, 400);

    for (const char *query : {"org=%zz", "org=%4", "org=acme%", "%=x"}) {
        const ApiError e = routed_error("GET", "/keys", query);
        EXPECT_EQ(e.status, 400) << query;
        EXPECT_EQ(e.message, "the query string has a malformed percent escape") << query;
    }
    EXPECT_EQ(routed_error("GET", "/keys", "org=a&org=b").message, "query parameter `org` is given twice");
    EXPECT_EQ(routed_error("GET", "/keys", "org=a&%6Frg=b").status, 400);
}

TEST(AdminRoute, EventsTakeAfterAndCount) {
    Route r = routed_ok("GET", "/orgs/acme/events");
    EXPECT_EQ(r.query, (std::map<std::string, std::string>{{"count", "100"}}));
    r = routed_ok("GET", "/orgs/acme/events", "after=1700000000000-0&count=1000");
    EXPECT_EQ(r.query.at("after"), "1700000000000-0");
    EXPECT_EQ(r.query.at("count"), "1000");
    EXPECT_EQ(routed_ok("GET", "/orgs/acme/events", "count=007").query.at("count"), "7");
    EXPECT_EQ(routed_ok("GET", "/orgs/acme/events", "after=1700000000000%2D12").query.at("after"),
              "1700000000000-12");
    EXPECT_EQ(routed_ok("GET", "/orgs/acme/events", "after=18446744073709551615-18446744073709551615")
                  .query.at("after"),
              "18446744073709551615-18446744073709551615");

    for (const char *query : {"after=", "after=1700000000000", "after=-0", "after=1-", "after=1-2-3", "after=a-1",
                              "after=1 -1", "after=18446744073709551616-0"}) {
        const ApiError e = routed_error("GET", "/orgs/acme/events", query);
        EXPECT_EQ(e.status, 400) << query;
        EXPECT_EQ(e.message, "`after` must be an event id such as \"1700000000000-0\"") << query;
    }
    for (const char *query : {"count=0", "count=1001", "count=", "count=abc", "count=-1", "count=1.5",
                              "count=99999999999999999999"}) {
        const ApiError e = routed_error("GET", "/orgs/acme/events", query);
        EXPECT_EQ(e.status, 400) << query;
        EXPECT_EQ(e.message, "`count` must be an integer from 1 to 1000") << query;
    }
    EXPECT_EQ(routed_error("GET", "/orgs/acme/events", "before=1-0").message, "unknown query parameter `before`");
}

TEST(AdminRoute, EventsTakeLatestAlone) {
    EXPECT_EQ(routed_ok("GET", "/orgs/acme/events", "latest=050").query,
              (std::map<std::string, std::string>{{"latest", "50"}}));
    EXPECT_EQ(routed_ok("GET", "/orgs/acme/events", "latest=1000").query.at("latest"), "1000");
    for (const char *query : {"latest=0", "latest=1001", "latest=", "latest=x", "latest=-3"})
        EXPECT_EQ(routed_error("GET", "/orgs/acme/events", query).message,
                  "`latest` must be an integer from 1 to 1000")
            << query;
    for (const char *query : {"latest=5&count=5", "latest=5&after=1-0"})
        EXPECT_EQ(routed_error("GET", "/orgs/acme/events", query).message,
                  "`latest` is given alone (not with `after` or `count`)")
            << query;
}

TEST(AdminRoute, ListsAndDailyUsageAreGetOnly) {
    for (const char *path : {"/orgs", "/projects", "/keys/k/usage/daily", "/keys/self/usage/daily",
                             "/projects/p/usage/daily", "/orgs/o/usage/daily", "/orgs/o/customers/c/usage/daily"}) {
        const ApiError e = routed_error("POST", path, "org=o");
        EXPECT_EQ(e.status, 405) << path;
        EXPECT_EQ(e.allow, "GET") << path;
    }
    EXPECT_EQ(routed_ok("HEAD", "/orgs").call, Call::orgs_list);
    EXPECT_TRUE(routed_ok("GET", "/orgs").query.empty());
    EXPECT_EQ(routed_error("GET", "/orgs", "org=acme").message, "unknown query parameter `org`");
}

TEST(AdminRoute, ProjectsListNeedsOneValidOrg) {
    EXPECT_EQ(routed_ok("GET", "/projects", "org=acme").query.at("org"), "acme");
    EXPECT_EQ(routed_ok("GET", "/projects", "org=a%2Bb").query.at("org"), "a+b");
    ApiError e = routed_error("GET", "/projects");
    EXPECT_EQ(e.status, 400);
    EXPECT_EQ(e.code, "invalid_request");
    EXPECT_EQ(e.message, "`org` is required");
    EXPECT_EQ(routed_error("GET", "/projects", "org=").status, 400);
    EXPECT_EQ(routed_error("GET", "/projects", "org=a%2Fb").status, 400);
    EXPECT_EQ(routed_error("GET", "/projects", "project=p").message, "unknown query parameter `project`");
    EXPECT_EQ(routed_error("GET", "/projects", "org=a&org=b").status, 400);
}

TEST(AdminRoute, DailyUsageTakesDaysAndFormat) {
    // days: 1..35, "30" when not given, always in the Route
    EXPECT_EQ(routed_ok("GET", "/orgs/acme/usage/daily").query.at("days"), "30");
    EXPECT_EQ(routed_ok("GET", "/orgs/acme/usage/daily", "days=1").query.at("days"), "1");
    EXPECT_EQ(routed_ok("GET", "/orgs/acme/usage/daily", "days=35").query.at("days"), "35");
    EXPECT_EQ(routed_ok("GET", "/orgs/acme/usage/daily", "days=07").query.at("days"), "7");
    EXPECT_EQ(routed_ok("GET", "/orgs/acme/usage/daily", "days=%33%35").query.at("days"), "35");
    for (const char *bad : {"days=0", "days=36", "days=x", "days=", "days", "days=100", "days=-1", "days=+5",
                            "days=1.5", "days=%20"}) {
        const ApiError e = routed_error("GET", "/keys/k/usage/daily", bad);
        EXPECT_EQ(e.status, 400) << bad;
        EXPECT_EQ(e.code, "invalid_request") << bad;
        EXPECT_EQ(e.message, "`days` must be an integer from 1 to 35") << bad;
    }
    // format: csv, or left out for JSON
    const Route csv = routed_ok("GET", "/orgs/acme/customers/c/usage/daily", "format=csv&days=2");
    EXPECT_EQ(csv.query.at("format"), "csv");
    EXPECT_EQ(csv.query.at("days"), "2");
    EXPECT_EQ(routed_ok("GET", "/orgs/acme/usage/daily").query.count("format"), 0u);
    for (const char *bad : {"format=json", "format=CSV", "format=", "format=tsv"}) {
        const ApiError e = routed_error("GET", "/keys/self/usage/daily", bad);
        EXPECT_EQ(e.status, 400) << bad;
        EXPECT_NE(e.message.find("`format`"), std::string::npos) << e.message;
    }
    EXPECT_EQ(routed_error("GET", "/projects/p/usage/daily", "days=3&days=4").status, 400);
    EXPECT_EQ(routed_error("GET", "/projects/p/usage/daily", "since=2026-01-01").message,
              "unknown query parameter `since`");
}

TEST(AdminRoute, OtherCallsTakeNoQuery) {
    EXPECT_TRUE(routed_ok("GET", "/keys/key_1", "").query.empty());
    const ApiError e = routed_error("GET", "/keys/key_1", "verbose=1");
    EXPECT_EQ(e.status, 400);
    EXPECT_EQ(e.message, "unknown query parameter `verbose`");
    EXPECT_EQ(routed_error("POST", "/orgs/acme/topups", "x").message, "unknown query parameter `x`");
    EXPECT_EQ(routed_error("GET", "/keys/self", "a=b").status, 400);
}

TEST(AdminCalls, NamesSelfAndChanges) {
    EXPECT_STREQ(call_name(Call::key_create), "key_create");
    EXPECT_STREQ(call_name(Call::customer_limits_delete), "customer_limits_delete");
    EXPECT_STREQ(call_name(Call::events_get), "events_get");
    std::set<std::string> names;
    int self_calls = 0, changes = 0;
    for (int c = 0; c <= static_cast<int>(Call::events_get); ++c) {
        const Call call = static_cast<Call>(c);
        names.insert(call_name(call));
        self_calls += is_self_call(call);
        changes += is_change(call);
    }
    EXPECT_EQ(names.size(), static_cast<std::size_t>(Call::events_get) + 1);
    EXPECT_EQ(self_calls, 3);
    EXPECT_TRUE(is_self_call(Call::self_usage));
    EXPECT_FALSE(is_self_call(Call::key_get));

    for (Call c : {Call::key_create, Call::key_revoke, Call::key_rotate, Call::key_limits_put,
                   Call::key_limits_delete, Call::project_put, Call::project_limits_put,
                   Call::project_limits_delete, Call::org_put, Call::org_limits_put, Call::org_limits_delete,
                   Call::customer_limits_put, Call::customer_limits_delete, Call::topup, Call::cleared_put})
        EXPECT_TRUE(is_change(c)) << call_name(c);
    EXPECT_EQ(changes, 15);
    for (Call c : {Call::keys_list, Call::key_get, Call::key_usage, Call::self_get, Call::balance_get,
                   Call::events_get, Call::customer_usage})
        EXPECT_FALSE(is_change(c)) << call_name(c);
}

// ------------------------------------------------------------------ token and secrets

TEST(AdminToken, MatchesOnlyTheSameBytes) {
    EXPECT_TRUE(token_matches("s3cret-token", "s3cret-token"));
    EXPECT_FALSE(token_matches("s3cret-token", "s3cret-tokeN"));
    EXPECT_FALSE(token_matches("s3cret-token", "X3cret-token"));
    EXPECT_FALSE(token_matches("s3cret-token", "s3cret-toke"));
    EXPECT_FALSE(token_matches("s3cret-token", "s3cret-token "));
    EXPECT_FALSE(token_matches("s3cret-token", ""));
    EXPECT_FALSE(token_matches("abc", std::string("abc\0", 4)));
    // An empty expected token never matches, not even an empty bearer.
    EXPECT_FALSE(token_matches("", ""));
}

TEST(AdminSecret, FormatAndUniqueness) {
    const std::string base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    std::set<std::string> secrets, ids;
    std::set<char> characters;
    for (int i = 0; i < 1000; ++i) {
        const std::string secret = new_secret();
        ASSERT_EQ(secret.size(), 6u + 43u) << secret;
        ASSERT_EQ(secret.substr(0, 6), "sk-sc-");
        ASSERT_EQ(secret.find_first_not_of(base62, 6), std::string::npos) << secret;
        secrets.insert(secret);
        characters.insert(secret.begin() + 6, secret.end());

        const std::string id = new_key_id();
        ASSERT_EQ(id.size(), 4u + 16u) << id;
        ASSERT_EQ(id.substr(0, 4), "key_");
        ASSERT_EQ(id.find_first_not_of(base62, 4), std::string::npos) << id;
        ASSERT_TRUE(valid_id(id));
        ids.insert(id);
    }
    EXPECT_EQ(secrets.size(), 1000u);
    EXPECT_EQ(ids.size(), 1000u);
    EXPECT_EQ(characters.size(), 62u);  // 43000 draws reach every character
}

// ------------------------------------------------------------------ bodies

const std::string kIdMessage = kIdRule;

std::string key_create_error(const std::string &body) {
    ApiError error;
    EXPECT_FALSE(parse_key_create(body, error)) << body;
    EXPECT_EQ(error.status, 400) << body;
    EXPECT_EQ(error.code, "invalid_request") << body;
    return error.message;
}

std::string limits_error(const std::string &body) {
    ApiError error;
    EXPECT_FALSE(parse_limits_put(body, error)) << body;
    EXPECT_EQ(error.status, 400) << body;
    return error.message;
}

Limits limits_ok(const std::string &body) {
    ApiError error;
    std::optional<Limits> limits = parse_limits_put(body, error);
    EXPECT_TRUE(limits) << body << ": " << error.message;
    return limits.value_or(Limits{});
}

TEST(AdminParse, KeyCreateHappyPath) {
    ApiError error;
    std::optional<KeyCreate> k = parse_key_create(
        R"({"project": "acme-prod", "id": "key_ci", "name": "CI \"bot\" \u00e9",)"
        R"( "limits": {"monthly_usd": 0.1, "daily_usd": "10", "rpm": 600},)"
        R"( "expires_at": "2027-01-01T00:00:00Z"})",
        error);
    ASSERT_TRUE(k) << error.message;
    EXPECT_EQ(k->project, "acme-prod");
    EXPECT_EQ(k->id, std::optional<std::string>("key_ci"));
    EXPECT_EQ(k->name, "CI \"bot\" \xc3\xa9");
    EXPECT_EQ(k->limits.monthly_usd, std::optional<Nanos>(100'000'000));
    EXPECT_EQ(k->limits.daily_usd, std::optional<Nanos>(10 * kNanosPerUsd));
    EXPECT_EQ(k->limits.rpm, std::optional<std::int64_t>(600));
    EXPECT_FALSE(k->limits.tpm);
    EXPECT_EQ(k->expires_at, std::optional<std::int64_t>(k2027_01_01));

    k = parse_key_create(R"({"project":"p"})", error);
    ASSERT_TRUE(k) << error.message;
    EXPECT_EQ(k->project, "p");
    EXPECT_FALSE(k->id);
    EXPECT_EQ(k->name, "");
    EXPECT_FALSE(k->expires_at);
    EXPECT_EQ(limits_json(k->limits), "{}");

    // `limits` may be null or empty, as in the file.
    EXPECT_TRUE(parse_key_create(R"({"project":"p","limits":null})", error));
    EXPECT_TRUE(parse_key_create(R"({"project":"p","limits":{}})", error));
    EXPECT_TRUE(parse_key_create(" \n{\"project\":\t\"p\"}\n", error));
}

TEST(AdminParse, KeyCreateErrorsNameTheField) {
    EXPECT_EQ(key_create_error(R"({"project":"p","foo":1})"), "unknown field `foo`");
    EXPECT_EQ(key_create_error(R"({"project":"p","limits":{"hourly_usd":1}})"), "unknown field `limits.hourly_usd`");
    EXPECT_EQ(key_create_error(R"({})"), "`project` is required");
    EXPECT_EQ(key_create_error(R"({"name":"x"})"), "`project` is required");
    EXPECT_EQ(key_create_error(R"({"project":7})"), "`project` must be a string");
    EXPECT_EQ(key_create_error(R"({"project":null})"), "`project` must be a string");
    EXPECT_EQ(key_create_error(R"({"project":"a b"})"), "`project` " + kIdMessage);
    EXPECT_EQ(key_create_error(R"({"project":""})"), "`project` " + kIdMessage);
    EXPECT_EQ(key_create_error(R"({"project":"p","id":"k:1"})"), "`id` " + kIdMessage);
    EXPECT_EQ(key_create_error(R"({"project":"p","id":"{k}"})"), "`id` " + kIdMessage);
    EXPECT_EQ(key_create_error(R"({"project":"p","id":"k\n"})"), "`id` " + kIdMessage);
    EXPECT_EQ(key_create_error(R"({"project":"p","id":")" + std::string(129, 'k') + "\"}"), "`id` " + kIdMessage);
    EXPECT_EQ(key_create_error(R"({"project":"p","id":["k"]})"), "`id` must be a string");
    EXPECT_EQ(key_create_error(R"({"project":"p","id":"self"})"),
              "`id` must not be `self`, which /keys/self keeps for the caller's own key");
    EXPECT_EQ(key_create_error(R"({"project":"p","name":3})"), "`name` must be a string");
    EXPECT_EQ(key_create_error(R"({"project":"p","name":")" + std::string(257, 'n') + "\"}"),
              "`name` must be at most 256 bytes");
    EXPECT_EQ(key_create_error(R"({"project":"p","limits":[]})"), "`limits` must be an object of limits");
    EXPECT_EQ(key_create_error(R"({"project":"p","limits":"10"})"), "`limits` must be an object of limits");
    EXPECT_EQ(key_create_error(R"({"project":"p","expires_at":"tomorrow"})"),
              "`expires_at` must be an RFC 3339 time such as \"2027-01-01T00:00:00Z\"");
    EXPECT_EQ(key_create_error(R"({"project":"p","expires_at":1798761600})"),
              "`expires_at` must be an RFC 3339 time such as \"2027-01-01T00:00:00Z\"");
}

TEST(AdminParse, BodiesMustBeJsonObjects) {
    const std::string invalid = key_create_error("{\"project\": \"p\",}");
    EXPECT_EQ(invalid.rfind("request body is not valid JSON: ", 0), 0u) << invalid;
    EXPECT_NE(invalid.find("line 1"), std::string::npos) << invalid;
    EXPECT_EQ(key_create_error("").rfind("request body is not valid JSON: ", 0), 0u);
    EXPECT_EQ(key_create_error("{\"project\":\"p\"} x").rfind("request body is not valid JSON: ", 0), 0u);
    // A field given twice is ambiguous: which one would apply?
    EXPECT_EQ(key_create_error(R"({"project":"p","project":"q"})").rfind("request body is not valid JSON: ", 0), 0u);
    for (const char *body : {"[]", "\"p\"", "1", "null", "true"})
        EXPECT_EQ(key_create_error(body), "request body must be a JSON object") << body;
}

TEST(AdminParse, AmountsAreExactDecimalsAsStringsOrNumbers) {
    EXPECT_EQ(limits_ok(R"({"monthly_usd": 0.1})").monthly_usd, std::optional<Nanos>(100'000'000));
    EXPECT_EQ(limits_ok(R"({"monthly_usd": "10"})").monthly_usd, std::optional<Nanos>(10 * kNanosPerUsd));
    EXPECT_EQ(limits_ok(R"({"monthly_usd": 10})").monthly_usd, std::optional<Nanos>(10 * kNanosPerUsd));
    EXPECT_EQ(limits_ok(R"({"monthly_usd": 0})").monthly_usd, std::optional<Nanos>(0));
    EXPECT_EQ(limits_ok(R"({"daily_usd": 0.000000001})").daily_usd, std::optional<Nanos>(1));
    // Past a double's precision: a double would have rounded it.
    EXPECT_EQ(limits_ok(R"({"lifetime_usd": 123456789.123456789})").lifetime_usd,
              std::optional<Nanos>(123'456'789'123'456'789));
    EXPECT_EQ(limits_ok(R"({"lifetime_usd": 9223372036.854775807})").lifetime_usd,
              std::optional<Nanos>(std::numeric_limits<Nanos>::max()));
    // A key written with an escape is the same key.
    EXPECT_EQ(limits_ok(R"({"monthly\u005fusd": 0.15})").monthly_usd, std::optional<Nanos>(150'000'000));
    // A number's text is found by its place, whatever strings before it hold.
    ApiError error;
    std::optional<KeyCreate> k = parse_key_create(
        R"({"name": "x\\\"}, {\"monthly_usd\": 7, [", "limits": {"daily_usd": 0.25, "monthly_usd": 0.5},)"
        R"( "project": "p"})",
        error);
    ASSERT_TRUE(k) << error.message;
    EXPECT_EQ(k->name, R"(x\"}, {"monthly_usd": 7, [)");
    EXPECT_EQ(k->limits.daily_usd, std::optional<Nanos>(250'000'000));
    EXPECT_EQ(k->limits.monthly_usd, std::optional<Nanos>(500'000'000));

    const std::string rule = "`monthly_usd` must be a non-negative decimal USD amount";
    const std::string such = rule + " such as \"10.50\": ";
    EXPECT_EQ(limits_error(R"({"monthly_usd": "-1"})"), such + "negative amounts are not allowed (got \"-1\")");
    EXPECT_EQ(limits_error(R"({"monthly_usd": -1})"), such + "negative amounts are not allowed (got \"-1\")");
    EXPECT_EQ(limits_error(R"({"monthly_usd": "1e3"})"),
              such + "exponents are not allowed; write the amount in plain decimal (got \"1e3\")");
    EXPECT_EQ(limits_error(R"({"monthly_usd": 1e3})"),
              such + "exponents are not allowed; write the amount in plain decimal (got \"1e3\")");
    EXPECT_EQ(limits_error(R"({"monthly_usd": 1E-3})"),
              such + "exponents are not allowed; write the amount in plain decimal (got \"1E-3\")");
    EXPECT_EQ(limits_error(R"({"monthly_usd": "0.0000000001"})"),
              such + "more than nine digits after the decimal point (got \"0.0000000001\")");
    EXPECT_EQ(limits_error(R"({"monthly_usd": 0.0000000001})"),
              such + "more than nine digits after the decimal point (got \"0.0000000001\")");
    EXPECT_EQ(limits_error(R"({"monthly_usd": "9223372037"})"),
              such + "amount is too large (got \"9223372037\")");
    EXPECT_EQ(limits_error(R"({"monthly_usd": ""})"), such + "empty amount (got \"\")");
    EXPECT_EQ(limits_error(R"({"monthly_usd": " 1"})"), such + "spaces are not allowed (got \" 1\")");
    EXPECT_EQ(limits_error(R"({"monthly_usd": "+1"})"), such + "signs are not allowed (got \"+1\")");
    // A long text is not quoted back.
    EXPECT_EQ(limits_error(R"({"monthly_usd": ")" + std::string(50, 'x') + "\"}"),
              such + "amount must start with a digit");
    for (const char *value : {"true", "null", "[1]", "{}"})
        EXPECT_EQ(limits_error(std::string(R"({"monthly_usd": )") + value + "}"),
                  rule + ", a string or number such as \"10.50\"")
            << value;
}

TEST(AdminParse, LimitsTakeTheFilesFields) {
    const Limits all = limits_ok(
        R"({"daily_usd": "2", "monthly_usd": 10, "lifetime_usd": "40.5", "daily_requests": 1000,)"
        R"( "monthly_requests": 0, "daily_tokens": 5, "monthly_tokens": 6, "rpm": 600, "tpm": 200000})");
    EXPECT_EQ(all.daily_usd, std::optional<Nanos>(2 * kNanosPerUsd));
    EXPECT_EQ(all.monthly_usd, std::optional<Nanos>(10 * kNanosPerUsd));
    EXPECT_EQ(all.lifetime_usd, std::optional<Nanos>(40'500'000'000));
    EXPECT_EQ(all.daily_requests, std::optional<std::int64_t>(1000));
    EXPECT_EQ(all.monthly_requests, std::optional<std::int64_t>(0));  // 0 is a cap too
    EXPECT_EQ(all.daily_tokens, std::optional<std::int64_t>(5));
    EXPECT_EQ(all.monthly_tokens, std::optional<std::int64_t>(6));
    EXPECT_EQ(all.rpm, std::optional<std::int64_t>(600));
    EXPECT_EQ(all.tpm, std::optional<std::int64_t>(200000));
    // What limits_json writes reads back as the same limits.
    const std::string written = limits_json(all);
    EXPECT_EQ(written,
              R"({"daily_usd":"2.00","monthly_usd":"10.00","lifetime_usd":"40.50","daily_requests":1000,)"
              R"("monthly_requests":0,"daily_tokens":5,"monthly_tokens":6,"rpm":600,"tpm":200000})");
    EXPECT_EQ(limits_json(limits_ok(written)), written);
    EXPECT_EQ(limits_json(limits_ok("{}")), "{}");

    EXPECT_EQ(limits_error(R"({"rpm": -1})"), "`rpm` must be a non-negative integer");
    EXPECT_EQ(limits_error(R"({"tpm": 1.5})"), "`tpm` must be a non-negative integer");
    EXPECT_EQ(limits_error(R"({"daily_requests": 600.0})"), "`daily_requests` must be a non-negative integer");
    EXPECT_EQ(limits_error(R"({"monthly_tokens": "600"})"), "`monthly_tokens` must be a non-negative integer");
    EXPECT_EQ(limits_error(R"({"rpm": null})"), "`rpm` must be a non-negative integer");
    EXPECT_EQ(limits_error(R"({"rpm": 1, "burst": 2})"), "unknown field `burst`");
    EXPECT_EQ(limits_error("null"), "request body must be a JSON object");
}

TEST(AdminParse, Rotate) {
    ApiError error;
    std::optional<Rotate> r = parse_rotate("", error);
    ASSERT_TRUE(r) << error.message;
    EXPECT_EQ(r->grace_seconds, 0);
    r = parse_rotate("{}", error);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->grace_seconds, 0);
    r = parse_rotate(R"({"grace_seconds": 3600})", error);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->grace_seconds, 3600);
    r = parse_rotate(R"({"grace_seconds": 2592000})", error);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->grace_seconds, 2'592'000);

    const std::string range = "`grace_seconds` must be an integer from 0 to 2592000 (30 days)";
    for (const char *body : {R"({"grace_seconds": 2592001})", R"({"grace_seconds": -1})",
                             R"({"grace_seconds": "60"})", R"({"grace_seconds": 1.5})"}) {
        EXPECT_FALSE(parse_rotate(body, error)) << body;
        EXPECT_EQ(error.message, range) << body;
        EXPECT_EQ(error.status, 400);
    }
    EXPECT_FALSE(parse_rotate(R"({"grace": 60})", error));
    EXPECT_EQ(error.message, "unknown field `grace`");
    EXPECT_FALSE(parse_rotate("[]", error));
    EXPECT_EQ(error.message, "request body must be a JSON object");
}

TEST(AdminParse, ProjectPut) {
    ApiError error;
    std::optional<ProjectPut> p = parse_project_put(R"({"org": "acme", "limits": {"monthly_usd": 50}})", error);
    ASSERT_TRUE(p) << error.message;
    EXPECT_EQ(p->org, "acme");
    EXPECT_EQ(p->limits.monthly_usd, std::optional<Nanos>(50 * kNanosPerUsd));
    p = parse_project_put(R"({"org": "acme"})", error);
    ASSERT_TRUE(p);
    EXPECT_FALSE(p->limits.monthly_usd);

    EXPECT_FALSE(parse_project_put(R"({"limits": {}})", error));
    EXPECT_EQ(error.message, "`org` is required");
    EXPECT_FALSE(parse_project_put(R"({"org": "a:b"})", error));
    EXPECT_EQ(error.message, "`org` " + kIdMessage);
    EXPECT_FALSE(parse_project_put(R"({"org": true})", error));
    EXPECT_EQ(error.message, "`org` must be a string");
    EXPECT_FALSE(parse_project_put(R"({"org": "acme", "name": "x"})", error));
    EXPECT_EQ(error.message, "unknown field `name`");
    EXPECT_FALSE(parse_project_put(R"({"org": "acme", "limits": {"monthly_usd": "1.0000000001"}})", error));
    EXPECT_EQ(error.message, "`limits.monthly_usd` must be a non-negative decimal USD amount such as \"10.50\": "
                             "more than nine digits after the decimal point (got \"1.0000000001\")");
}

std::shared_ptr<const Policy> plans_policy() {
    return parse_policy(R"(
models:
  m: { input: 1, output: 2 }
plans:
  free:
    limits: { monthly_usd: 1 }
  paid:
    ceilings:
      - { cleared_usd: 0, age_days: 0, monthly_usd: 100 }
      - { cleared_usd: 100, age_days: 14, monthly_usd: 1000 }
)",
                        "plans.yaml");
}

TEST(AdminParse, OrgPutHappyPaths) {
    const auto policy = plans_policy();
    ApiError error;
    std::optional<OrgPut> o = parse_org_put(
        R"({"plan": "paid", "created_at": "2026-01-10T00:00:00Z", "prepaid": true, "low_balance_usd": 5,)"
        R"( "limits": {"daily_usd": 20}})",
        *policy, error);
    ASSERT_TRUE(o) << error.message;
    EXPECT_EQ(o->plan, "paid");
    EXPECT_EQ(o->created_at, std::optional<std::int64_t>(1'768'003'200));
    EXPECT_TRUE(o->prepaid);
    EXPECT_EQ(o->low_balance_usd, std::optional<Nanos>(5 * kNanosPerUsd));
    EXPECT_EQ(o->limits.daily_usd, std::optional<Nanos>(20 * kNanosPerUsd));

    o = parse_org_put("{}", *policy, error);
    ASSERT_TRUE(o) << error.message;
    EXPECT_EQ(o->plan, "");
    EXPECT_FALSE(o->created_at);
    EXPECT_FALSE(o->prepaid);
    EXPECT_FALSE(o->low_balance_usd);

    // A plan without ceilings needs no created_at; nor does a ceilings plan
    // under a monthly_usd of the org's own.
    EXPECT_TRUE(parse_org_put(R"({"plan": "free"})", *policy, error)) << error.message;
    EXPECT_TRUE(parse_org_put(R"({"plan": "paid", "limits": {"monthly_usd": "30"}})", *policy, error))
        << error.message;
    EXPECT_TRUE(parse_org_put(R"({"prepaid": false})", *policy, error));
}

TEST(AdminParse, OrgPutRefusesWhatTheFileRefuses) {
    const auto policy = plans_policy();
    ApiError error;
    auto refused = [&](const std::string &body) {
        EXPECT_FALSE(parse_org_put(body, *policy, error)) << body;
        EXPECT_EQ(error.status, 400) << body;
        return error.message;
    };
    EXPECT_EQ(refused(R"({"plan": "gold"})"),
              "`plan` names plan `gold`, which is not defined in the policy file's `plans`");
    EXPECT_EQ(refused(R"({"plan": ""})"), "`plan` names plan ``, which is not defined in the policy file's `plans`");
    EXPECT_EQ(refused(R"({"plan": 1})"), "`plan` must be a string");
    EXPECT_EQ(refused(R"({"plan": "paid"})"),
              "`created_at` is required with plan `paid`, whose monthly ceiling rises with account age "
              "(or give `limits.monthly_usd`)");
    EXPECT_EQ(refused(R"({"plan": "paid", "limits": {"daily_usd": 1}})"),
              "`created_at` is required with plan `paid`, whose monthly ceiling rises with account age "
              "(or give `limits.monthly_usd`)");
    EXPECT_EQ(refused(R"({"low_balance_usd": 5})"), "`low_balance_usd` needs `\"prepaid\": true`");
    EXPECT_EQ(refused(R"({"low_balance_usd": 5, "prepaid": false})"), "`low_balance_usd` needs `\"prepaid\": true`");
    EXPECT_EQ(refused(R"({"prepaid": "yes"})"), "`prepaid` must be true or false");
    EXPECT_EQ(refused(R"({"created_at": "2026-13-01"})"),
              "`created_at` must be an RFC 3339 time such as \"2027-01-01T00:00:00Z\"");
    EXPECT_EQ(refused(R"({"prepaid": true, "low_balance_usd": "-5"})"),
              "`low_balance_usd` must be a non-negative decimal USD amount such as \"10.50\": "
              "negative amounts are not allowed (got \"-5\")");
    EXPECT_EQ(refused(R"({"balance": 5})"), "unknown field `balance`");
    EXPECT_EQ(refused(R"({"limits": {"rpm": "x"}})"), "`limits.rpm` must be a non-negative integer");
}

TEST(AdminParse, Topup) {
    ApiError error;
    std::optional<Topup> t = parse_topup(R"({"amount_usd": 25.5, "idempotency_key": "inv-2026-001"})", error);
    ASSERT_TRUE(t) << error.message;
    EXPECT_EQ(t->amount, 25'500'000'000);
    EXPECT_EQ(t->idempotency_key, "inv-2026-001");
    t = parse_topup(R"({"amount_usd": "0.000000001", "idempotency_key": ")" + std::string(128, 'i') + "\"}", error);
    ASSERT_TRUE(t) << error.message;
    EXPECT_EQ(t->amount, 1);

    auto refused = [&](const std::string &body) {
        EXPECT_FALSE(parse_topup(body, error)) << body;
        EXPECT_EQ(error.status, 400) << body;
        return error.message;
    };
    const std::string key_rule = "`idempotency_key` must be 1 to 128 printable ASCII characters";
    EXPECT_EQ(refused(R"({"amount_usd": 0, "idempotency_key": "k"})"), "`amount_usd` must be more than 0");
    EXPECT_EQ(refused(R"({"amount_usd": "0.000", "idempotency_key": "k"})"), "`amount_usd` must be more than 0");
    EXPECT_EQ(refused(R"({"idempotency_key": "k"})"), "`amount_usd` is required");
    EXPECT_EQ(refused(R"({"amount_usd": 5})"), "`idempotency_key` is required");
    EXPECT_EQ(refused(R"({"amount_usd": 5, "idempotency_key": ""})"), key_rule);
    EXPECT_EQ(refused(R"({"amount_usd": 5, "idempotency_key": ")" + std::string(129, 'i') + "\"}"), key_rule);
    EXPECT_EQ(refused(R"({"amount_usd": 5, "idempotency_key": "a\nb"})"), key_rule);
    EXPECT_EQ(refused(R"({"amount_usd": 5, "idempotency_key": "caf\u00e9"})"), key_rule);
    EXPECT_EQ(refused(R"({"amount_usd": 5, "idempotency_key": 42})"), "`idempotency_key` must be a string");
    EXPECT_EQ(refused(R"({"amount_usd": -5, "idempotency_key": "k"})"),
              "`amount_usd` must be a non-negative decimal USD amount such as \"10.50\": "
              "negative amounts are not allowed (got \"-5\")");
    EXPECT_EQ(refused(R"({"amount_usd": 5, "idempotency_key": "k", "currency": "usd"})"),
              "unknown field `currency`");
}

TEST(AdminParse, Cleared) {
    ApiError error;
    EXPECT_EQ(parse_cleared(R"({"cleared_usd": 0})", error), std::optional<Nanos>(0));
    EXPECT_EQ(parse_cleared(R"({"cleared_usd": "1234.56"})", error), std::optional<Nanos>(1'234'560'000'000));
    EXPECT_EQ(parse_cleared(R"({"cleared_usd": 0.3})", error), std::optional<Nanos>(300'000'000));

    EXPECT_FALSE(parse_cleared("{}", error));
    EXPECT_EQ(error.message, "`cleared_usd` is required");
    EXPECT_FALSE(parse_cleared(R"({"cleared_usd": "1e2"})", error));
    EXPECT_EQ(error.message, "`cleared_usd` must be a non-negative decimal USD amount such as \"10.50\": "
                             "exponents are not allowed; write the amount in plain decimal (got \"1e2\")");
    EXPECT_FALSE(parse_cleared(R"({"cleared_usd": 1, "by": "billing"})", error));
    EXPECT_EQ(error.message, "unknown field `by`");
    EXPECT_FALSE(parse_cleared("", error));
    EXPECT_EQ(error.message.rfind("request body is not valid JSON: ", 0), 0u);
}

// ------------------------------------------------------------------ answers

TEST(AdminRender, Errors) {
    EXPECT_EQ(render_error(invalid_request("`project` is required")),
              R"({"error":{"code":"invalid_request","message":"`project` is required"}})");
    const ApiError u = unauthorized();
    EXPECT_EQ(u.status, 401);
    EXPECT_EQ(render_error(u), R"({"error":{"code":"unauthorized","message":"missing or wrong admin token"}})");
    EXPECT_EQ(not_found("no key `k`").status, 404);
    EXPECT_EQ(not_found("no key `k`").code, "not_found");
    EXPECT_EQ(conflict("key `k` exists").status, 409);
    EXPECT_EQ(conflict("key `k` exists").code, "conflict");
    const ApiError down = unavailable();
    EXPECT_EQ(down.status, 503);
    EXPECT_EQ(render_error(down), R"({"error":{"code":"unavailable","message":"redis is unavailable or too slow"}})");
    EXPECT_EQ(invalid_request("x").status, 400);
    // Messages are escaped; bytes that are not UTF-8 become U+FFFD.
    EXPECT_EQ(render_error(not_found("no key \"a\\b\"\n\xff")),
              R"({"error":{"code":"not_found","message":"no key \"a\\b\"\n\ufffd"}})");
    EXPECT_EQ(render_error(routed_error("GET", "/keys/a:\xc3")),
              R"({"error":{"code":"not_found","message":"no such resource: `a:\ufffd` is not a valid id"}})");
}

KeyView file_key() {
    KeyView key;
    key.id = "key_prod_1";
    key.project = "acme-prod";
    key.org = "acme";
    key.limits.monthly_usd = 10 * kNanosPerUsd;
    key.limits.rpm = 600;
    key.from_file = true;
    return key;
}

TEST(AdminRender, Keys) {
    EXPECT_EQ(render_key(file_key()),
              R"({"id":"key_prod_1","name":null,"project":"acme-prod","org":"acme",)"
              R"("limits":{"monthly_usd":"10.00","rpm":600},"expires_at":null,"revoked":false,)"
              R"("created_at":null,"source":"file"})");

    KeyView api;
    api.id = "key_Ab3";
    api.name = "CI \"deploy\" bot \xe2\x9c\x93 \\ tab\t";
    api.project = "p";
    api.org = "o";
    api.expires_at = k2027_01_01;
    api.revoked = true;
    api.created_at = k2026_11_22;
    EXPECT_EQ(render_key(api, "sk-sc-abc"),
              R"({"id":"key_Ab3","name":"CI \"deploy\" bot )"
              "\xe2\x9c\x93"
              R"( \\ tab\t","project":"p","org":"o","limits":{},)"
              R"("expires_at":"2027-01-01T00:00:00Z","revoked":true,"created_at":"2026-11-22T00:00:00Z",)"
              R"("source":"api","secret":"sk-sc-abc"})");

    EXPECT_EQ(render_keys({}), R"({"keys":[]})");
    KeyView second = file_key();
    second.id = "key_2";
    second.limits = Limits{};
    EXPECT_EQ(render_keys({file_key(), second}),
              R"({"keys":[{"id":"key_prod_1","name":null,"project":"acme-prod","org":"acme",)"
              R"("limits":{"monthly_usd":"10.00","rpm":600},"expires_at":null,"revoked":false,)"
              R"("created_at":null,"source":"file"},)"
              R"({"id":"key_2","name":null,"project":"acme-prod","org":"acme","limits":{},)"
              R"("expires_at":null,"revoked":false,"created_at":null,"source":"file"}]})");
}

TEST(AdminRender, ProjectsAndOrgs) {
    ProjectView project;
    project.id = "acme-prod";
    project.org = "acme";
    project.limits.monthly_usd = 50 * kNanosPerUsd;
    project.limits.daily_tokens = 1'000'000;
    EXPECT_EQ(render_project(project),
              R"({"id":"acme-prod","org":"acme","limits":{"monthly_usd":"50.00","daily_tokens":1000000},)"
              R"("source":"api"})");

    OrgView org;
    org.id = "acme";
    org.from_file = true;
    EXPECT_EQ(render_org(org),
              R"({"id":"acme","plan":null,"created_at":null,"prepaid":false,)"
              R"("low_balance_nanousd":null,"low_balance_usd":null,"timezone":"UTC","limits":{},)"
              R"("cleared_nanousd":0,"cleared_usd":"0.00","source":"file"})");

    org.plan = "paid";
    org.created_at = 1'768'003'200;
    org.prepaid = true;
    org.low_balance_usd = 5 * kNanosPerUsd;
    org.limits.daily_usd = 20 * kNanosPerUsd;
    org.cleared = 123;
    org.from_file = false;
    EXPECT_EQ(render_org(org),
              R"({"id":"acme","plan":"paid","created_at":"2026-01-10T00:00:00Z","prepaid":true,)"
              R"("low_balance_nanousd":5000000000,"low_balance_usd":"5.00","timezone":"UTC","limits":{"daily_usd":"20.00"},)"
              R"("cleared_nanousd":123,"cleared_usd":"0.000000123","source":"api"})");
}

TEST(AdminRender, Usage) {
    UsageView usage;
    usage.scope = Scope::key;
    usage.id = "key_1";
    usage.org = "acme";
    WindowUsage daily;
    daily.window = Window::daily;
    daily.period = "2026-11-21";
    daily.reset_at = k2026_11_22;
    daily.spent = 1'500'000'000;
    daily.cap = 2 * kNanosPerUsd;
    daily.requests = 12;
    daily.requests_cap = 100;
    daily.tokens = 3400;
    WindowUsage monthly;
    monthly.window = Window::monthly;
    monthly.period = "2026-11";
    monthly.reset_at = k2026_12_01;
    monthly.spent = 12 * kNanosPerUsd;
    monthly.cap = 10 * kNanosPerUsd;  // over its cap (a request settled above its estimate): 0 left
    monthly.tokens = 5;
    monthly.tokens_cap = 9;
    WindowUsage lifetime;
    lifetime.window = Window::lifetime;
    lifetime.period = "ignored";
    lifetime.reset_at = 123;
    lifetime.spent = 7;
    lifetime.requests_cap = 5;  // no request or token counter has a lifetime window
    lifetime.tokens_cap = 5;
    usage.windows = {daily, monthly, lifetime};
    usage.rpm = RateUsage{3, 600, k2026_11_22};
    usage.tpm = RateUsage{40, std::nullopt, k2026_11_22};
    EXPECT_EQ(render_usage(usage),
              R"({"scope":"key","id":"key_1","org":"acme","windows":[)"
              R"({"window":"daily","period":"2026-11-21","reset_at":"2026-11-22T00:00:00Z",)"
              R"("spent_nanousd":1500000000,"spent_usd":"1.50","cap_nanousd":2000000000,"cap_usd":"2.00",)"
              R"("remaining_nanousd":500000000,"remaining_usd":"0.50","requests":12,"requests_cap":100,)"
              R"("tokens":3400,"tokens_cap":null,"forecast_exhausted_at":null},)"
              R"({"window":"monthly","period":"2026-11","reset_at":"2026-12-01T00:00:00Z",)"
              R"("spent_nanousd":12000000000,"spent_usd":"12.00","cap_nanousd":10000000000,"cap_usd":"10.00",)"
              R"("remaining_nanousd":0,"remaining_usd":"0.00","requests":0,"requests_cap":null,)"
              R"("tokens":5,"tokens_cap":9,"forecast_exhausted_at":null},)"
              R"({"window":"lifetime","period":null,"reset_at":null,)"
              R"("spent_nanousd":7,"spent_usd":"0.000000007","cap_nanousd":null,"cap_usd":null,)"
              R"("remaining_nanousd":null,"remaining_usd":null,"requests":null,"requests_cap":null,)"
              R"("tokens":null,"tokens_cap":null,"forecast_exhausted_at":null}],)"
              R"("rates":{"rpm":{"used":3,"cap":600,"reset_at":"2026-11-22T00:00:00Z"},"tpm":null}})");

    UsageView customer;
    customer.scope = Scope::customer;
    customer.id = "cust_42";
    customer.org = "acme";
    EXPECT_EQ(render_usage(customer),
              R"({"scope":"customer","id":"cust_42","org":"acme","windows":[],"rates":{"rpm":null,"tpm":null}})");
}

TEST(AdminRender, RemainingNeverOverflows) {
    UsageView usage;
    usage.scope = Scope::org;
    usage.id = usage.org = "o";
    WindowUsage w;
    w.window = Window::daily;
    w.period = "2026-11-21";
    w.cap = std::numeric_limits<Nanos>::max();
    w.spent = -5;  // cap - spent would overflow: held at the largest amount
    usage.windows = {w};
    const std::string json = render_usage(usage);
    EXPECT_NE(json.find(R"("remaining_nanousd":9223372036854775807,"remaining_usd":"9223372036.854775807")"),
              std::string::npos)
        << json;
    EXPECT_NE(json.find(R"("reset_at":null)"), std::string::npos) << json;  // 0: none

    w.cap = std::numeric_limits<Nanos>::min();
    w.spent = std::numeric_limits<Nanos>::max();
    usage.windows = {w};
    EXPECT_NE(render_usage(usage).find(R"("remaining_nanousd":0,)"), std::string::npos);
}

TEST(AdminRender, BudgetsBindOnTheFirstLeastRemaining) {
    const std::vector<Layer> layers = {
        {Scope::key, "key_1", "monthly", 10 * kNanosPerUsd, 9 * kNanosPerUsd, 1 * kNanosPerUsd, k2026_12_01},
        {Scope::project, "acme-prod", "daily", 2 * kNanosPerUsd, 1'750'000'000, 250'000'000, k2026_11_22},
        {Scope::org, "acme", "lifetime", 100, 99, 1, 0},
        {Scope::org, "acme", "balance", 5, 4, 1, 0},
    };
    EXPECT_EQ(render_budgets("key_1", layers),
              R"({"key":"key_1","budgets":[)"
              R"({"scope":"key","id":"key_1","window":"monthly","cap_nanousd":10000000000,"cap_usd":"10.00",)"
              R"("spent_nanousd":9000000000,"spent_usd":"9.00","remaining_nanousd":1000000000,"remaining_usd":"1.00",)"
              R"("reset_at":"2026-12-01T00:00:00Z","forecast_exhausted_at":null,"model":null,"binding":false},)"
              R"({"scope":"project","id":"acme-prod","window":"daily","cap_nanousd":2000000000,"cap_usd":"2.00",)"
              R"("spent_nanousd":1750000000,"spent_usd":"1.75","remaining_nanousd":250000000,"remaining_usd":"0.25",)"
              R"("reset_at":"2026-11-22T00:00:00Z","forecast_exhausted_at":null,"model":null,"binding":false},)"
              R"({"scope":"org","id":"acme","window":"lifetime","cap_nanousd":100,"cap_usd":"0.0000001",)"
              R"("spent_nanousd":99,"spent_usd":"0.000000099","remaining_nanousd":1,"remaining_usd":"0.000000001",)"
              R"("reset_at":null,"forecast_exhausted_at":null,"model":null,"binding":true},)"
              R"({"scope":"org","id":"acme","window":"balance","cap_nanousd":5,"cap_usd":"0.000000005",)"
              R"("spent_nanousd":4,"spent_usd":"0.000000004","remaining_nanousd":1,"remaining_usd":"0.000000001",)"
              R"("reset_at":null,"forecast_exhausted_at":null,"model":null,"binding":false}]})");
    EXPECT_EQ(render_budgets("key_1", {}), R"({"key":"key_1","budgets":[]})");

    const std::string one = render_budgets("k", {{Scope::key, "k", "daily", 1, 1, 0, 0}});
    EXPECT_NE(one.find(R"("binding":true)"), std::string::npos) << one;
}

TEST(AdminRender, BalanceAndTopup) {
    EXPECT_EQ(render_balance({"acme", 25 * kNanosPerUsd, 1'250'000'000, 5 * kNanosPerUsd}),
              R"({"org":"acme","balance_nanousd":25000000000,"balance_usd":"25.00",)"
              R"("reserved_nanousd":1250000000,"reserved_usd":"1.25",)"
              R"("available_nanousd":23750000000,"available_usd":"23.75",)"
              R"("low_balance_nanousd":5000000000,"low_balance_usd":"5.00"})");
    EXPECT_EQ(render_balance({"acme", 1, 3, std::nullopt}),
              R"({"org":"acme","balance_nanousd":1,"balance_usd":"0.000000001",)"
              R"("reserved_nanousd":3,"reserved_usd":"0.000000003",)"
              R"("available_nanousd":-2,"available_usd":"-0.000000002",)"
              R"("low_balance_nanousd":null,"low_balance_usd":null})");

    const Topup topup{25'500'000'000, "inv-\"7\""};
    EXPECT_EQ(render_topup("acme", topup, 30 * kNanosPerUsd, true),
              R"({"org":"acme","idempotency_key":"inv-\"7\"","amount_nanousd":25500000000,"amount_usd":"25.50",)"
              R"("balance_nanousd":30000000000,"balance_usd":"30.00","applied":true})");
    EXPECT_NE(render_topup("acme", topup, 30 * kNanosPerUsd, false).find(R"("applied":false})"), std::string::npos);
}

TEST(AdminRender, Events) {
    const std::vector<Event> events = {
        {"1700000000000-0", {{"type", "key_created"}, {"key", "key_1"}, {"by", "api"}}},
        {"1700000000001-3",
         {{"type", "spend_cap_reached"}, {"scope", "key"}, {"id", "key_1"}, {"spent", "10000000000"}}},
    };
    // The stream entry's own id comes first; a field named like it is kept as data_id.
    EXPECT_EQ(render_events(events, "1-0"),
              R"({"events":[{"id":"1700000000000-0","type":"key_created","key":"key_1","by":"api"},)"
              R"({"id":"1700000000001-3","type":"spend_cap_reached","scope":"key","data_id":"key_1",)"
              R"("spent":"10000000000"}],"next":"1700000000001-3"})");
    EXPECT_EQ(render_events({}, "1700000000001-3"), R"({"events":[],"next":"1700000000001-3"})");
    EXPECT_EQ(render_events({}, ""), R"({"events":[],"next":null})");
    EXPECT_EQ(render_events({{"5-0", {{"note", "a \"b\"\n\xc3\xa9\xff"}, {"note", "again"}}}}, ""),
              R"({"events":[{"id":"5-0","note":"a \"b\"\n)"
              "\xc3\xa9"
              R"(\ufffd","data_note":"again"}],"next":"5-0"})");
}

// ------------------------------------------------------------------ daily usage

TEST(AdminDaily, RecentDaysStepBackWholeCivilDays) {
    using V = std::vector<std::string>;
    EXPECT_EQ(recent_days("2026-12-05", 1), V{"2026-12-05"});
    EXPECT_EQ(recent_days("2026-12-05", 3), (V{"2026-12-03", "2026-12-04", "2026-12-05"}));
    // a month's end, a year's end
    EXPECT_EQ(recent_days("2026-12-01", 2), (V{"2026-11-30", "2026-12-01"}));
    EXPECT_EQ(recent_days("2027-01-02", 4), (V{"2026-12-30", "2026-12-31", "2027-01-01", "2027-01-02"}));
    // February: leap years (2028, 2000) and not (2026, 2100)
    EXPECT_EQ(recent_days("2028-03-01", 3), (V{"2028-02-28", "2028-02-29", "2028-03-01"}));
    EXPECT_EQ(recent_days("2026-03-01", 2), (V{"2026-02-28", "2026-03-01"}));
    EXPECT_EQ(recent_days("2000-03-01", 2), (V{"2000-02-29", "2000-03-01"}));
    EXPECT_EQ(recent_days("2100-03-01", 2), (V{"2100-02-28", "2100-03-01"}));
    EXPECT_EQ(recent_days("2028-02-29", 1), V{"2028-02-29"});
    // 35 days: oldest first, each one day after the one before, ending today
    const V days = recent_days("2026-03-04", 35);
    ASSERT_EQ(days.size(), 35u);
    EXPECT_EQ(days.front(), "2026-01-29");
    EXPECT_EQ(days[30], "2026-02-28");
    EXPECT_EQ(days[31], "2026-03-01");
    EXPECT_EQ(days.back(), "2026-03-04");
    EXPECT_EQ(recent_days("2029-01-15", 35).front(), "2028-12-12");
    // nothing for a date that is not one, or no days
    for (const char *bad : {"", "2026-12", "2026-13-01", "2026-02-29", "2026-04-31", "2026-00-10", "2026-01-00",
                            "26-12-05", "2026/12/05", "2026-12-05T00:00", "2026-1-05", "abcd-ef-gh"})
        EXPECT_TRUE(recent_days(bad, 3).empty()) << bad;
    EXPECT_TRUE(recent_days("2026-12-05", 0).empty());
    EXPECT_TRUE(recent_days("2026-12-05", -1).empty());
    EXPECT_TRUE(recent_days("0000-01-01", 2).empty());  // no year before 0000
}

TEST(AdminDaily, KeysAreThreePerDateInTheOrgsSlot) {
    EXPECT_EQ(daily_keys("acme", Scope::customer, "c1", {"2026-11-30", "2026-12-01"}),
              (std::vector<std::string>{"sc:{acme}:spend:customer:c1:d:2026-11-30",
                                        "sc:{acme}:reqs:customer:c1:d:2026-11-30",
                                        "sc:{acme}:tokens:customer:c1:d:2026-11-30",
                                        "sc:{acme}:spend:customer:c1:d:2026-12-01",
                                        "sc:{acme}:reqs:customer:c1:d:2026-12-01",
                                        "sc:{acme}:tokens:customer:c1:d:2026-12-01"}));
    EXPECT_TRUE(daily_keys("acme", Scope::key, "k", {}).empty());
}

TEST(AdminDaily, RenderedAsJsonAndCsv) {
    auto value = [](const char *text) {
        Reply r;
        if (text != nullptr) {
            r.type = Reply::Type::string;
            r.str = text;
        }
        return r;
    };
    const std::vector<std::string> dates{"2026-12-31", "2027-01-01"};
    DailyView view;
    ASSERT_TRUE(daily_of(Scope::project, "acme-prod", "acme", dates,
                         {value("1500000123"), value("3"), value("4200"), value(nullptr), value(nullptr),
                          value("junk")},
                         view));
    EXPECT_EQ(render_daily(view),
              R"({"scope":"project","id":"acme-prod","org":"acme","days":[)"
              R"({"date":"2026-12-31","spent_nanousd":1500000123,"spent_usd":"1.500000123","requests":3,"tokens":4200},)"
              R"({"date":"2027-01-01","spent_nanousd":0,"spent_usd":"0.00","requests":0,"tokens":0}]})");
    EXPECT_EQ(render_daily_csv(view),
              "date,spent_usd,spent_nanousd,requests,tokens\n"
              "2026-12-31,1.500000123,1500000123,3,4200\n"
              "2027-01-01,0.00,0,0,0\n");
    DailyView none;
    ASSERT_TRUE(daily_of(Scope::org, "acme", "acme", {}, {}, none));
    EXPECT_EQ(render_daily(none), R"({"scope":"org","id":"acme","org":"acme","days":[]})");
    EXPECT_EQ(render_daily_csv(none), "date,spent_usd,spent_nanousd,requests,tokens\n");
    // not three values per date
    EXPECT_FALSE(daily_of(Scope::org, "acme", "acme", dates, {value("1")}, none));
}

}  // namespace
}  // namespace spendcap::admin
