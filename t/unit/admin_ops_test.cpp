// admin/ops.h: each management API call as an Operation, driven here with
// hand-made Redis replies (as Redis would answer the commands it asks for):
// which commands it sends, in which order, with which KEYS and ARGV, and the
// status and JSON of its answer. The scripts themselves run against an
// in-memory Redis in lua_scripts_test.cpp.
#include "base/digest.h"
#include "admin/ops.h"

#include <gtest/gtest.h>
#include <jansson.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "policy/policy.h"
#include "redis/script.h"
#include "identity/records.h"
#include "request/request.h"  // sha1_hex, sha256_hex

namespace spendcap::admin {
namespace {

constexpr std::int64_t kNow = 1795000000;  // 2026-11-18T11:06:40Z

const std::string &k1_sha() {
    static const std::string s = sha256_hex("sk-test-k1");
    return s;
}

std::string policy_text() {
    return "models:\n"
           "  gpt-4o-mini: { input: 0.15, output: 0.60, max_output_tokens: 16384 }\n"
           "plans:\n"
           "  free:\n"
           "    limits: { monthly_usd: 1 }\n"
           "orgs:\n"
           "  acme:\n"
           "    limits: { daily_usd: 20 }\n"
           "projects:\n"
           "  acme-prod:\n"
           "    org: acme\n"
           "    limits: { monthly_usd: 50 }\n"
           "keys:\n"
           "  - id: k1\n"
           "    sha256: " + k1_sha() + "\n"
           "    project: acme-prod\n"
           "    limits: { monthly_usd: 10 }\n";
}

// ---------------------------------------------------------------- replies

Reply nil() { return Reply{}; }
Reply integer(long long v) {
    Reply r;
    r.type = Reply::Type::integer;
    r.integer = v;
    return r;
}
Reply str(std::string s) {
    Reply r;
    r.type = Reply::Type::string;
    r.str = std::move(s);
    return r;
}
Reply error(std::string s) {
    Reply r;
    r.type = Reply::Type::error;
    r.str = std::move(s);
    return r;
}
Reply array(std::vector<Reply> elements) {
    Reply r;
    r.type = Reply::Type::array;
    r.elements = std::move(elements);
    return r;
}
// HGETALL's reply.
Reply fields(const Fields &f) {
    std::vector<Reply> out;
    for (const auto &[k, v] : f) {
        out.push_back(str(k));
        out.push_back(str(v));
    }
    return array(std::move(out));
}
// The apply script's reply: {existed, the record's fields after}.
Reply applied(bool existed, const Fields &f, bool changed = true) {
    return array({integer(existed ? 1 : 0), fields(f), integer(changed ? 1 : 0)});
}

// ---------------------------------------------------------------- JSON

struct JsonDeleter {
    void operator()(json_t *j) const { json_decref(j); }
};
using Json = std::unique_ptr<json_t, JsonDeleter>;

Json parse(const std::string &body) {
    json_error_t e;
    Json j(json_loads(body.c_str(), JSON_DECODE_ANY, &e));
    EXPECT_NE(j, nullptr) << "not JSON: " << body << " (" << e.text << ")";
    return j;
}
// A value by a dotted path ("error.code").
json_t *at(json_t *root, const std::string &path) {
    json_t *j = root;
    std::size_t from = 0;
    while (j != nullptr && from <= path.size()) {
        const std::size_t dot = path.find('.', from);
        const std::string part = path.substr(from, dot == std::string::npos ? std::string::npos : dot - from);
        j = json_is_object(j) ? json_object_get(j, part.c_str()) : nullptr;
        if (dot == std::string::npos) break;
        from = dot + 1;
    }
    return j;
}
std::string jstr(json_t *root, const std::string &path) {
    json_t *j = at(root, path);
    return json_is_string(j) ? json_string_value(j) : "<not a string>";
}
bool jtrue(json_t *root, const std::string &path) { return json_is_true(at(root, path)); }
bool jfalse(json_t *root, const std::string &path) { return json_is_false(at(root, path)); }
bool jnull(json_t *root, const std::string &path) { return json_is_null(at(root, path)); }
long long jint(json_t *root, const std::string &path) {
    json_t *j = at(root, path);
    return json_is_integer(j) ? json_integer_value(j) : -999;
}

// ---------------------------------------------------------------- fixture

class AdminOpsTest : public ::testing::Test {
protected:
    std::shared_ptr<const Policy> policy = parse_policy(policy_text(), "test.yaml");
    std::unique_ptr<Operation> op;

