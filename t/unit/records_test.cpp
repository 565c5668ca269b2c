// records.h: how a request's key is resolved from the policy file and the
// org's management-API records (resolve_identity / resolve_file_identity),
// the ledgers built from such an identity, the per-worker IdentityCache
// (versions, negative cache, lookups, all bounded), and the EVALSHA argv of
// the two reads the request path sends.
#include "base/digest.h"
#include "identity/records.h"
#include "redis/keys.h"
#include "redis/script.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "accounting/ledger.h"
#include "base/periods.h"
#include "policy/policy.h"
#include "request/request.h"  // sha1_hex, sha256_hex

namespace spendcap {
namespace {

constexpr std::int64_t kNow = 1795000000;  // 2026-11-18T11:06:40Z
constexpr Nanos kUsd = kNanosPerUsd;

const std::string &file_sha() {
    static const std::string s = sha256_hex("sk-test-k1");
    return s;
}
const std::string &api_sha() {
    static const std::string s = sha256_hex("sk-sc-api-key-secret");
    return s;
}
const std::string &other_sha() {
    static const std::string s = sha256_hex("sk-sc-another-secret");
    return s;
}

std::string policy_text() {
    return "models:\n"
           "  m: { input: 1, output: 2 }\n"
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
           "    sha256: " + file_sha() + "\n"
           "    project: acme-prod\n"
           "    limits: { monthly_usd: 10, daily_usd: 2 }\n"
           "customers:\n"
           "  default_limits: { monthly_usd: 1, rpm: 30 }\n"
           "  overrides:\n"
           "    cust_42: { monthly_usd: 5 }\n";
}

class RecordsTest : public ::testing::Test {
protected:
    std::shared_ptr<const Policy> policy = parse_policy(policy_text(), "test.yaml");
    const Key *k1 = policy->find_key(file_sha());