    std::unique_ptr<Operation> make(const char *method, const char *path, const char *query = "",
                                    std::string body = "") {
        Routed routed = route(method, path, query);
        EXPECT_TRUE(routed.route) << method << " " << path << ": " << routed.error.message;
        return std::make_unique<Operation>(*policy, routed.route.value_or(Route{}), std::move(body), kNow * 1000);
    }
    std::optional<Command> start(const char *method, const char *path, const char *query = "",
                                 std::string body = "") {
        op = make(method, path, query, std::move(body));
        return op->start();
    }
    int status() const { return op->response().status; }
    Json body() const { return parse(op->response().body); }
    std::string error_code() const {
        Json j = body();
        return jstr(j.get(), "error.code");
    }
};

// The command is an EVALSHA of its script, with `keys` as KEYS; its ARGV.
std::vector<std::string> expect_eval(const std::optional<Command> &c, const std::vector<std::string> &keys) {
    EXPECT_TRUE(c.has_value());
    if (!c) return {};
    const std::vector<std::string> &argv = c->argv;
    EXPECT_GE(argv.size(), 3u);
    if (argv.size() < 3) return {};
    EXPECT_EQ(argv[0], "EVALSHA");
    EXPECT_NE(c->script, nullptr);
    if (c->script != nullptr) EXPECT_EQ(argv[1], sha1_hex(*c->script));
    EXPECT_EQ(argv[2], std::to_string(keys.size()));
    EXPECT_GE(argv.size(), 3 + keys.size());
    if (argv.size() < 3 + keys.size()) return {};
    EXPECT_EQ(std::vector<std::string>(argv.begin() + 3, argv.begin() + 3 + static_cast<long>(keys.size())), keys);
    return std::vector<std::string>(argv.begin() + 3 + static_cast<long>(keys.size()), argv.end());
}

// The apply script's ARGV as its parts.
struct ApplyArgs {
    std::string need, member, type;
    Fields event, set;
    std::vector<std::string> del;
    std::string guard_field, guard_value;
};
ApplyArgs split_apply(const std::vector<std::string> &args) {
    ApplyArgs a;
    EXPECT_GE(args.size(), 6u);
    if (args.size() < 6) return a;
    a.need = args[0];
    a.member = args[1];
    a.type = args[2];
    std::size_t p = 3;
    auto pairs = [&](Fields &out) {
        const std::size_t n = std::stoul(args.at(p));
        for (std::size_t i = 0; i < n; ++i) out.emplace_back(args.at(p + 1 + 2 * i), args.at(p + 2 + 2 * i));
        p += 1 + 2 * n;
    };
    pairs(a.event);
    pairs(a.set);
    const std::size_t d = std::stoul(args.at(p));
    for (std::size_t i = 0; i < d; ++i) a.del.push_back(args.at(p + 1 + i));
    a.guard_field = args.at(p + 1 + d);
    a.guard_value = args.at(p + 2 + d);
    EXPECT_EQ(p + 3 + d, args.size()) << "trailing apply arguments";
    return a;
}

const std::string *get(const Fields &f, const std::string &name) { return field(f, name); }

// ---------------------------------------------------------------- POST /keys

TEST_F(AdminOpsTest, CreateKeyInAFileProject) {
    std::optional<Command> c =
        start("POST", "/keys", "", R"({"project":"acme-prod","id":"key_new","name":"ci","limits":{"monthly_usd":"3"}})");
    // A file project: its org is known. First the new secret's lookup (a
    // fresh secret nobody presents yet), then the id (each global: a slot
    // of its own), then the org's record.
    ASSERT_TRUE(c);
    ASSERT_GE(c->argv.size(), 4u);
    const std::string lookup_key = c->argv[3];
    ASSERT_EQ(lookup_key.rfind("sc:key:", 0), 0u);
    const std::string sha = lookup_key.substr(7);
    EXPECT_EQ(sha.size(), 64u);
    EXPECT_EQ(expect_eval(c, {lookup_key}), (std::vector<std::string>{"acme", "key_new", "acme-prod"}));
    c = op->next(integer(1));
    EXPECT_EQ(expect_eval(c, {"sc:keyid:key_new"}), (std::vector<std::string>{"acme"}));

    c = op->next(integer(1));
    const std::vector<std::string> args =
        expect_eval(c, {"sc:{acme}:key:key_new", "sc:{acme}:config", "sc:{acme}:events", "sc:{acme}:keys"});
    const ApplyArgs a = split_apply(args);
    EXPECT_EQ(a.need, "absent");
    EXPECT_EQ(a.member, "key_new");
    EXPECT_EQ(a.type, "key_created");
    EXPECT_EQ(a.event, (Fields{{"id", "key_new"}, {"project", "acme-prod"}, {"by", "api"}}));
    ASSERT_NE(get(a.set, "sha256"), nullptr);
    EXPECT_EQ(*get(a.set, "sha256"), sha);
    EXPECT_EQ(*get(a.set, "source"), "api");
    EXPECT_EQ(*get(a.set, "project"), "acme-prod");
    EXPECT_EQ(*get(a.set, "name"), "ci");
    EXPECT_EQ(*get(a.set, "revoked"), "0");
    EXPECT_EQ(*get(a.set, "created_at"), std::to_string(kNow));
    EXPECT_EQ(*get(a.set, "expires_at"), "");
    ASSERT_NE(get(a.set, "limits"), nullptr);
    EXPECT_EQ(*get(a.set, "limits"), R"({"monthly_usd":"3.00"})");
    EXPECT_TRUE(a.del.empty());
    EXPECT_EQ(op->change(), "");  // nothing done yet

    c = op->next(applied(false, a.set));
    EXPECT_FALSE(c);
    EXPECT_EQ(status(), 201);
    Json j = body();
    const std::string secret = jstr(j.get(), "secret");
    EXPECT_EQ(secret.rfind("sk-sc-", 0), 0u) << secret;
    EXPECT_GE(secret.size(), 6u + 43u);
    EXPECT_EQ(sha256_hex(secret), sha);  // the lookup is the secret's hash
    EXPECT_EQ(jstr(j.get(), "id"), "key_new");
    EXPECT_EQ(jstr(j.get(), "org"), "acme");
    EXPECT_EQ(jstr(j.get(), "project"), "acme-prod");
    EXPECT_EQ(jstr(j.get(), "name"), "ci");
    EXPECT_EQ(jstr(j.get(), "source"), "api");
    EXPECT_EQ(jstr(j.get(), "limits.monthly_usd"), "3.00");
    EXPECT_TRUE(jfalse(j.get(), "revoked"));
    EXPECT_TRUE(jnull(j.get(), "expires_at"));
    EXPECT_EQ(jstr(j.get(), "created_at"), "2026-11-18T11:06:40Z");
    EXPECT_EQ(op->response().body.find(sha), std::string::npos);  // no hash in the answer
    EXPECT_EQ(op->change(), "key_created key_new");
}

TEST_F(AdminOpsTest, CreateKeyWithoutIdGeneratesOneAndEachSecretIsNew) {
    std::optional<Command> c = start("POST", "/keys", "", R"({"project":"acme-prod"})");
    ASSERT_TRUE(c);
    ASSERT_GE(c->argv.size(), 4u);
    const std::string lookup_key = c->argv[3];
    std::unique_ptr<Operation> other = make("POST", "/keys", "", R"({"project":"acme-prod"})");
    std::optional<Command> c2 = other->start();
    ASSERT_TRUE(c2);
    EXPECT_NE(c2->argv[3], lookup_key);

    c = op->next(integer(1));
    ASSERT_TRUE(c);
    const std::string id_key = c->argv[3];
    ASSERT_EQ(id_key.rfind("sc:keyid:key_", 0), 0u) << id_key;
    const std::string id = id_key.substr(9);
    EXPECT_TRUE(valid_id(id));
    c2 = other->next(integer(1));
    ASSERT_TRUE(c2);
    EXPECT_NE(c2->argv[3], id_key);

    c = op->next(integer(1));
    ASSERT_TRUE(c);
    EXPECT_EQ(c->argv[3], "sc:{acme}:key:" + id);
    c = op->next(applied(false, {{"source", "api"}, {"project", "acme-prod"}, {"limits", "{}"}}));
    EXPECT_FALSE(c);
    EXPECT_EQ(status(), 201);
    Json j = body();
    EXPECT_EQ(jstr(j.get(), "id"), id);
    EXPECT_TRUE(jnull(j.get(), "name"));
}

TEST_F(AdminOpsTest, CreateKeyWhoseIdIsTakenIs409) {
    // The id is taken (SET NX refused): the new secret's lookup is deleted
    // again, then 409.
    std::optional<Command> c = start("POST", "/keys", "", R"({"project":"acme-prod","id":"key_dup"})");
    ASSERT_TRUE(c);
    std::string lookup_key = c->argv.at(3);
    c = op->next(integer(1));
    EXPECT_EQ(expect_eval(c, {"sc:keyid:key_dup"}), (std::vector<std::string>{"acme"}));
    c = op->next(integer(0));
    EXPECT_EQ(expect_eval(c, {lookup_key}), std::vector<std::string>{});
    ASSERT_TRUE(c);
    ASSERT_NE(c->script, nullptr);
    EXPECT_NE(c->script->find("DEL"), std::string::npos);
    EXPECT_FALSE(op->next(integer(1)));
    EXPECT_EQ(status(), 409);
    EXPECT_EQ(error_code(), "conflict");
    EXPECT_EQ(op->change(), "");

    // The org step's `absent` failed (a record with that id): the same.
    c = start("POST", "/keys", "", R"({"project":"acme-prod","id":"key_dup"})");
    ASSERT_TRUE(c);
    lookup_key = c->argv.at(3);
    c = op->next(integer(1));
    ASSERT_TRUE(c);
    c = op->next(integer(1));
    ASSERT_TRUE(c);
    c = op->next(integer(0));
    EXPECT_EQ(expect_eval(c, {lookup_key}), std::vector<std::string>{});
    ASSERT_TRUE(c);
    ASSERT_NE(c->script, nullptr);
    EXPECT_NE(c->script->find("DEL"), std::string::npos);
    EXPECT_EQ(op->change(), "");
    EXPECT_FALSE(op->next(integer(1)));
    EXPECT_EQ(status(), 409);
    EXPECT_EQ(error_code(), "conflict");
    EXPECT_EQ(op->change(), "");
}

TEST_F(AdminOpsTest, CreateKeyInAnApiProjectAsksItsOrgFirst) {
    std::optional<Command> c = start("POST", "/keys", "", R"({"project":"beta-proj","id":"key_b"})");
    EXPECT_EQ(expect_eval(c, {"sc:project:beta-proj"}), std::vector<std::string>{});
    c = op->next(str("beta"));
    ASSERT_TRUE(c);
    EXPECT_EQ(expect_eval(c, {c->argv.at(3)}), (std::vector<std::string>{"beta", "key_b", "beta-proj"}));
    c = op->next(integer(1));
    EXPECT_EQ(expect_eval(c, {"sc:keyid:key_b"}), (std::vector<std::string>{"beta"}));
    c = op->next(integer(1));
    expect_eval(c, {"sc:{beta}:key:key_b", "sc:{beta}:config", "sc:{beta}:events", "sc:{beta}:keys"});
    EXPECT_FALSE(op->next(applied(false, {{"source", "api"}, {"project", "beta-proj"}})));
    EXPECT_EQ(status(), 201);
    Json j = body();
    EXPECT_EQ(jstr(j.get(), "org"), "beta");
    EXPECT_EQ(jstr(j.get(), "project"), "beta-proj");
}

TEST_F(AdminOpsTest, CreateKeyInAnUnknownProjectIs404) {
    std::optional<Command> c = start("POST", "/keys", "", R"({"project":"nope"})");
    expect_eval(c, {"sc:project:nope"});
    EXPECT_FALSE(op->next(nil()));
    EXPECT_EQ(status(), 404);
    EXPECT_EQ(error_code(), "not_found");
    EXPECT_EQ(op->change(), "");
}

TEST_F(AdminOpsTest, CreateKeyWithABadBodyIs400WithoutAnyCommand) {
    for (const char *bad : {R"({"project":"acme-prod","limits":{"monthly_usd":"ten"}})",
                            R"({"project":"acme-prod","limits":{"hourly_usd":1}})",
                            R"({"project":"acme-prod","limits":{"rpm":-1}})", R"({"id":"x"})", "not json",
                            R"({"project":"acme-prod","colour":"red"})"}) {
        EXPECT_FALSE(start("POST", "/keys", "", bad)) << bad;
        EXPECT_EQ(status(), 400) << bad;
        EXPECT_EQ(error_code(), "invalid_request") << bad;
    }
    EXPECT_FALSE(start("POST", "/keys", "", R"({"project":"acme-prod","limits":{"monthly_usd":"ten"}})"));
    Json j = body();
    EXPECT_NE(jstr(j.get(), "error.message").find("monthly_usd"), std::string::npos) << op->response().body;
}

TEST_F(AdminOpsTest, CreatingAFileKeysIdIs409WithoutAnyCommand) {
    EXPECT_FALSE(start("POST", "/keys", "", R"({"project":"acme-prod","id":"k1"})"));
    EXPECT_EQ(status(), 409);
    EXPECT_EQ(error_code(), "conflict");
    EXPECT_EQ(op->change(), "");
}

// ---------------------------------------------------------------- GET /keys/ID

TEST_F(AdminOpsTest, GetFileKeyReadsItsRecord) {
    std::optional<Command> c = start("GET", "/keys/k1");
    EXPECT_EQ(expect_eval(c, {"sc:{acme}:key:k1"}), std::vector<std::string>{});
    ASSERT_TRUE(c);
    EXPECT_EQ(c->argv.size(), 4u);
    EXPECT_FALSE(op->next(array({})));
    EXPECT_EQ(status(), 200);
    Json j = body();
    EXPECT_EQ(jstr(j.get(), "id"), "k1");
    EXPECT_EQ(jstr(j.get(), "source"), "file");
    EXPECT_EQ(jstr(j.get(), "org"), "acme");
    EXPECT_EQ(jstr(j.get(), "project"), "acme-prod");
    EXPECT_EQ(jstr(j.get(), "limits.monthly_usd"), "10.00");
    EXPECT_TRUE(jfalse(j.get(), "revoked"));
    EXPECT_EQ(at(j.get(), "secret"), nullptr);
    EXPECT_EQ(op->change(), "");

    // With a record: its fields over the file's.
    start("GET", "/keys/k1");
    EXPECT_FALSE(op->next(fields({{"source", "file"}, {"limits", R"({"rpm":5})"}, {"revoked", "1"}})));
    EXPECT_EQ(status(), 200);
    j = body();
    EXPECT_EQ(jint(j.get(), "limits.rpm"), 5);
    EXPECT_EQ(at(j.get(), "limits.monthly_usd"), nullptr);
    EXPECT_TRUE(jtrue(j.get(), "revoked"));
    EXPECT_EQ(jstr(j.get(), "source"), "file");
}

TEST_F(AdminOpsTest, GetApiKeyFindsItsOrgThenItsRecord) {
    std::optional<Command> c = start("GET", "/keys/key_a");
    expect_eval(c, {"sc:keyid:key_a"});
    c = op->next(str("beta"));
    expect_eval(c, {"sc:{beta}:key:key_a"});
    EXPECT_FALSE(op->next(fields({{"source", "api"}, {"project", "beta-proj"}, {"created_at", "1790000000"}})));
    EXPECT_EQ(status(), 200);
    Json j = body();
    EXPECT_EQ(jstr(j.get(), "source"), "api");
    EXPECT_EQ(jstr(j.get(), "org"), "beta");
    EXPECT_EQ(jstr(j.get(), "project"), "beta-proj");

    // Indexed but its record is gone: 404.
    start("GET", "/keys/key_a");
    ASSERT_TRUE(op->next(str("beta")));
    EXPECT_FALSE(op->next(array({})));
    EXPECT_EQ(status(), 404);
}

TEST_F(AdminOpsTest, GetUnknownKeyIs404) {
    std::optional<Command> c = start("GET", "/keys/nobody");
    expect_eval(c, {"sc:keyid:nobody"});
    EXPECT_FALSE(op->next(nil()));
    EXPECT_EQ(status(), 404);
    EXPECT_EQ(error_code(), "not_found");
    // An index holding something that is no org id: 404 as well.
    start("GET", "/keys/nobody");
    EXPECT_FALSE(op->next(str("no{good}")));
    EXPECT_EQ(status(), 404);
}

// ---------------------------------------------------------------- changes of a key

TEST_F(AdminOpsTest, RevokeFileKey) {
    std::optional<Command> c = start("DELETE", "/keys/k1");
    const ApplyArgs a =
        split_apply(expect_eval(c, {"sc:{acme}:key:k1", "sc:{acme}:config", "sc:{acme}:events"}));
    EXPECT_EQ(a.need, "any");  // a file key's record may not exist yet
    EXPECT_EQ(a.member, "");
    EXPECT_EQ(a.type, "key_revoked");
    EXPECT_EQ(a.event, (Fields{{"id", "k1"}, {"by", "api"}}));
    EXPECT_EQ(a.set, (Fields{{"revoked", "1"}, {"source", "file"}}));
    EXPECT_TRUE(a.del.empty());
    EXPECT_FALSE(op->next(applied(false, {{"revoked", "1"}, {"source", "file"}})));
    EXPECT_EQ(status(), 200);
    Json j = body();
    EXPECT_TRUE(jtrue(j.get(), "revoked"));
    EXPECT_EQ(jstr(j.get(), "id"), "k1");
    EXPECT_EQ(jstr(j.get(), "source"), "file");
    EXPECT_EQ(op->change(), "key_revoke k1");
}

TEST_F(AdminOpsTest, RevokeApiKeyNeedsItsRecord) {
    std::optional<Command> c = start("DELETE", "/keys/key_a");
    expect_eval(c, {"sc:keyid:key_a"});
    c = op->next(str("beta"));
    const ApplyArgs a = split_apply(expect_eval(c, {"sc:{beta}:key:key_a", "sc:{beta}:config", "sc:{beta}:events"}));
    EXPECT_EQ(a.need, "exists");
    EXPECT_EQ(a.set, (Fields{{"revoked", "1"}}));
    EXPECT_FALSE(op->next(integer(0)));  // `exists` did not hold
    EXPECT_EQ(status(), 404);
    EXPECT_EQ(op->change(), "");

    start("DELETE", "/keys/key_a");
    ASSERT_TRUE(op->next(str("beta")));
    EXPECT_FALSE(op->next(applied(true, {{"source", "api"}, {"project", "beta-proj"}, {"revoked", "1"}})));
    EXPECT_EQ(status(), 200);
    Json j = body();
    EXPECT_TRUE(jtrue(j.get(), "revoked"));
    EXPECT_EQ(jstr(j.get(), "source"), "api");
    EXPECT_EQ(op->change(), "key_revoke key_a");
}

TEST_F(AdminOpsTest, PutAndDeleteKeyLimits) {
    std::optional<Command> c = start("PUT", "/keys/k1/limits", "", R"({"daily_usd":1.5,"rpm":7})");
    ApplyArgs a = split_apply(expect_eval(c, {"sc:{acme}:key:k1", "sc:{acme}:config", "sc:{acme}:events"}));
    const std::string limits = R"({"daily_usd":"1.50","rpm":7})";
    EXPECT_EQ(a.need, "any");
    EXPECT_EQ(a.type, "limits_changed");
    EXPECT_EQ(a.event, (Fields{{"scope", "key"}, {"id", "k1"}, {"limits", limits}, {"by", "api"}}));
    EXPECT_EQ(a.set, (Fields{{"limits", limits}, {"source", "file"}}));
    EXPECT_TRUE(a.del.empty());
    EXPECT_FALSE(op->next(applied(false, {{"limits", limits}, {"source", "file"}})));
    EXPECT_EQ(status(), 200);
    Json j = body();
    EXPECT_EQ(jstr(j.get(), "limits.daily_usd"), "1.50");
    EXPECT_EQ(jint(j.get(), "limits.rpm"), 7);
    EXPECT_EQ(at(j.get(), "limits.monthly_usd"), nullptr);  // replaced whole
    EXPECT_EQ(op->change(), "key_limits_put k1");

    c = start("DELETE", "/keys/k1/limits");
    a = split_apply(expect_eval(c, {"sc:{acme}:key:k1", "sc:{acme}:config", "sc:{acme}:events"}));
    EXPECT_EQ(a.type, "limits_changed");
    // the event names the limits now in force: the file's
    EXPECT_EQ(a.event, (Fields{{"scope", "key"}, {"id", "k1"}, {"limits", R"({"monthly_usd":"10.00"})"}, {"by", "api"}}));
    EXPECT_EQ(a.set, (Fields{{"source", "file"}}));
    EXPECT_EQ(a.del, std::vector<std::string>{"limits"});
    // the raw tail: the HDEL of limits, then the guard: nothing to do (and no
    // event) when the record has no limits
    ASSERT_GE(c->argv.size(), 4u);
    EXPECT_EQ(std::vector<std::string>(c->argv.end() - 4, c->argv.end()),
              (std::vector<std::string>{"1", "limits", "limits", ""}));
    EXPECT_FALSE(op->next(applied(true, {{"source", "file"}})));
    EXPECT_EQ(status(), 200);
    j = body();
    EXPECT_EQ(jstr(j.get(), "limits.monthly_usd"), "10.00");  // the file's again
    EXPECT_EQ(op->change(), "key_limits_delete k1");

    // Deleted again: the script's guard found nothing to delete; no change to log.
    c = start("DELETE", "/keys/k1/limits");
    EXPECT_FALSE(op->next(applied(true, {{"source", "file"}}, false)));
    EXPECT_EQ(status(), 200);
    EXPECT_EQ(op->change(), "");

    // A bad LIMITS body: 400 before any command.
    EXPECT_FALSE(start("PUT", "/keys/k1/limits", "", R"({"monthly_usd":"-1"})"));
    EXPECT_EQ(status(), 400);
}

TEST_F(AdminOpsTest, RotateFileKey) {
    std::optional<Command> c = start("POST", "/keys/k1/rotate", "", R"({"grace_seconds":60})");
    expect_eval(c, {"sc:{acme}:key:k1"});
    c = op->next(array({}));
    ASSERT_TRUE(c);
    ASSERT_GE(c->argv.size(), 4u);
    const std::string lookup_key = c->argv[3];
    ASSERT_EQ(lookup_key.rfind("sc:key:", 0), 0u);
    const std::string sha = lookup_key.substr(7);
    EXPECT_EQ(expect_eval(c, {lookup_key}), (std::vector<std::string>{"acme", "k1", "acme-prod"}));
    c = op->next(integer(1));
    EXPECT_EQ(expect_eval(c, {"sc:{acme}:key:k1", "sc:{acme}:config", "sc:{acme}:events"}),
              (std::vector<std::string>{k1_sha(), sha, std::to_string((kNow + 60) * 1000), "k1", "60", "any",
                                        std::to_string(kNow + 60)}));
    EXPECT_FALSE(op->next(fields({{"old_sha256", k1_sha()},
                                  {"old_until", std::to_string(kNow + 60)},
                                  {"old_until_ms", std::to_string((kNow + 60) * 1000)},
                                  {"sha256", sha},
                                  {"source", "file"}})));
    EXPECT_EQ(status(), 200);
    Json j = body();
    EXPECT_EQ(sha256_hex(jstr(j.get(), "secret")), sha);
    EXPECT_EQ(jstr(j.get(), "limits.monthly_usd"), "10.00");
    EXPECT_EQ(op->change(), "key_rotated k1");
}

// ---------------------------------------------------------------- top-ups

TEST_F(AdminOpsTest, TopupAppliesOnceAndAReplayAnswersTheSame) {
    const char *body_text = R"({"amount_usd":"0.000001","idempotency_key":"t-1"})";
    std::optional<Command> c = start("POST", "/orgs/acme/topups", "", body_text);
    EXPECT_EQ(expect_eval(c, {"sc:{acme}:topup:" + sha256_hex("t-1"), "sc:{acme}:balance", "sc:{acme}:events",
                              "sc:{acme}:balance:held"}),
              (std::vector<std::string>{"1000", "t-1"}));
    EXPECT_FALSE(op->next(array({integer(1), str("1000 5000")})));
    EXPECT_EQ(status(), 200);
    Json j = body();
    EXPECT_TRUE(jtrue(j.get(), "applied"));
    EXPECT_EQ(jstr(j.get(), "org"), "acme");
    EXPECT_EQ(jstr(j.get(), "idempotency_key"), "t-1");
    EXPECT_EQ(jint(j.get(), "amount_nanousd"), 1000);
    EXPECT_EQ(jint(j.get(), "balance_nanousd"), 5000);
    EXPECT_EQ(op->change(), "topup acme");

    // The same key and amount again: the first answer, applied false, no change.
    start("POST", "/orgs/acme/topups", "", body_text);
    EXPECT_FALSE(op->next(array({integer(0), str("1000 5000")})));
    EXPECT_EQ(status(), 200);
    j = body();
    EXPECT_TRUE(jfalse(j.get(), "applied"));
    EXPECT_EQ(jint(j.get(), "amount_nanousd"), 1000);
    EXPECT_EQ(jint(j.get(), "balance_nanousd"), 5000);
    EXPECT_EQ(op->change(), "");

    // The same key for another amount: 409.
    start("POST", "/orgs/acme/topups", "", R"({"amount_usd":"0.000002","idempotency_key":"t-1"})");
    EXPECT_FALSE(op->next(array({integer(0), str("1000 5000")})));
    EXPECT_EQ(status(), 409);
    EXPECT_EQ(error_code(), "conflict");
    EXPECT_EQ(op->change(), "");
}

TEST_F(AdminOpsTest, TopupOfAnUnknownOrgOrABadBody) {
    std::optional<Command> c = start("POST", "/orgs/nope/topups", "", R"({"amount_usd":1,"idempotency_key":"a"})");
    expect_eval(c, {"sc:{nope}:org"});
    EXPECT_FALSE(op->next(array({})));
    EXPECT_EQ(status(), 404);
    for (const char *bad : {R"({"amount_usd":0,"idempotency_key":"a"})", R"({"amount_usd":1})",
                            R"({"amount_usd":"-1","idempotency_key":"a"})", R"({"amount_usd":1,"idempotency_key":""})"}) {
        EXPECT_FALSE(start("POST", "/orgs/acme/topups", "", bad)) << bad;
        EXPECT_EQ(status(), 400) << bad;
    }
    // A malformed script reply: 503, never a guess.
    start("POST", "/orgs/acme/topups", "", R"({"amount_usd":1,"idempotency_key":"a"})");
    EXPECT_FALSE(op->next(array({integer(1)})));
    EXPECT_EQ(status(), 503);
}

// ---------------------------------------------------------------- Redis failing

// Drives `op` with good replies up to step `fail_at`, then an error reply.
struct Script {
    const char *method, *path, *query, *body;
    std::vector<Reply> replies;  // the good answers, in order
};

TEST_F(AdminOpsTest, AnErrorReplyAtAnyStepIs503) {
    const std::vector<Script> scripts = {
        {"POST", "/keys", "", R"({"project":"beta-proj","id":"key_b"})",
         {str("beta"), integer(1), integer(1), applied(false, {{"source", "api"}})}},
        {"GET", "/keys/k1", "", "", {array({})}},
        {"GET", "/keys/key_a", "", "", {str("beta"), fields({{"source", "api"}, {"project", "p"}})}},
        {"DELETE", "/keys/k1", "", "", {applied(false, {{"revoked", "1"}})}},
        {"PUT", "/keys/k1/limits", "", R"({"rpm":1})", {applied(false, {{"limits", R"({"rpm":1})"}})}},
        {"POST", "/orgs/acme/topups", "", R"({"amount_usd":1,"idempotency_key":"a"})",
         {array({integer(1), str("1000000000 1000000000")})}},
        {"GET", "/orgs/acme/events", "", "", {array({})}},
    };
    for (const Script &s : scripts) {
        // All good first: a success.
        std::optional<Command> c = start(s.method, s.path, s.query, s.body);
        for (const Reply &r : s.replies) {
            ASSERT_TRUE(c) << s.method << " " << s.path;
            c = op->next(r);
        }
        EXPECT_FALSE(c) << s.method << " " << s.path;
        EXPECT_LT(status(), 300) << s.method << " " << s.path << ": " << op->response().body;
        // An error at step i.
        for (std::size_t fail_at = 0; fail_at < s.replies.size(); ++fail_at) {
            c = start(s.method, s.path, s.query, s.body);
            for (std::size_t i = 0; i < fail_at; ++i) c = op->next(s.replies[i]);
            ASSERT_TRUE(c) << s.method << " " << s.path << " step " << fail_at;
            EXPECT_FALSE(op->next(error("ERR something"))) << s.path << " step " << fail_at;
            EXPECT_EQ(status(), 503) << s.method << " " << s.path << " step " << fail_at;
            EXPECT_EQ(error_code(), "unavailable") << s.path;
            EXPECT_EQ(op->change(), "") << s.path << " step " << fail_at;
        }
    }
}

TEST_F(AdminOpsTest, NextAfterDoneOrBeforeStartIs503AndNeverCrashes) {
    start("GET", "/keys/k1");
    EXPECT_FALSE(op->next(array({})));
    EXPECT_EQ(status(), 200);
    EXPECT_FALSE(op->next(array({})));
    EXPECT_EQ(status(), 503);
    EXPECT_EQ(error_code(), "unavailable");
    EXPECT_FALSE(op->next(error("ERR x")));
    EXPECT_EQ(status(), 503);

    // A validation error (no command): next() is 503 as well.
    EXPECT_FALSE(start("POST", "/keys", "", "{"));
    EXPECT_FALSE(op->next(integer(1)));
    EXPECT_EQ(status(), 503);

    // Never started.
    op = make("GET", "/keys/k1");
    EXPECT_FALSE(op->next(array({})));
    EXPECT_EQ(status(), 503);
}

TEST_F(AdminOpsTest, MalformedRepliesNeverCrash) {
    const std::vector<Reply> odd = {nil(), integer(7), str("x"), array({str("a")}), array({integer(1), nil()}),
                                    array({array({})}), array({integer(1), array({str("a")})}), error("ERR")};
    const std::vector<std::pair<const char *, const char *>> calls = {
        {"GET", "/keys/k1"},           {"DELETE", "/keys/k1"},       {"GET", "/orgs/acme/events"},
        {"GET", "/orgs/acme/balance"}, {"GET", "/keys/k1/usage"},    {"GET", "/keys/k1/budgets"},
        {"GET", "/orgs/acme"},         {"GET", "/projects/acme-prod"}};
    for (const auto &[method, path] : calls) {
        for (const Reply &r : odd) {
            std::optional<Command> c = start(method, path);
            ASSERT_TRUE(c) << path;
            for (int i = 0; i < 5 && c; ++i) EXPECT_NO_THROW(c = op->next(r)) << path;
            EXPECT_FALSE(c) << path;
            EXPECT_GE(status(), 200) << path;
            EXPECT_NE(body(), nullptr) << path;
        }
    }
}

// ---------------------------------------------------------------- events

TEST_F(AdminOpsTest, EventsAreTheStreamOldestFirst) {
    std::optional<Command> c = start("GET", "/orgs/acme/events", "after=1700000000000-0&count=2");
    EXPECT_EQ(expect_eval(c, {"sc:{acme}:events"}), (std::vector<std::string>{"(1700000000000-0", "2"}));
    const Reply xrange = array({
        array({str("1700000000001-0"), fields({{"type", "topup"}, {"amount_nanousd", "1000"}, {"by", "api"}})}),
        array({str("1700000000002-5"), fields({{"type", "key_revoked"}, {"id", "k1"}, {"by", "api"}})}),
    });
    EXPECT_FALSE(op->next(xrange));
    EXPECT_EQ(status(), 200);
    Json j = body();
    json_t *events = at(j.get(), "events");
    ASSERT_TRUE(json_is_array(events)) << op->response().body;
    ASSERT_EQ(json_array_size(events), 2u);
    EXPECT_EQ(jstr(json_array_get(events, 0), "id"), "1700000000001-0");
    EXPECT_EQ(jstr(json_array_get(events, 0), "type"), "topup");
    EXPECT_EQ(jstr(json_array_get(events, 0), "amount_nanousd"), "1000");
    EXPECT_EQ(jstr(json_array_get(events, 1), "id"), "1700000000002-5");
    EXPECT_EQ(jstr(json_array_get(events, 1), "type"), "key_revoked");
    EXPECT_EQ(jstr(json_array_get(events, 1), "data_id"), "k1");  // the stream id keeps "id"
    EXPECT_EQ(jstr(j.get(), "next"), "1700000000002-5");
    EXPECT_EQ(op->change(), "");

    // From the start, default count; nothing there.
    c = start("GET", "/orgs/acme/events");
    EXPECT_EQ(expect_eval(c, {"sc:{acme}:events"}), (std::vector<std::string>{"-", "100"}));
    EXPECT_FALSE(op->next(array({})));
    EXPECT_EQ(status(), 200);
    j = body();
    EXPECT_EQ(json_array_size(at(j.get(), "events")), 0u);
    EXPECT_TRUE(jnull(j.get(), "next"));

    // The newest N: the script's "latest" mode (it answers them oldest first).
    c = start("GET", "/orgs/acme/events", "latest=20");
    EXPECT_EQ(expect_eval(c, {"sc:{acme}:events"}), (std::vector<std::string>{"-", "20", "latest"}));
    EXPECT_FALSE(op->next(array({array({str("9-0"), fields({{"type", "topup"}})})})));
    EXPECT_EQ(jstr(body().get(), "next"), "9-0");

    // Nothing after `after`: next stays `after`.
    start("GET", "/orgs/acme/events", "after=5-1");
    EXPECT_FALSE(op->next(array({})));
    j = body();
    EXPECT_EQ(jstr(j.get(), "next"), "5-1");

    // A malformed entry: 503.
    start("GET", "/orgs/acme/events");
    EXPECT_FALSE(op->next(array({array({str("1-0")})})));
    EXPECT_EQ(status(), 503);

    // An org that is neither in the file nor a record: 404.
    c = start("GET", "/orgs/ghost/events");
    expect_eval(c, {"sc:{ghost}:org"});
    EXPECT_FALSE(op->next(array({})));
    EXPECT_EQ(status(), 404);
}

// ---------------------------------------------------------------- projects, orgs, customers, balance

TEST_F(AdminOpsTest, PutApiProjectIndexesItThenAppliesItsRecord) {
    std::optional<Command> c = start("PUT", "/projects/p2", "", R"({"org":"acme","limits":{"rpm":3}})");
    EXPECT_EQ(expect_eval(c, {"sc:project:p2"}), std::vector<std::string>{"acme"});
    c = op->next(str(""));
    const ApplyArgs a = split_apply(
        expect_eval(c, {"sc:{acme}:project:p2", "sc:{acme}:config", "sc:{acme}:events", "sc:{acme}:projects"}));
    EXPECT_EQ(a.need, "any");
    EXPECT_EQ(a.member, "p2");
    EXPECT_EQ(a.type, "limits_changed");
    EXPECT_EQ(a.set, (Fields{{"source", "api"}, {"limits", R"({"rpm":3})"}}));
    EXPECT_FALSE(op->next(applied(false, a.set)));
    EXPECT_EQ(status(), 201);
    Json j = body();
    EXPECT_EQ(jstr(j.get(), "id"), "p2");
    EXPECT_EQ(jstr(j.get(), "org"), "acme");
    EXPECT_EQ(jstr(j.get(), "source"), "api");
    EXPECT_EQ(jint(j.get(), "limits.rpm"), 3);
    EXPECT_EQ(op->change(), "project_put p2");

    // Replaced: 200.
    start("PUT", "/projects/p2", "", R"({"org":"acme"})");
    ASSERT_TRUE(op->next(str("")));
    EXPECT_FALSE(op->next(applied(true, {{"source", "api"}, {"limits", "{}"}})));
    EXPECT_EQ(status(), 200);

    // The project belongs to another org already: 409, nothing applied.
    start("PUT", "/projects/p2", "", R"({"org":"acme"})");
    EXPECT_FALSE(op->next(str("beta")));
    EXPECT_EQ(status(), 409);
    EXPECT_EQ(op->change(), "");

    // A file project under another org: 409 at once.
    EXPECT_FALSE(start("PUT", "/projects/acme-prod", "", R"({"org":"beta"})"));
    EXPECT_EQ(status(), 409);
}

TEST_F(AdminOpsTest, PutApiOrgWritesEveryField) {
    std::optional<Command> c =
        start("PUT", "/orgs/beta", "", R"({"plan":"free","prepaid":true,"low_balance_usd":"2"})");
    const ApplyArgs a = split_apply(expect_eval(c, {"sc:{beta}:org", "sc:{beta}:config", "sc:{beta}:events"}));
    EXPECT_EQ(a.need, "any");
    EXPECT_EQ(a.set, (Fields{{"source", "api"},
                             {"plan", "free"},
                             {"created_at", ""},
                             {"prepaid", "1"},
                             {"low_balance", "2000000000"},
                             {"timezone", ""},
                             {"limits", "{}"}}));
    c = op->next(applied(false, a.set));
    // An API org is added to sc:orgs (the sweeper visits it), then its cleared spend read.
    EXPECT_EQ(expect_eval(c, {"sc:orgs"}), std::vector<std::string>{"beta"});
    c = op->next(integer(1));
    expect_eval(c, {"sc:{beta}:cleared"});
    EXPECT_FALSE(op->next(str("7")));
    EXPECT_EQ(status(), 201);
    Json j = body();
    EXPECT_EQ(jstr(j.get(), "id"), "beta");
    EXPECT_EQ(jstr(j.get(), "plan"), "free");
    EXPECT_TRUE(jtrue(j.get(), "prepaid"));
    EXPECT_EQ(jint(j.get(), "low_balance_nanousd"), 2000000000);
    EXPECT_EQ(jint(j.get(), "cleared_nanousd"), 7);
    EXPECT_EQ(jstr(j.get(), "source"), "api");
    EXPECT_EQ(op->change(), "org_put beta");

    // A plan the file does not define: 400 before any command.
    EXPECT_FALSE(start("PUT", "/orgs/beta", "", R"({"plan":"gold"})"));
    EXPECT_EQ(status(), 400);
    // low_balance_usd without prepaid: 400.
    EXPECT_FALSE(start("PUT", "/orgs/beta", "", R"({"low_balance_usd":"2"})"));
    EXPECT_EQ(status(), 400);
}

TEST_F(AdminOpsTest, CustomerLimitsOverTheDefaults) {
    std::optional<Command> c = start("PUT", "/orgs/acme/customers/c1/limits", "", R"({"rpm":4})");
    const ApplyArgs a =
        split_apply(expect_eval(c, {"sc:{acme}:customer:c1", "sc:{acme}:config", "sc:{acme}:events"}));
    EXPECT_EQ(a.need, "any");
    EXPECT_EQ(a.set, (Fields{{"limits", R"({"rpm":4})"}}));
    EXPECT_EQ(a.event,
              (Fields{{"scope", "customer"}, {"id", "c1"}, {"org", "acme"}, {"limits", R"({"rpm":4})"}, {"by", "api"}}));
    EXPECT_FALSE(op->next(applied(false, a.set)));
    EXPECT_EQ(status(), 200);
    Json j = body();
    EXPECT_EQ(jstr(j.get(), "customer"), "c1");
    EXPECT_EQ(jint(j.get(), "limits.rpm"), 4);

    c = start("DELETE", "/orgs/acme/customers/c1/limits");
    const ApplyArgs d =
        split_apply(expect_eval(c, {"sc:{acme}:customer:c1", "sc:{acme}:config", "sc:{acme}:events"}));
    EXPECT_TRUE(d.set.empty());
    EXPECT_EQ(d.del, std::vector<std::string>{"limits"});
}

TEST_F(AdminOpsTest, BalanceAddsTheHeldReservationsBack) {
    std::optional<Command> c = start("GET", "/orgs/acme/balance");
    expect_eval(c, {"sc:{acme}:balance", "sc:{acme}:balance:held"});
    c = op->next(array({str("3000"), str("2000")}));
    expect_eval(c, {"sc:{acme}:org"});
    EXPECT_FALSE(op->next(array({})));
    EXPECT_EQ(status(), 200);
    Json j = body();
    EXPECT_EQ(jint(j.get(), "balance_nanousd"), 5000);
    EXPECT_EQ(jint(j.get(), "reserved_nanousd"), 2000);
    EXPECT_EQ(jint(j.get(), "available_nanousd"), 3000);
    EXPECT_TRUE(jnull(j.get(), "low_balance_nanousd"));
    // Missing counters are 0.
    start("GET", "/orgs/acme/balance");
    ASSERT_TRUE(op->next(array({nil(), nil()})));
    EXPECT_FALSE(op->next(array({})));
    j = body();
    EXPECT_EQ(jint(j.get(), "balance_nanousd"), 0);
}

// ---------------------------------------------------------------- lists and daily usage

TEST_F(AdminOpsTest, DailyUsageOfAFileOrgIsOneMgetOfItsDays) {
    std::optional<Command> c = start("GET", "/orgs/acme/usage/daily", "days=3");
    // today is 2026-11-18 (kNow): the 16th, 17th and 18th, spend, requests and tokens of each
    expect_eval(c, {"sc:{acme}:spend:org:acme:d:2026-11-16", "sc:{acme}:reqs:org:acme:d:2026-11-16",
                    "sc:{acme}:tokens:org:acme:d:2026-11-16", "sc:{acme}:spend:org:acme:d:2026-11-17",
                    "sc:{acme}:reqs:org:acme:d:2026-11-17", "sc:{acme}:tokens:org:acme:d:2026-11-17",
                    "sc:{acme}:spend:org:acme:d:2026-11-18", "sc:{acme}:reqs:org:acme:d:2026-11-18",
                    "sc:{acme}:tokens:org:acme:d:2026-11-18"});
    ASSERT_TRUE(c);
    EXPECT_EQ(c->script, &scripts::mget().text);
    EXPECT_FALSE(op->next(array({str("7"), str("1"), str("30"), nil(), nil(), nil(), str("2000000000"), integer(2),
                                 str("50")})));
    EXPECT_EQ(status(), 200);
    EXPECT_EQ(op->response().content_type, "application/json");
    EXPECT_EQ(op->response().body,
              R"({"scope":"org","id":"acme","org":"acme","days":[)"
              R"({"date":"2026-11-16","spent_nanousd":7,"spent_usd":"0.000000007","requests":1,"tokens":30},)"
              R"({"date":"2026-11-17","spent_nanousd":0,"spent_usd":"0.00","requests":0,"tokens":0},)"
              R"({"date":"2026-11-18","spent_nanousd":2000000000,"spent_usd":"2.00","requests":2,"tokens":50}]})");
    EXPECT_EQ(op->change(), "");

    // 30 days when not given; as CSV
    c = start("GET", "/orgs/acme/usage/daily", "format=csv");
    ASSERT_TRUE(c);
    ASSERT_EQ(c->argv.size(), 3u + 90u);
    EXPECT_EQ(c->argv[3], "sc:{acme}:spend:org:acme:d:2026-10-20");
    EXPECT_EQ(c->argv.back(), "sc:{acme}:tokens:org:acme:d:2026-11-18");
    std::vector<Reply> values(90);
    values[89] = str("12");
    EXPECT_FALSE(op->next(array(values)));
    EXPECT_EQ(status(), 200);
    EXPECT_EQ(op->response().content_type, "text/csv; charset=utf-8");
    const std::string &csv = op->response().body;
    EXPECT_EQ(csv.rfind("date,spent_usd,spent_nanousd,requests,tokens\n2026-10-20,0.00,0,0,0\n", 0), 0u) << csv;
    EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 31);
    EXPECT_NE(csv.find("\n2026-11-18,0.00,0,0,12\n"), std::string::npos) << csv;

    // a reply that is not one value per key: 503
    start("GET", "/orgs/acme/usage/daily", "days=1");
    EXPECT_FALSE(op->next(array({nil()})));
    EXPECT_EQ(status(), 503);
}

TEST_F(AdminOpsTest, DailyUsageFindsTheScopesOrgFirst) {
    // an API key: its org from its index
    std::optional<Command> c = start("GET", "/keys/key_a/usage/daily", "days=1");
    expect_eval(c, {"sc:keyid:key_a"});
    c = op->next(str("beta"));
    // an API org: its record for its time zone
    expect_eval(c, {"sc:{beta}:org"});
    c = op->next(array({str("source"), str("api")}));
    expect_eval(c, {"sc:{beta}:spend:key:key_a:d:2026-11-18", "sc:{beta}:reqs:key:key_a:d:2026-11-18",
                    "sc:{beta}:tokens:key:key_a:d:2026-11-18"});
    EXPECT_FALSE(op->next(array({str("5"), str("1"), str("9")})));
    Json j = body();
    EXPECT_EQ(jstr(j.get(), "scope"), "key");
    EXPECT_EQ(jstr(j.get(), "org"), "beta");
    // unknown: 404
    start("GET", "/keys/nobody/usage/daily");
    EXPECT_FALSE(op->next(nil()));
    EXPECT_EQ(status(), 404);

    // a file key, project and org need no lookup
    c = start("GET", "/keys/k1/usage/daily", "days=1");
    expect_eval(c, {"sc:{acme}:spend:key:k1:d:2026-11-18", "sc:{acme}:reqs:key:k1:d:2026-11-18",
                    "sc:{acme}:tokens:key:k1:d:2026-11-18"});
    c = start("GET", "/projects/acme-prod/usage/daily", "days=1");
    expect_eval(c, {"sc:{acme}:spend:project:acme-prod:d:2026-11-18", "sc:{acme}:reqs:project:acme-prod:d:2026-11-18",
                    "sc:{acme}:tokens:project:acme-prod:d:2026-11-18"});
    // an API project through its index; none: 404
    c = start("GET", "/projects/api-p/usage/daily", "days=1");
    expect_eval(c, {"sc:project:api-p"});
    expect_eval(op->next(str("beta")), {"sc:{beta}:org"});
    expect_eval(op->next(array({str("timezone"), str("Europe/Berlin")})), {"sc:{beta}:spend:project:api-p:d:2026-11-18",
                                        "sc:{beta}:reqs:project:api-p:d:2026-11-18",
                                        "sc:{beta}:tokens:project:api-p:d:2026-11-18"});
    start("GET", "/projects/api-p/usage/daily");
    EXPECT_FALSE(op->next(nil()));
    EXPECT_EQ(status(), 404);

    // a customer of a file org; of an org that does not exist: 404
    c = start("GET", "/orgs/acme/customers/cust_42/usage/daily", "days=1&format=csv");
    expect_eval(c, {"sc:{acme}:spend:customer:cust_42:d:2026-11-18", "sc:{acme}:reqs:customer:cust_42:d:2026-11-18",
                    "sc:{acme}:tokens:customer:cust_42:d:2026-11-18"});
    EXPECT_FALSE(op->next(array({nil(), nil(), nil()})));
    EXPECT_EQ(op->response().body, "date,spent_usd,spent_nanousd,requests,tokens\n2026-11-18,0.00,0,0,0\n");
    c = start("GET", "/orgs/nope/customers/cust_42/usage/daily");
    expect_eval(c, {"sc:{nope}:org"});
    EXPECT_FALSE(op->next(array({})));
    EXPECT_EQ(status(), 404);
    EXPECT_EQ(op->response().content_type, "application/json");
    c = start("GET", "/orgs/nope/usage/daily", "format=csv");
    EXPECT_FALSE(op->next(array({})));
    EXPECT_EQ(status(), 404);
    EXPECT_EQ(op->response().content_type, "application/json");
}

TEST_F(AdminOpsTest, SelfDailyUsageNeedsTheKeysOwnSecret) {
    Routed routed = route("GET", "/keys/self/usage/daily", "days=2");
    ASSERT_TRUE(routed.route);
    EXPECT_TRUE(is_self_call(routed.route->call));
    op = std::make_unique<Operation>(*policy, *routed.route, "", kNow * 1000, k1_sha());
    std::optional<Command> c = op->start();
    expect_eval(c, {"sc:{acme}:key:k1"});  // its record, then the org's records as a request reads them
    c = op->next(array({}));
    ASSERT_TRUE(c);
    // no records (version ""): the file's key, valid
    c = op->next(array({str(""), array({}), array({}), array({}), array({})}));
    expect_eval(c, {"sc:{acme}:spend:key:k1:d:2026-11-17", "sc:{acme}:reqs:key:k1:d:2026-11-17",
                    "sc:{acme}:tokens:key:k1:d:2026-11-17", "sc:{acme}:spend:key:k1:d:2026-11-18",
                    "sc:{acme}:reqs:key:k1:d:2026-11-18", "sc:{acme}:tokens:key:k1:d:2026-11-18"});
    EXPECT_FALSE(op->next(array({str("1"), str("1"), str("1"), str("2"), str("2"), str("2")})));
    EXPECT_EQ(status(), 200);
    Json j = body();
    EXPECT_EQ(jstr(j.get(), "id"), "k1");
    json_t *days = at(j.get(), "days");
    ASSERT_EQ(json_array_size(days), 2u);
    EXPECT_EQ(jstr(json_array_get(days, 1), "date"), "2026-11-18");
    EXPECT_EQ(jint(json_array_get(days, 1), "tokens"), 2);

    // a secret that is no key's: 401
    op = std::make_unique<Operation>(*policy, *routed.route, "", kNow * 1000, sha256_hex("sk-nobody"));
    c = op->start();
    expect_eval(c, {"sc:key:" + sha256_hex("sk-nobody")});
    EXPECT_FALSE(op->next(array({})));
    EXPECT_EQ(status(), 401);
}

TEST_F(AdminOpsTest, OrgsListsTheFilesAndTheApisOncePerIdByIdWithTheirClearedSpend) {
    std::optional<Command> c = start("GET", "/orgs");
    expect_eval(c, {"sc:orgs"});
    // the API's: beta, zeta, acme (an API record over the file's org), and an id no org can have
    c = op->next(array({str("zeta"), str("acme"), str("bad{id}"), str("beta")}));
    expect_eval(c, {"sc:{acme}:org", "sc:{acme}:cleared"});
    ASSERT_TRUE(c);
    EXPECT_EQ(c->script, &scripts::org_read().text);
    c = op->next(array({fields({{"source", "file"}, {"limits", R"({"daily_usd":"3"})"}}), str("123")}));
    expect_eval(c, {"sc:{beta}:org", "sc:{beta}:cleared"});
    c = op->next(array({fields({{"source", "api"}, {"plan", "free"}, {"prepaid", "1"}}), nil()}));
    expect_eval(c, {"sc:{zeta}:org", "sc:{zeta}:cleared"});
    // zeta's record is gone: no org
    EXPECT_FALSE(op->next(array({array({}), nil()})));
    EXPECT_EQ(status(), 200);
    Json j = body();
    json_t *orgs = at(j.get(), "orgs");
    ASSERT_TRUE(json_is_array(orgs));
    ASSERT_EQ(json_array_size(orgs), 2u);
    json_t *acme = json_array_get(orgs, 0), *beta = json_array_get(orgs, 1);
    EXPECT_EQ(jstr(acme, "id"), "acme");
    EXPECT_EQ(jstr(acme, "source"), "file");
    EXPECT_EQ(jstr(acme, "limits.daily_usd"), "3.00");
    EXPECT_EQ(jint(acme, "cleared_nanousd"), 123);
    EXPECT_EQ(jstr(beta, "id"), "beta");
    EXPECT_EQ(jstr(beta, "source"), "api");
    EXPECT_EQ(jstr(beta, "plan"), "free");
    EXPECT_TRUE(jtrue(beta, "prepaid"));

    // none from the API: the file's alone; a malformed reply: 503
    c = start("GET", "/orgs");
    expect_eval(op->next(array({})), {"sc:{acme}:org", "sc:{acme}:cleared"});
    EXPECT_FALSE(op->next(array({array({}), nil()})));
    j = body();
    ASSERT_EQ(json_array_size(at(j.get(), "orgs")), 1u);
    EXPECT_EQ(jstr(json_array_get(at(j.get(), "orgs"), 0), "id"), "acme");
    start("GET", "/orgs");
    EXPECT_FALSE(op->next(str("x")));
    EXPECT_EQ(status(), 503);
    start("GET", "/orgs");
    ASSERT_TRUE(op->next(array({})));
    EXPECT_FALSE(op->next(array({nil()})));
    EXPECT_EQ(status(), 503);
}

TEST_F(AdminOpsTest, OrgsListIsBoundedToTheFirstByIdAndNeverDeep) {
    std::optional<Command> c = start("GET", "/orgs");
    std::vector<Reply> members;
    for (std::size_t i = 0; i < kMaxListedOrgs + 5; ++i) {
        char id[16];
        std::snprintf(id, sizeof id, "o%06zu", kMaxListedOrgs + 4 - i);
        members.push_back(str(id));
    }
    c = op->next(array(members));
    std::size_t reads = 0;
    while (c) {
        ++reads;
        c = op->next(array({fields({{"source", "api"}}), nil()}));
    }
    EXPECT_EQ(reads, kMaxListedOrgs);
    EXPECT_EQ(status(), 200);
    Json j = body();
    json_t *orgs = at(j.get(), "orgs");
    ASSERT_EQ(json_array_size(orgs), kMaxListedOrgs);
    // "acme" (the file's) sorts before "o...": the first; the last API ones are left out
    EXPECT_EQ(jstr(json_array_get(orgs, 0), "id"), "acme");
    EXPECT_EQ(jstr(json_array_get(orgs, 1), "id"), "o000000");
    EXPECT_EQ(jstr(json_array_get(orgs, kMaxListedOrgs - 1), "id"), "o009998");
}

TEST_F(AdminOpsTest, ProjectsOfAnOrgAreTheFilesAndTheApis) {
    std::optional<Command> c = start("GET", "/projects", "org=acme");
    expect_eval(c, {"sc:{acme}:projects"});
    // the API's: api-p, and acme-prod which is the file's (listed once)
    c = op->next(array({str("api-p"), str("acme-prod")}));
    expect_eval(c, {"sc:{acme}:project:acme-prod", "sc:{acme}:project:api-p"});
    EXPECT_FALSE(op->next(array({fields({{"limits", R"({"rpm":5})"}, {"source", "file"}}),
                                 fields({{"source", "api"}, {"limits", R"({"monthly_usd":"3"})"}})})));
    EXPECT_EQ(status(), 200);
    Json j = body();
    json_t *projects = at(j.get(), "projects");
    ASSERT_EQ(json_array_size(projects), 2u);
    EXPECT_EQ(jstr(json_array_get(projects, 0), "id"), "acme-prod");
    EXPECT_EQ(jstr(json_array_get(projects, 0), "source"), "file");
    EXPECT_EQ(jint(json_array_get(projects, 0), "limits.rpm"), 5);
    EXPECT_EQ(jstr(json_array_get(projects, 1), "id"), "api-p");
    EXPECT_EQ(jstr(json_array_get(projects, 1), "org"), "acme");
    EXPECT_EQ(jstr(json_array_get(projects, 1), "source"), "api");
    EXPECT_EQ(jstr(json_array_get(projects, 1), "limits.monthly_usd"), "3.00");

    // an API org with no project: no second command
    c = start("GET", "/projects", "org=newco");
    expect_eval(c, {"sc:{newco}:org"});
    c = op->next(fields({{"source", "api"}}));
    expect_eval(c, {"sc:{newco}:projects"});
    EXPECT_FALSE(op->next(array({})));
    EXPECT_EQ(op->response().body, R"({"projects":[]})");
    // an org that does not exist: 404
    c = start("GET", "/projects", "org=nope");
    EXPECT_FALSE(op->next(array({})));
    EXPECT_EQ(status(), 404);
    EXPECT_EQ(error_code(), "not_found");
}

// ---------------------------------------------------------------- views

TEST(AdminOpsViews, FileKeyById) {
    const std::shared_ptr<const Policy> policy = parse_policy(policy_text(), "test.yaml");
    const Key *k = file_key_by_id(*policy, "k1");
    ASSERT_NE(k, nullptr);
    EXPECT_EQ(k->sha256, k1_sha());
    EXPECT_EQ(file_key_by_id(*policy, "k2"), nullptr);
}

TEST(AdminOpsViews, KeyViewRecordOverFile) {
    const std::shared_ptr<const Policy> policy = parse_policy(policy_text(), "test.yaml");
    const Key *k = file_key_by_id(*policy, "k1");
    KeyView v = key_view(k, "k1", "acme", {});
    EXPECT_TRUE(v.from_file);
    EXPECT_EQ(v.limits.monthly_usd, 10 * kNanosPerUsd);
    v = key_view(k, "k1", "acme", {{"limits", "{}"}, {"expires_at", "1800000000"}, {"name", "n"}});
    EXPECT_FALSE(v.limits.monthly_usd);
    EXPECT_EQ(v.expires_at, 1800000000);
    EXPECT_EQ(v.name, "n");
    v = key_view(nullptr, "key_a", "beta", {{"project", "p"}, {"created_at", "17"}});
    EXPECT_FALSE(v.from_file);
    EXPECT_EQ(v.project, "p");
    EXPECT_EQ(v.created_at, 17);
    EXPECT_FALSE(project_view(*policy, "nope", "acme", {}));
    ASSERT_TRUE(project_view(*policy, "acme-prod", "acme", {}));
    EXPECT_TRUE(project_view(*policy, "acme-prod", "acme", {})->from_file);
    EXPECT_FALSE(org_view(*policy, "ghost", {}, 0));
    ASSERT_TRUE(org_view(*policy, "acme", {{"prepaid", "1"}}, 5));
    EXPECT_TRUE(org_view(*policy, "acme", {{"prepaid", "1"}}, 5)->prepaid);
    EXPECT_EQ(org_view(*policy, "acme", {}, 5)->cleared, 5);
}

}  // namespace
}  // namespace spendcap::admin