    Resolution file(const OrgRecords &records, const std::string &customer = "", std::int64_t now = kNow,
                    const std::string &presented = "") {
        return resolve_identity(*policy, presented.empty() ? file_sha() : presented, k1, std::nullopt, customer,
                                records, now * 1000);
    }
    Resolution api(const OrgRecords &records, const KeyLookup &lookup, const std::string &presented = "",
                   std::int64_t now = kNow) {
        return resolve_identity(*policy, presented.empty() ? api_sha() : presented, nullptr, lookup, "", records,
                                now * 1000);
    }
};

// An API org "beta" (no file entry), its API project "beta-proj", API key "key_a".
OrgRecords beta_records() {
    OrgRecords r;
    r.version = "12";
    r.key = {{"source", "api"}, {"project", "beta-proj"}, {"name", "ci"}, {"created_at", "1790000000"},
             {"expires_at", ""}, {"revoked", "0"}, {"limits", R"({"monthly_usd":"3.00","rpm":60})"},
             {"sha256", api_sha()}};
    r.project = {{"source", "api"}, {"limits", R"({"daily_usd":"1.5"})"}};
    r.org = {{"source", "api"}, {"plan", "free"}, {"prepaid", "1"}, {"low_balance", "5000000000"},
             {"created_at", "1700000000"}, {"limits", R"({"daily_usd":"7"})"}};
    return r;
}
const KeyLookup kBetaLookup{"key_a", "beta", "beta-proj"};

// ---------------------------------------------------------------- resolve_identity

TEST_F(RecordsTest, FileKeyWithoutRecordsIsTheFile) {
    ASSERT_NE(k1, nullptr);
    const Resolution r = file(OrgRecords{});
    ASSERT_EQ(r.problem, IdentityProblem::none) << r.reason;
    ASSERT_NE(r.identity, nullptr);
    const Identity &id = *r.identity;
    EXPECT_TRUE(id.from_file);
    EXPECT_EQ(id.version, "");
    EXPECT_EQ(id.key.id, "k1");
    EXPECT_EQ(id.key.sha256, file_sha());
    EXPECT_EQ(id.key.project, "acme-prod");
    EXPECT_EQ(id.key.limits.monthly_usd, 10 * kUsd);
    EXPECT_EQ(id.key.limits.daily_usd, 2 * kUsd);
    EXPECT_FALSE(id.key.revoked);
    EXPECT_FALSE(id.key.expires_at);
    EXPECT_EQ(id.project.id, "acme-prod");
    EXPECT_EQ(id.project.org, "acme");
    EXPECT_EQ(id.project.limits.monthly_usd, 50 * kUsd);
    EXPECT_EQ(id.org.id, "acme");
    EXPECT_EQ(id.org.limits.daily_usd, 20 * kUsd);
    EXPECT_EQ(id.org.plan, "");
    EXPECT_FALSE(id.org.prepaid);
    EXPECT_EQ(id.policy_generation, policy->generation);
    EXPECT_NE(id.serial, 0u);

    // The same as resolve_file_identity (which needs no Redis).
    const Resolution f = resolve_file_identity(*policy, *k1, "");
    ASSERT_NE(f.identity, nullptr);
    EXPECT_EQ(f.problem, IdentityProblem::none);
    EXPECT_TRUE(f.identity->from_file);
    EXPECT_EQ(f.identity->version, "");
    EXPECT_EQ(f.identity->key.id, id.key.id);
    EXPECT_EQ(f.identity->key.limits.monthly_usd, id.key.limits.monthly_usd);
    EXPECT_EQ(f.identity->key.limits.daily_usd, id.key.limits.daily_usd);
    EXPECT_EQ(f.identity->project.limits.monthly_usd, id.project.limits.monthly_usd);
    EXPECT_EQ(f.identity->org.limits.daily_usd, id.org.limits.daily_usd);
    EXPECT_EQ(f.identity->policy_generation, policy->generation);
    EXPECT_NE(f.identity->serial, id.serial);
}

TEST_F(RecordsTest, FileIdentityCarriesTheCustomersFileLimits) {
    const Resolution f = resolve_file_identity(*policy, *k1, "cust_42");
    ASSERT_NE(f.identity, nullptr);
    EXPECT_EQ(f.identity->customer, "cust_42");
    EXPECT_EQ(f.identity->customer_limits.monthly_usd, 5 * kUsd);
    EXPECT_EQ(f.identity->customer_limits.rpm, 30);
    const Resolution none = resolve_file_identity(*policy, *k1, "");
    EXPECT_EQ(none.identity->customer, "");
    EXPECT_FALSE(none.identity->customer_limits.monthly_usd);
    EXPECT_FALSE(none.identity->customer_limits.rpm);
}

TEST_F(RecordsTest, FileKeyRecordLimitsReplaceTheKeysLimitsWhole) {
    OrgRecords records;
    records.version = "3";
    records.key = {{"source", "file"}, {"limits", R"({"rpm":5})"}};
    const Resolution r = file(records);
    ASSERT_EQ(r.problem, IdentityProblem::none) << r.reason;
    const Key &key = r.identity->key;
    EXPECT_EQ(key.limits.rpm, 5);
    EXPECT_FALSE(key.limits.monthly_usd);  // not merged with the file's
    EXPECT_FALSE(key.limits.daily_usd);
    EXPECT_EQ(r.identity->version, "3");
    EXPECT_TRUE(r.identity->from_file);
    // the other scopes stay the file's
    EXPECT_EQ(r.identity->project.limits.monthly_usd, 50 * kUsd);
    EXPECT_EQ(r.identity->org.limits.daily_usd, 20 * kUsd);

    // "{}" (an API key created without limits, or a PUT of {}) is no limits at all.
    records.key = {{"source", "file"}, {"limits", "{}"}};
    const Resolution empty = file(records);
    ASSERT_EQ(empty.problem, IdentityProblem::none) << empty.reason;
    EXPECT_FALSE(empty.identity->key.limits.monthly_usd);
    EXPECT_FALSE(empty.identity->key.limits.daily_usd);

    // A record without `limits` (DELETE .../limits): the file's again.
    records.key = {{"source", "file"}};
    const Resolution dropped = file(records);
    ASSERT_EQ(dropped.problem, IdentityProblem::none) << dropped.reason;
    EXPECT_EQ(dropped.identity->key.limits.monthly_usd, 10 * kUsd);
    EXPECT_EQ(dropped.identity->key.limits.daily_usd, 2 * kUsd);
}

TEST_F(RecordsTest, RevokedRecordRevokesAFileKey) {
    OrgRecords records;
    records.version = "1";
    records.key = {{"source", "file"}, {"revoked", "1"}};
    const Resolution r = file(records);
    EXPECT_EQ(r.problem, IdentityProblem::revoked);
    ASSERT_NE(r.identity, nullptr);  // set unless unknown
    EXPECT_TRUE(r.identity->key.revoked);

    records.key = {{"source", "file"}, {"revoked", "0"}};
    const Resolution ok = file(records);
    EXPECT_EQ(ok.problem, IdentityProblem::none);
    EXPECT_FALSE(ok.identity->key.revoked);
}

TEST_F(RecordsTest, ExpiresAtInThePastExpires) {
    OrgRecords records;
    records.version = "1";
    records.key = {{"source", "file"}, {"expires_at", std::to_string(kNow - 1)}};
    const Resolution past = file(records);
    EXPECT_EQ(past.problem, IdentityProblem::expired);
    ASSERT_NE(past.identity, nullptr);
    EXPECT_EQ(past.identity->key.expires_at, kNow - 1);

    records.key = {{"source", "file"}, {"expires_at", std::to_string(kNow)}};
    EXPECT_EQ(file(records).problem, IdentityProblem::expired);  // at the instant: expired

    records.key = {{"source", "file"}, {"expires_at", std::to_string(kNow + 60)}};
    const Resolution future = file(records);
    EXPECT_EQ(future.problem, IdentityProblem::none);
    EXPECT_EQ(future.identity->key.expires_at, kNow + 60);

    // "" is no expiry.
    records.key = {{"source", "file"}, {"expires_at", ""}};
    const Resolution none = file(records);
    EXPECT_EQ(none.problem, IdentityProblem::none);
    EXPECT_FALSE(none.identity->key.expires_at);
}

TEST_F(RecordsTest, RevokedWinsOverExpired) {
    OrgRecords records;
    records.key = {{"revoked", "1"}, {"expires_at", std::to_string(kNow - 10)}};
    EXPECT_EQ(file(records).problem, IdentityProblem::revoked);
}

TEST_F(RecordsTest, ApiKeyWithItsRecordsResolvesEveryField) {
    const OrgRecords records = beta_records();
    const Resolution r = api(records, kBetaLookup);
    ASSERT_EQ(r.problem, IdentityProblem::none) << r.reason;
    ASSERT_NE(r.identity, nullptr);
    const Identity &id = *r.identity;
    EXPECT_FALSE(id.from_file);
    EXPECT_EQ(id.version, "12");
    EXPECT_EQ(id.key.id, "key_a");
    EXPECT_EQ(id.key.project, "beta-proj");
    EXPECT_EQ(id.key.sha256, api_sha());
    EXPECT_EQ(id.key.limits.monthly_usd, 3 * kUsd);
    EXPECT_EQ(id.key.limits.rpm, 60);
    EXPECT_FALSE(id.key.limits.daily_usd);
    EXPECT_FALSE(id.key.expires_at);
    EXPECT_FALSE(id.key.revoked);
    EXPECT_EQ(id.project.id, "beta-proj");
    EXPECT_EQ(id.project.org, "beta");
    EXPECT_EQ(id.project.limits.daily_usd, kUsd + kUsd / 2);
    EXPECT_EQ(id.org.id, "beta");
    EXPECT_EQ(id.org.plan, "free");
    EXPECT_TRUE(id.org.prepaid);
    EXPECT_EQ(id.org.low_balance_usd, 5 * kUsd);
    EXPECT_EQ(id.org.created_at, 1700000000);
    EXPECT_EQ(id.org.limits.daily_usd, 7 * kUsd);
    // The plan fills in what the org does not set.
    EXPECT_EQ(policy->org_limits(id.org).monthly_usd, 1 * kUsd);
    EXPECT_EQ(policy->org_limits(id.org).daily_usd, 7 * kUsd);
    EXPECT_EQ(id.policy_generation, policy->generation);
}

TEST_F(RecordsTest, ApiKeyInAFileProjectGetsTheFilesProjectAndOrg) {
    OrgRecords records;
    records.version = "4";
    records.key = {{"source", "api"}, {"project", "acme-prod"}, {"sha256", api_sha()}, {"limits", "{}"}};
    const Resolution r = api(records, KeyLookup{"key_b", "acme", "acme-prod"});
    ASSERT_EQ(r.problem, IdentityProblem::none) << r.reason;
    EXPECT_EQ(r.identity->project.limits.monthly_usd, 50 * kUsd);
    EXPECT_EQ(r.identity->org.id, "acme");
    EXPECT_EQ(r.identity->org.limits.daily_usd, 20 * kUsd);
    EXPECT_FALSE(r.identity->key.limits.monthly_usd);

    // An org record over the file's org: field by field.
    records.org = {{"source", "file"}, {"prepaid", "1"}, {"low_balance", "2000000000"}};
    const Resolution over = api(records, KeyLookup{"key_b", "acme", "acme-prod"});
    ASSERT_EQ(over.problem, IdentityProblem::none) << over.reason;
    EXPECT_TRUE(over.identity->org.prepaid);
    EXPECT_EQ(over.identity->org.low_balance_usd, 2 * kUsd);
    EXPECT_EQ(over.identity->org.limits.daily_usd, 20 * kUsd);  // no `limits` field: the file's
}

TEST_F(RecordsTest, ApiKeyWithoutItsRecordIsUnknown) {
    OrgRecords records = beta_records();
    records.key.clear();
    const Resolution r = api(records, kBetaLookup);
    EXPECT_EQ(r.problem, IdentityProblem::unknown);
    EXPECT_EQ(r.identity, nullptr);
    EXPECT_FALSE(r.reason.empty());
    // Neither a file key nor a lookup: unknown.
    const Resolution nothing =
        resolve_identity(*policy, other_sha(), nullptr, std::nullopt, "", beta_records(), kNow * 1000);
    EXPECT_EQ(nothing.problem, IdentityProblem::unknown);
    EXPECT_EQ(nothing.identity, nullptr);
}

TEST_F(RecordsTest, ApiKeyWhoseProjectOrOrgIsGoneIsUnknown) {
    OrgRecords records = beta_records();
    records.project.clear();  // beta-proj is not in the file either
    EXPECT_EQ(api(records, kBetaLookup).problem, IdentityProblem::unknown);
    records = beta_records();
    records.org.clear();  // beta is not in the file either
    EXPECT_EQ(api(records, kBetaLookup).problem, IdentityProblem::unknown);
    // A lookup naming another org than its (file) project's.
    OrgRecords acme;
    acme.key = {{"source", "api"}, {"sha256", api_sha()}};
    const Resolution wrong = api(acme, KeyLookup{"key_c", "beta", "acme-prod"});
    EXPECT_EQ(wrong.problem, IdentityProblem::unknown);
    EXPECT_EQ(wrong.identity, nullptr);
}

TEST_F(RecordsTest, RotationAcceptsOnlyTheCurrentSecretOrTheOldOneWithinItsGrace) {
    OrgRecords records = beta_records();  // sha256 = api_sha()
    // Another secret than the record's current one: unknown.
    EXPECT_EQ(api(records, kBetaLookup, other_sha()).problem, IdentityProblem::unknown);
    EXPECT_EQ(api(records, kBetaLookup, other_sha()).identity, nullptr);

    // Rotated: other_sha is now current, api_sha the old one until kNow + 30.
    records.key = {{"source", "api"}, {"project", "beta-proj"}, {"sha256", other_sha()},
                   {"old_sha256", api_sha()}, {"old_until", std::to_string(kNow + 30)}};
    EXPECT_EQ(api(records, kBetaLookup, other_sha()).problem, IdentityProblem::none);
    EXPECT_EQ(api(records, kBetaLookup, api_sha(), kNow).problem, IdentityProblem::none);
    EXPECT_EQ(api(records, kBetaLookup, api_sha(), kNow + 29).problem, IdentityProblem::none);
    EXPECT_EQ(api(records, kBetaLookup, api_sha(), kNow + 30).problem, IdentityProblem::unknown);
    EXPECT_EQ(api(records, kBetaLookup, api_sha(), kNow + 3600).problem, IdentityProblem::unknown);
    // A third secret is never accepted.
    EXPECT_EQ(api(records, kBetaLookup, sha256_hex("sk-sc-third")).problem, IdentityProblem::unknown);
    // The old secret's identity says until when (a cached one must not outlive the
    // grace); the current secret's has no end.
    EXPECT_EQ(api(records, kBetaLookup, api_sha(), kNow).identity->secret_until_ms,
              std::optional<std::int64_t>((kNow + 30) * 1000));
    EXPECT_EQ(api(records, kBetaLookup, other_sha()).identity->secret_until_ms, std::nullopt);

    // The grace's end to the millisecond (old_until_ms, which wins over old_until):
    // a grace of 5 s from 12.820 s ends at 17.820 s, not at a whole second.
    const std::int64_t rotated_ms = kNow * 1000 + 820;
    records.key = {{"source", "api"}, {"project", "beta-proj"}, {"sha256", other_sha()},
                   {"old_sha256", api_sha()}, {"old_until_ms", std::to_string(rotated_ms + 5000)},
                   {"old_until", std::to_string(kNow + 6)}};
    auto at_ms = [&](std::int64_t ms) {
        return resolve_identity(*policy, api_sha(), nullptr, kBetaLookup, "", records, ms).problem;
    };
    EXPECT_EQ(at_ms(rotated_ms + 4999), IdentityProblem::none);
    EXPECT_EQ(at_ms(rotated_ms + 5000), IdentityProblem::unknown);

    // No grace at all (old_until missing or malformed): only the current one.
    records.key = {{"source", "api"}, {"project", "beta-proj"}, {"sha256", other_sha()},
                   {"old_sha256", api_sha()}};
    EXPECT_EQ(api(records, kBetaLookup, api_sha()).problem, IdentityProblem::unknown);
    records.key = {{"source", "api"}, {"project", "beta-proj"}, {"sha256", other_sha()},
                   {"old_sha256", api_sha()}, {"old_until", "soon"}};
    EXPECT_EQ(api(records, kBetaLookup, api_sha()).problem, IdentityProblem::unknown);
}

TEST_F(RecordsTest, RotatedFileKeyRefusesTheFilesSecretAfterTheGrace) {
    const std::string fresh = sha256_hex("sk-sc-rotated");
    OrgRecords records;
    records.version = "9";
    records.key = {{"source", "file"}, {"sha256", fresh}, {"old_sha256", file_sha()},
                   {"old_until", std::to_string(kNow + 10)}};
    EXPECT_EQ(file(records, "", kNow).problem, IdentityProblem::none);
    EXPECT_EQ(file(records, "", kNow + 10).problem, IdentityProblem::unknown);
    records.key = {{"source", "file"}, {"sha256", fresh}};
    EXPECT_EQ(file(records).problem, IdentityProblem::unknown);
}

// A rotated file key's new secret is found through sc:key:NEW (a KeyLookup
// naming k1), not the file's hash: it must still be the file's key, with its
// limits, expiry and revocation (SPEC 7: "counters and limits stay with the id").
TEST_F(RecordsTest, RotatedFileKeysNewSecretKeepsTheFilesLimits) {
    const std::string fresh = sha256_hex("sk-sc-rotated");
    OrgRecords records;
    records.version = "9";
    records.key = {{"source", "file"}, {"sha256", fresh}, {"old_sha256", file_sha()},
                   {"old_until", std::to_string(kNow + 10)}};
    const Resolution r = resolve_identity(*policy, fresh, nullptr, KeyLookup{"k1", "acme", "acme-prod"}, "",
                                          records, kNow * 1000);
    ASSERT_EQ(r.problem, IdentityProblem::none) << r.reason;
    EXPECT_EQ(r.identity->key.limits.monthly_usd, 10 * kUsd);
    EXPECT_EQ(r.identity->key.limits.daily_usd, 2 * kUsd);
}

TEST_F(RecordsTest, ProjectRecordLimitsReplaceTheFileProjects) {
    OrgRecords records;
    records.version = "2";
    records.project = {{"source", "file"}, {"limits", R"({"rpm":9,"lifetime_usd":"100"})"}};
    const Resolution r = file(records);
    ASSERT_EQ(r.problem, IdentityProblem::none) << r.reason;
    EXPECT_EQ(r.identity->project.id, "acme-prod");
    EXPECT_EQ(r.identity->project.org, "acme");
    EXPECT_EQ(r.identity->project.limits.rpm, 9);
    EXPECT_EQ(r.identity->project.limits.lifetime_usd, 100 * kUsd);
    EXPECT_FALSE(r.identity->project.limits.monthly_usd);  // the file's 50 is replaced
    EXPECT_EQ(r.identity->key.limits.monthly_usd, 10 * kUsd);
}

TEST_F(RecordsTest, OrgRecordLimitsReplaceTheFileOrgs) {
    OrgRecords records;
    records.version = "2";
    records.org = {{"source", "file"}, {"limits", R"({"monthly_usd":"40"})"}, {"plan", "free"}};
    const Resolution r = file(records);
    ASSERT_EQ(r.problem, IdentityProblem::none) << r.reason;
    EXPECT_EQ(r.identity->org.limits.monthly_usd, 40 * kUsd);
    EXPECT_FALSE(r.identity->org.limits.daily_usd);
    EXPECT_EQ(r.identity->org.plan, "free");
    // An explicit monthly_usd replaces the plan's.
    EXPECT_EQ(policy->org_limits(r.identity->org).monthly_usd, 40 * kUsd);
}

TEST_F(RecordsTest, CustomerRecordLimitsApplyFieldByFieldOverTheDefaults) {
    OrgRecords records;
    records.version = "5";
    // No record: the file's (override over defaults).
    Resolution r = file(records, "cust_42");
    ASSERT_EQ(r.problem, IdentityProblem::none) << r.reason;
    EXPECT_EQ(r.identity->customer, "cust_42");
    EXPECT_EQ(r.identity->customer_limits.monthly_usd, 5 * kUsd);
    EXPECT_EQ(r.identity->customer_limits.rpm, 30);

    records.customer = {{"limits", R"({"daily_usd":"2"})"}};
    r = file(records, "cust_9");
    ASSERT_EQ(r.problem, IdentityProblem::none) << r.reason;
    EXPECT_EQ(r.identity->customer_limits.daily_usd, 2 * kUsd);
    EXPECT_EQ(r.identity->customer_limits.monthly_usd, 1 * kUsd);  // default
    EXPECT_EQ(r.identity->customer_limits.rpm, 30);                // default

    records.customer = {{"limits", R"({"rpm":3})"}};
    r = file(records, "cust_9");
    EXPECT_EQ(r.identity->customer_limits.rpm, 3);
    EXPECT_EQ(r.identity->customer_limits.monthly_usd, 1 * kUsd);

    // A record without limits: the file's.
    records.customer = {{"other", "x"}};
    r = file(records, "cust_42");
    EXPECT_EQ(r.identity->customer_limits.monthly_usd, 5 * kUsd);
}

TEST_F(RecordsTest, MalformedRecordsAreUnknownAndNeverThrow) {
    struct Case {
        const char *what;
        OrgRecords records;
        std::string customer;
    };
    std::vector<Case> cases;
    auto add = [&](const char *what, auto mutate, std::string customer = "") {
        OrgRecords r;
        r.version = "1";
        mutate(r);
        cases.push_back({what, r, customer});
    };
    add("key limits not JSON", [](OrgRecords &r) { r.key = {{"limits", "{not json"}}; });
    add("key limits not an object", [](OrgRecords &r) { r.key = {{"limits", "[1,2]"}}; });
    add("key limits bad amount", [](OrgRecords &r) { r.key = {{"limits", R"({"monthly_usd":"ten"})"}}; });
    add("key limits unknown field", [](OrgRecords &r) { r.key = {{"limits", R"({"hourly_usd":"1"})"}}; });
    add("key limits empty", [](OrgRecords &r) { r.key = {{"limits", ""}}; });
    add("key expires_at", [](OrgRecords &r) { r.key = {{"expires_at", "tomorrow"}}; });
    add("key expires_at huge", [](OrgRecords &r) { r.key = {{"expires_at", "99999999999999999999999"}}; });
    add("project limits", [](OrgRecords &r) { r.project = {{"limits", "{\"rpm\":-1}"}}; });
    add("org limits", [](OrgRecords &r) { r.org = {{"limits", "nope"}}; });
    add("org low_balance", [](OrgRecords &r) { r.org = {{"low_balance", "5 USD"}}; });
    add("org created_at", [](OrgRecords &r) { r.org = {{"created_at", "1.5"}}; });
    add("customer limits", [](OrgRecords &r) { r.customer = {{"limits", "{\"rpm\":\"x\"}"}}; }, "cust_1");
    for (const Case &c : cases) {
        Resolution r;
        EXPECT_NO_THROW(r = file(c.records, c.customer)) << c.what;
        EXPECT_EQ(r.problem, IdentityProblem::unknown) << c.what;
        EXPECT_EQ(r.identity, nullptr) << c.what;
        EXPECT_FALSE(r.reason.empty()) << c.what;
    }
    // The same for an API key.
    OrgRecords records = beta_records();
    for (auto &f : records.key)
        if (f.first == "limits") f.second = "{\"monthly_usd\":";
    EXPECT_NO_THROW(EXPECT_EQ(api(records, kBetaLookup).problem, IdentityProblem::unknown));
}

TEST_F(RecordsTest, VersionIsTheRecordsAndSerialsAreUnique) {
    std::set<std::uint64_t> serials;
    for (const char *version : {"", "1", "2", "77"}) {
        OrgRecords records;
        records.version = version;
        const Resolution r = file(records);
        ASSERT_NE(r.identity, nullptr);
        EXPECT_EQ(r.identity->version, version);
        EXPECT_TRUE(serials.insert(r.identity->serial).second);
    }
    for (int i = 0; i < 100; ++i) {
        const Resolution r = api(beta_records(), kBetaLookup);
        ASSERT_NE(r.identity, nullptr);
        EXPECT_EQ(r.identity->version, "12");
        EXPECT_TRUE(serials.insert(r.identity->serial).second);
        EXPECT_TRUE(serials.insert(resolve_file_identity(*policy, *k1, "").identity->serial).second);
        EXPECT_TRUE(serials.insert(next_identity_serial()).second);
    }
    EXPECT_EQ(serials.count(0), 0u);
}

TEST_F(RecordsTest, ParseKeyLookupNeedsThreeValidIds) {
    const std::optional<KeyLookup> ok = parse_key_lookup({{"id", "key_a"}, {"org", "beta"}, {"project", "p"}});
    ASSERT_TRUE(ok);
    EXPECT_EQ(ok->id, "key_a");
    EXPECT_EQ(ok->org, "beta");
    EXPECT_EQ(ok->project, "p");
    EXPECT_FALSE(parse_key_lookup({}));
    EXPECT_FALSE(parse_key_lookup({{"id", "key_a"}, {"org", "beta"}}));
    EXPECT_FALSE(parse_key_lookup({{"id", "key_a"}, {"org", "be{ta}"}, {"project", "p"}}));
    EXPECT_FALSE(parse_key_lookup({{"id", ""}, {"org", "beta"}, {"project", "p"}}));
}

TEST(RecordsLayout, KeyNames) {
    EXPECT_EQ(keys::org_prefix("acme"), "sc:{acme}:");
    EXPECT_EQ(keys::key_lookup("ab12"), "sc:key:ab12");
    EXPECT_EQ(keys::key_id("key_1"), "sc:keyid:key_1");
    EXPECT_EQ(keys::project_index("p1"), "sc:project:p1");
    EXPECT_EQ(keys::config("acme"), "sc:{acme}:config");
    const Fields f{{"a", "1"}, {"b", ""}};
    ASSERT_NE(field(f, "b"), nullptr);
    EXPECT_EQ(*field(f, "b"), "");
    EXPECT_EQ(field(f, "c"), nullptr);
}

// ---------------------------------------------------------------- commands

TEST(RecordsCommands, OrgRecordsCommandShape) {
    const std::vector<std::string> argv = org_records_command("acme", "k1", "acme-prod", "").argv;
    EXPECT_EQ(argv, (std::vector<std::string>{"EVALSHA", scripts::org_records().sha1, "4", "sc:{acme}:config",
                                              "sc:{acme}:key:k1", "sc:{acme}:project:acme-prod",
                                              "sc:{acme}:org"}));
    const std::vector<std::string> with = org_records_command("acme", "k1", "acme-prod", "cust_42").argv;
    EXPECT_EQ(with, (std::vector<std::string>{"EVALSHA", scripts::org_records().sha1, "5", "sc:{acme}:config",
                                              "sc:{acme}:key:k1", "sc:{acme}:project:acme-prod", "sc:{acme}:org",
                                              "sc:{acme}:customer:cust_42"}));
    // Every key in the org's slot.
    for (std::size_t i = 3; i < with.size(); ++i) EXPECT_EQ(with[i].rfind("sc:{acme}:", 0), 0u) << with[i];
}

TEST(RecordsCommands, KeyLookupCommandShape) {
    const std::string sha = sha256_hex("x");
    EXPECT_EQ(key_lookup_command(sha).argv,
              (std::vector<std::string>{"EVALSHA", scripts::hgetall().sha1, "1", "sc:key:" + sha}));
}

TEST(RecordsCommands, ApiOrgsSampleCommandShape) {
    EXPECT_EQ(api_orgs_sample_command(8).argv, (std::vector<std::string>{"EVALSHA", scripts::api_orgs_sample().sha1,
                                                                      "1", "sc:orgs", "8"}));
}

// ---------------------------------------------------------------- ledgers of identities

const Counter *counter(const Ledger &l, const std::string &key) {
    for (const Counter &c : l.counters)
        if (c.key == key) return &c;
    return nullptr;
}

TEST_F(RecordsTest, LedgerOfAnIdentityUsesTheOverriddenLimits) {
    OrgRecords records;
    records.version = "7";
    records.key = {{"source", "file"}, {"limits", R"({"monthly_usd":"3"})"}};
    records.project = {{"source", "file"}, {"limits", R"({"daily_usd":"4"})"}};
    records.customer = {{"limits", R"({"daily_usd":"0.5"})"}};
    const Resolution r = file(records, "cust_1");
    ASSERT_EQ(r.problem, IdentityProblem::none) << r.reason;
    const Ledger l = ledger_for(*policy, *r.identity, periods_at(kNow));
    EXPECT_EQ(l.config_version, "7");
    EXPECT_EQ(l.org, "acme");
    EXPECT_EQ(l.key_id, "k1");
    const Counter *key_monthly = counter(l, "sc:{acme}:spend:key:k1:m:2026-11");
    ASSERT_NE(key_monthly, nullptr);
    EXPECT_EQ(key_monthly->cap, 3 * kUsd);
    const Counter *key_daily = counter(l, "sc:{acme}:spend:key:k1:d:2026-11-18");
    ASSERT_NE(key_daily, nullptr);
    EXPECT_FALSE(key_daily->cap);  // the file's daily_usd 2 was replaced
    const Counter *project_daily = counter(l, "sc:{acme}:spend:project:acme-prod:d:2026-11-18");
    ASSERT_NE(project_daily, nullptr);
    EXPECT_EQ(project_daily->cap, 4 * kUsd);
    const Counter *project_monthly = counter(l, "sc:{acme}:spend:project:acme-prod:m:2026-11");
    ASSERT_NE(project_monthly, nullptr);
    EXPECT_FALSE(project_monthly->cap);
    const Counter *customer_daily = counter(l, "sc:{acme}:spend:customer:cust_1:d:2026-11-18");
    ASSERT_NE(customer_daily, nullptr);
    EXPECT_EQ(customer_daily->cap, kUsd / 2);
    const Counter *customer_monthly = counter(l, "sc:{acme}:spend:customer:cust_1:m:2026-11");
    ASSERT_NE(customer_monthly, nullptr);
    EXPECT_EQ(customer_monthly->cap, 1 * kUsd);  // the default
    const Counter *customer_rpm = counter(l, "sc:{acme}:rate:customer:cust_1:rpm:" + periods_at(kNow).minute);
    ASSERT_NE(customer_rpm, nullptr);
    EXPECT_EQ(customer_rpm->cap, 30);

    // The file key's own ledger is unchanged (and has no version).
    const Ledger plain = ledger_for(*policy, *k1, "", periods_at(kNow));
    EXPECT_EQ(plain.config_version, "");
    EXPECT_EQ(counter(plain, "sc:{acme}:spend:key:k1:m:2026-11")->cap, 10 * kUsd);
    EXPECT_EQ(counter(plain, "sc:{acme}:spend:key:k1:d:2026-11-18")->cap, 2 * kUsd);
}

TEST_F(RecordsTest, LedgerOfAnApiOrgsIdentityIsPrepaidAsItsRecordSays) {
    const Resolution r = api(beta_records(), kBetaLookup);
    ASSERT_EQ(r.problem, IdentityProblem::none) << r.reason;
    const Ledger l = ledger_for(*policy, *r.identity, periods_at(kNow));
    EXPECT_EQ(l.config_version, "12");
    EXPECT_EQ(l.org, "beta");
    ASSERT_TRUE(l.balance);
    EXPECT_EQ(l.counters[*l.balance].key, "sc:{beta}:balance");
    ASSERT_TRUE(l.held);
    EXPECT_EQ(l.low_balance, 5 * kUsd);
    EXPECT_EQ(counter(l, "sc:{beta}:spend:key:key_a:m:2026-11")->cap, 3 * kUsd);
    EXPECT_EQ(counter(l, "sc:{beta}:spend:project:beta-proj:d:2026-11-18")->cap, kUsd + kUsd / 2);
    EXPECT_EQ(counter(l, "sc:{beta}:spend:org:beta:m:2026-11")->cap, 1 * kUsd);  // the free plan's
    EXPECT_EQ(counter(l, "sc:{beta}:spend:org:beta:d:2026-11-18")->cap, 7 * kUsd);
    ASSERT_NE(counter(l, "sc:{beta}:rate:key:key_a:rpm:" + periods_at(kNow).minute), nullptr);
}

TEST_F(RecordsTest, LedgerCacheByIdentityHitsPerIdentityAndMinute) {
    LedgerCache cache(64);
    OrgRecords records;
    records.version = "1";
    const Resolution a = file(records);
    ASSERT_NE(a.identity, nullptr);
    const auto first = cache.get(*policy, *a.identity, kNow);
    ASSERT_NE(first, nullptr);
    EXPECT_EQ(first->config_version, "1");
    EXPECT_EQ(cache.misses(), 1u);
    const auto again = cache.get(*policy, *a.identity, kNow + 5);  // same minute (11:06)
    EXPECT_EQ(again, first);
    EXPECT_EQ(cache.hits(), 1u);

    // The same key read again (a new version): a new serial, a miss.
    records.version = "2";
    records.key = {{"limits", R"({"monthly_usd":"1"})"}};
    const Resolution b = file(records);
    const auto second = cache.get(*policy, *b.identity, kNow);
    EXPECT_NE(second, first);
    EXPECT_EQ(cache.misses(), 2u);
    EXPECT_EQ(second->config_version, "2");
    EXPECT_EQ(counter(*second, "sc:{acme}:spend:key:k1:m:2026-11")->cap, 1 * kUsd);
    EXPECT_EQ(counter(*first, "sc:{acme}:spend:key:k1:m:2026-11")->cap, 10 * kUsd);

    // A new minute: a miss.
    const auto later = cache.get(*policy, *a.identity, kNow + 60);
    EXPECT_NE(later, first);
    EXPECT_EQ(cache.misses(), 3u);

    // The file key's own entry is another (no serial), with no version.
    const auto by_key = cache.get(*policy, *k1, "", kNow);
    EXPECT_NE(by_key, first);
    EXPECT_EQ(by_key->config_version, "");
    EXPECT_EQ(cache.get(*policy, *k1, "", kNow), by_key);
    EXPECT_EQ(cache.get(*policy, *a.identity, kNow + 61), later);
}

TEST_F(RecordsTest, LedgerCacheOfOneSlotTellsIdentitiesApart) {
    LedgerCache cache(1);
    const Resolution a = file(OrgRecords{});
    const Resolution b = file(OrgRecords{});
    const auto la = cache.get(*policy, *a.identity, kNow);
    const auto lb = cache.get(*policy, *b.identity, kNow);
    EXPECT_NE(la, lb);
    EXPECT_EQ(cache.hits(), 0u);
    EXPECT_EQ(cache.get(*policy, *b.identity, kNow), lb);
    EXPECT_EQ(cache.hits(), 1u);
    // A file key entry in the same slot never answers an identity, nor the reverse.
    const auto lk = cache.get(*policy, *k1, "", kNow);
    EXPECT_NE(cache.get(*policy, *b.identity, kNow), lk);
    EXPECT_NE(cache.get(*policy, *k1, "", kNow), cache.get(*policy, *a.identity, kNow));
}

// ---------------------------------------------------------------- IdentityCache

class IdentityCacheTest : public RecordsTest {
protected:
    std::shared_ptr<const Identity> at_version(const std::string &version, const std::string &customer = "") {
        OrgRecords records;
        records.version = version;
        return file(records, customer).identity;
    }
    std::shared_ptr<const Identity> beta_at(const std::string &version) {
        OrgRecords records = beta_records();
        records.version = version;
        return api(records, kBetaLookup).identity;
    }
};

TEST_F(IdentityCacheTest, FindHitsOnlyAtTheOrgsVersionAndPolicy) {
    IdentityCache cache(64);
    const auto id = at_version("");
    ASSERT_NE(id, nullptr);
    EXPECT_EQ(cache.find(file_sha(), "", policy->generation), nullptr);
    cache.store(file_sha(), id);
    // Never seen org: version "" assumed; a file identity with no records hits.
    EXPECT_EQ(cache.org_version("acme"), "");
    EXPECT_EQ(cache.find(file_sha(), "", policy->generation), id);
    // Another policy, another customer, another secret: misses.
    EXPECT_EQ(cache.find(file_sha(), "", policy->generation + 1), nullptr);
    EXPECT_EQ(cache.find(file_sha(), "cust_1", policy->generation), nullptr);
    EXPECT_EQ(cache.find(other_sha(), "", policy->generation), nullptr);

    // The org is now at version 3: the "" identity is stale.
    cache.set_org_version("acme", "3");
    EXPECT_EQ(cache.org_version("acme"), "3");
    EXPECT_EQ(cache.find(file_sha(), "", policy->generation), nullptr);
    const auto v3 = at_version("3");
    cache.store(file_sha(), v3);
    EXPECT_EQ(cache.find(file_sha(), "", policy->generation), v3);
    cache.set_org_version("acme", "4");
    EXPECT_EQ(cache.find(file_sha(), "", policy->generation), nullptr);
    cache.set_org_version("acme", "3");
    EXPECT_EQ(cache.find(file_sha(), "", policy->generation), v3);

    // Identities per customer live side by side.
    const auto with_customer = at_version("3", "cust_1");
    cache.store(file_sha(), with_customer);
    EXPECT_EQ(cache.find(file_sha(), "cust_1", policy->generation), with_customer);
    EXPECT_EQ(cache.find(file_sha(), "", policy->generation), v3);
}

TEST_F(IdentityCacheTest, OrgChangedMakesEveryIdentityOfThatOrgMiss) {
    IdentityCache cache(256);
    cache.set_org_version("acme", "5");
    cache.set_org_version("beta", "12");
    const auto acme = at_version("5");
    const auto acme_c = at_version("5", "cust_42");
    const auto beta = beta_at("12");
    ASSERT_NE(beta, nullptr);
    cache.store(file_sha(), acme);
    cache.store(file_sha(), acme_c);
    cache.store(api_sha(), beta);
    ASSERT_EQ(cache.find(file_sha(), "", policy->generation), acme);
    ASSERT_EQ(cache.find(file_sha(), "cust_42", policy->generation), acme_c);
    ASSERT_EQ(cache.find(api_sha(), "", policy->generation), beta);

    cache.org_changed("acme");
    EXPECT_EQ(cache.find(file_sha(), "", policy->generation), nullptr);
    EXPECT_EQ(cache.find(file_sha(), "cust_42", policy->generation), nullptr);
    EXPECT_EQ(cache.find(api_sha(), "", policy->generation), beta);  // another org still hits
    // Even a file identity read without records ("") misses now.
    cache.store(file_sha(), at_version(""));
    EXPECT_EQ(cache.find(file_sha(), "", policy->generation), nullptr);
    // Once the records are read again at the new version, it hits.
    cache.set_org_version("acme", "6");
    const auto fresh = at_version("6");
    cache.store(file_sha(), fresh);
    EXPECT_EQ(cache.find(file_sha(), "", policy->generation), fresh);
}

TEST_F(IdentityCacheTest, UnknownSecretsAreRememberedForTheTtl) {
    IdentityCache cache(16, 1000);
    EXPECT_FALSE(cache.known_unknown(other_sha(), 5000));
    cache.remember_unknown(other_sha(), 5000);
    EXPECT_TRUE(cache.known_unknown(other_sha(), 5000));
    EXPECT_TRUE(cache.known_unknown(other_sha(), 5999));
    EXPECT_FALSE(cache.known_unknown(other_sha(), 6000));
    EXPECT_FALSE(cache.known_unknown(other_sha(), 100000));
    EXPECT_FALSE(cache.known_unknown(api_sha(), 5500));
    // Remembered again later: a fresh TTL.
    cache.remember_unknown(other_sha(), 7000);
    EXPECT_TRUE(cache.known_unknown(other_sha(), 7999));
    EXPECT_FALSE(cache.known_unknown(other_sha(), 8000));

    IdentityCache longer(16, 250);
    longer.remember_unknown(api_sha(), 0);
    EXPECT_TRUE(longer.known_unknown(api_sha(), 249));
    EXPECT_FALSE(longer.known_unknown(api_sha(), 250));
}

TEST_F(IdentityCacheTest, LookupsAreRememberedAndForgottenBySlot) {
    IdentityCache cache(16);
    EXPECT_FALSE(cache.lookup(api_sha()));
    cache.remember_lookup(api_sha(), kBetaLookup);
    const std::optional<KeyLookup> found = cache.lookup(api_sha());
    ASSERT_TRUE(found);
    EXPECT_EQ(found->id, "key_a");
    EXPECT_EQ(found->org, "beta");
    EXPECT_EQ(found->project, "beta-proj");
    EXPECT_FALSE(cache.lookup(other_sha()));

    // One slot: a newcomer replaces the one before.
    IdentityCache one(1);
    one.remember_lookup(api_sha(), kBetaLookup);
    one.remember_lookup(other_sha(), KeyLookup{"key_z", "beta", "beta-proj"});
    EXPECT_FALSE(one.lookup(api_sha()));
    ASSERT_TRUE(one.lookup(other_sha()));
    EXPECT_EQ(one.lookup(other_sha())->id, "key_z");
    // The same for unknowns and identities.
    one.remember_unknown(api_sha(), 0);
    one.remember_unknown(other_sha(), 0);
    EXPECT_FALSE(one.known_unknown(api_sha(), 1));
    EXPECT_TRUE(one.known_unknown(other_sha(), 1));
    const auto a = beta_at("");
    const auto b = at_version("");
    one.store(api_sha(), a);
    one.store(file_sha(), b);
    EXPECT_EQ(one.find(api_sha(), "", policy->generation), nullptr);
    EXPECT_EQ(one.find(file_sha(), "", policy->generation), b);
}

TEST_F(IdentityCacheTest, MemoryStaysBoundedWhateverTheTraffic) {
    constexpr std::size_t kSlots = 16;
    constexpr int kEntries = 100000;
    IdentityCache cache(kSlots, 1000);
    const auto id = at_version("");
    std::vector<std::string> shas;
    shas.reserve(kEntries);
    for (int i = 0; i < kEntries; ++i) shas.push_back(sha256_hex("secret-" + std::to_string(i)));
    for (const std::string &sha : shas) {
        cache.remember_lookup(sha, KeyLookup{"key_x", "acme", "acme-prod"});
        cache.remember_unknown(sha, 0);
        cache.store(sha, id);
    }
    std::size_t lookups = 0, unknowns = 0, identities = 0;
    for (const std::string &sha : shas) {
        lookups += cache.lookup(sha) ? 1 : 0;
        unknowns += cache.known_unknown(sha, 1) ? 1 : 0;
        identities += cache.find(sha, "", policy->generation) ? 1 : 0;
    }
    EXPECT_LE(lookups, kSlots);
    EXPECT_GE(lookups, 1u);
    EXPECT_LE(unknowns, kSlots);
    EXPECT_GE(unknowns, 1u);
    EXPECT_LE(identities, kSlots);
    EXPECT_GE(identities, 1u);
    // The last one stored is always there.
    EXPECT_TRUE(cache.lookup(shas.back()));
    EXPECT_TRUE(cache.known_unknown(shas.back(), 1));
}

TEST_F(IdentityCacheTest, OrgVersionsAreBounded) {
    constexpr std::size_t kSlots = 16;
    IdentityCache cache(kSlots);
    for (int i = 0; i < 100000; ++i) cache.set_org_version("org_" + std::to_string(i), std::to_string(i + 1));
    std::size_t remembered = 0;
    for (int i = 0; i < 100000; ++i) remembered += cache.org_version("org_" + std::to_string(i)).empty() ? 0 : 1;
    EXPECT_LE(remembered, kSlots);
    EXPECT_EQ(cache.org_version("org_99999"), "100000");  // the newest is kept
    // Updating a known org never evicts the others.
    IdentityCache small(2);
    small.set_org_version("a", "1");
    small.set_org_version("b", "1");
    small.set_org_version("a", "2");
    EXPECT_EQ(small.org_version("a"), "2");
    EXPECT_EQ(small.org_version("b"), "1");
    small.set_org_version("c", "1");  // full: forgets (a forgotten version costs one stale reserve)
    EXPECT_EQ(small.org_version("c"), "1");
    EXPECT_LE(static_cast<int>(!small.org_version("a").empty()) + static_cast<int>(!small.org_version("b").empty()),
              1);
}

TEST_F(IdentityCacheTest, ZeroSlotsStillWork) {
    IdentityCache cache(0, 1000);
    cache.remember_lookup(api_sha(), kBetaLookup);
    EXPECT_TRUE(cache.lookup(api_sha()));
    cache.set_org_version("acme", "1");
    EXPECT_EQ(cache.org_version("acme"), "1");
    const auto id = at_version("1");
    cache.store(file_sha(), id);
    EXPECT_EQ(cache.find(file_sha(), "", policy->generation), id);
}

}  // namespace
}  // namespace spendcap
