// The policy file: exact prices, cross references, and a precise file:line
// reason for every mistake.
#include "policy.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>

namespace spendcap {
namespace {

const std::string kDataDir = SPEND_CAP_TEST_DATA;

// Raw strings below start with a newline for readability; line 1 is the
// line after R"(.
std::string yaml(const char *text) {
    std::string s(text);
    if (!s.empty() && s[0] == '\n') s.erase(0, 1);
    return s;
}

constexpr const char *kHashA = "e0f45c82d6ca5ee6f54cc819900039a64d865a336bec00b8ff16a10e40033839";
constexpr const char *kHashB = "d3e64608f5182a4408eef248830800d9f4b82167cb91b4b193ac488aa1235fc9";

// Parses `text` expecting a PolicyError at `line` with exactly `reason`.
void expect_error(const std::string &text, int line, const std::string &reason) {
    try {
        parse_policy(text, "policy.yaml");
        ADD_FAILURE() << "expected a PolicyError at line " << line << ": " << reason;
    } catch (const PolicyError &e) {
        EXPECT_EQ(e.file(), "policy.yaml");
        EXPECT_EQ(e.line(), line) << e.what();
        EXPECT_EQ(e.reason(), reason);
        EXPECT_EQ(std::string(e.what()), "policy.yaml:" + std::to_string(line) + ": " + reason);
    }
}

// A valid base to put one mistake into.
std::string with_key(const std::string &key_fields) {
    return yaml(R"(
models:
  m: { input: 1, output: 2 }
orgs:
  acme:
projects:
  p:
    org: acme
keys:
  - id: k1
)") + key_fields;
}

TEST(Policy, LoadsACompletePolicyWithExactPrices) {
    const auto policy = load_policy_file(kDataDir + "/policy/valid.yaml");
    ASSERT_NE(policy, nullptr);
    EXPECT_EQ(policy->file, kDataDir + "/policy/valid.yaml");

    ASSERT_EQ(policy->models.size(), 4u);
    const ModelPrice &mini = policy->models.at("gpt-4o-mini");
    EXPECT_EQ(mini.name, "gpt-4o-mini");
    EXPECT_EQ(mini.input, 150'000'000);  // 0.15 USD per million = 150,000,000 nano-USD per million
    EXPECT_EQ(mini.output, 600'000'000);
    EXPECT_EQ(mini.cached_input, 75'000'000);
    EXPECT_FALSE(mini.cache_write.has_value());
    EXPECT_FALSE(mini.cache_read.has_value());
    EXPECT_EQ(mini.max_output_tokens, 16384);
    EXPECT_EQ(mini.max_input_rate(), 150'000'000);

    const ModelPrice &sonnet = policy->models.at("claude-sonnet-4-5");
    EXPECT_EQ(sonnet.input, 3'000'000'000);
    EXPECT_EQ(sonnet.output, 15'000'000'000);
    EXPECT_EQ(sonnet.cache_write, 3'750'000'000);
    EXPECT_EQ(sonnet.cache_read, 300'000'000);
    EXPECT_EQ(sonnet.max_output_tokens, 64000);
    EXPECT_EQ(sonnet.max_input_rate(), 3'750'000'000);  // cache writes cost more than input

    const ModelPrice &embedding = policy->models.at("text-embedding-3-small");
    EXPECT_EQ(embedding.input, 20'000'000);
    EXPECT_EQ(embedding.output, 0);
    EXPECT_FALSE(embedding.max_output_tokens.has_value());

    const ModelPrice &fine_tuned = policy->models.at("ft:gpt-4o-mini:acme:custom");
    EXPECT_EQ(fine_tuned.input, 300'000'000);  // quoted prices are read the same way
    EXPECT_EQ(fine_tuned.output, 1'200'000'000);

    EXPECT_EQ(policy->unknown_model, "gpt-4o-mini");
    EXPECT_EQ(policy->default_max_output_tokens, 2048);

    ASSERT_EQ(policy->orgs.size(), 2u);
    EXPECT_EQ(policy->orgs.at("acme").id, "acme");
    EXPECT_EQ(policy->orgs.at("acme").limits.daily_usd, 20 * kNanosPerUsd);
    EXPECT_FALSE(policy->orgs.at("acme").limits.monthly_usd.has_value());
    EXPECT_FALSE(policy->orgs.at("globex").limits.daily_usd.has_value());

    ASSERT_EQ(policy->projects.size(), 2u);
    EXPECT_EQ(policy->projects.at("acme-prod").org, "acme");
    EXPECT_EQ(policy->projects.at("acme-prod").limits.monthly_usd, 50 * kNanosPerUsd);
    EXPECT_EQ(policy->projects.at("acme-dev").org, "acme");

    ASSERT_EQ(policy->keys_by_sha256.size(), 3u);
    const Key *prod = policy->find_key(kHashA);
    ASSERT_NE(prod, nullptr);
    EXPECT_EQ(prod->id, "key_prod_1");
    EXPECT_EQ(prod->sha256, kHashA);
    EXPECT_EQ(prod->project, "acme-prod");
    EXPECT_EQ(prod->limits.daily_usd, 2 * kNanosPerUsd);
    EXPECT_EQ(prod->limits.monthly_usd, 10 * kNanosPerUsd);
    EXPECT_EQ(prod->limits.lifetime_usd, 40'500'000'000);
    EXPECT_EQ(prod->limits.cost_cap(Window::daily), 2 * kNanosPerUsd);
    EXPECT_EQ(prod->limits.cost_cap(Window::monthly), 10 * kNanosPerUsd);
    EXPECT_EQ(prod->limits.cost_cap(Window::lifetime), 40'500'000'000);
    EXPECT_EQ(prod->expires_at, 1'798'761'600);  // 2027-01-01T00:00:00Z
    EXPECT_FALSE(prod->revoked);
    EXPECT_EQ(policy->project_of(*prod).id, "acme-prod");
    EXPECT_EQ(policy->org_of(*prod).id, "acme");

    // Hashes written in upper case are stored (and found) in lower case.
    const Key *dev = policy->find_key("f3f2ff059e85b9d75088a7306cf2b2e4ff86e84353127833df0c2223de24506c");
    ASSERT_NE(dev, nullptr);
    EXPECT_EQ(dev->id, "key_dev_1");
    EXPECT_FALSE(dev->expires_at.has_value());
    EXPECT_FALSE(dev->limits.cost_cap(Window::daily).has_value());

    const Key *old = policy->find_key(kHashB);
    ASSERT_NE(old, nullptr);
    EXPECT_TRUE(old->revoked);
    EXPECT_EQ(old->limits.daily_usd, 1);

    EXPECT_EQ(policy->find_key(std::string(64, '0')), nullptr);

    EXPECT_EQ(policy->price_for("claude-sonnet-4-5"), &sonnet);
    EXPECT_EQ(policy->price_for("some-new-model"), &mini);  // priced as unknown_model
}

TEST(Policy, UnknownModelsAreRejectedByDefault) {
    const auto policy = parse_policy(yaml(R"(
models:
  gpt-4o-mini: { input: 0.15, output: 0.60 }
)"),
                                     "p.yaml");
    EXPECT_EQ(policy->unknown_model, "reject");
    EXPECT_EQ(policy->default_max_output_tokens, 4096);
    EXPECT_NE(policy->price_for("gpt-4o-mini"), nullptr);
    EXPECT_EQ(policy->price_for("gpt-4o"), nullptr);
    EXPECT_EQ(policy->price_for("reject"), nullptr);
}

TEST(Policy, EmptySectionsAreAllowed) {
    const auto policy = parse_policy("models:\norgs:\nprojects:\nkeys:\n", "p.yaml");
    EXPECT_TRUE(policy->models.empty());
    EXPECT_TRUE(policy->keys_by_sha256.empty());
}

TEST(Policy, PriceIsNeverReadThroughFloatingPoint) {
    const auto policy = parse_policy(yaml(R"(
models:
  m: { input: 0.000000001, output: 123456.123456789 }
)"),
                                     "p.yaml");
    EXPECT_EQ(policy->models.at("m").input, 1);
    EXPECT_EQ(policy->models.at("m").output, 123'456'123'456'789);
}

TEST(PolicyErrors, BadYaml) {
    expect_error(yaml(R"(
models:
  m: { input: 1, output: 2
orgs:
)"),
                 3, "invalid YAML: end of map flow not found");
    expect_error("models:\n  m:\n    input: 1\n   output: 2\n", 4,
                 "invalid YAML: end of map not found");
}

TEST(PolicyErrors, EmptyOrNonMappingDocument) {
    expect_error("", 0, "the policy file is empty (expected models, orgs, projects and keys)");
    expect_error("# only a comment\n", 0, "the policy file is empty (expected models, orgs, projects and keys)");
    expect_error("- models\n", 1, "the policy must be a mapping of models, orgs, projects and keys");
}

TEST(PolicyErrors, UnknownFields) {
    expect_error("models: {}\nmodles: {}\n", 2, "unknown field `modles` in the top level");
    expect_error(yaml(R"(
models:
  m:
    input: 1
    ouput: 2
)"),
                 4, "unknown field `ouput` in model `m`");
    expect_error(yaml(R"(
orgs:
  acme:
    limit: { daily_usd: 1 }
)"),
                 3, "unknown field `limit` in org `acme`");
    expect_error(yaml(R"(
orgs:
  acme:
projects:
  p:
    org: acme
    owner: bob
)"),
                 6, "unknown field `owner` in project `p`");
    expect_error(with_key("    sha256: " + std::string(kHashA) + "\n    project: p\n    name: prod\n"), 12,
                 "unknown field `name` in key `k1`");
    expect_error(with_key("    sha256: " + std::string(kHashA) + "\n    project: p\n    limits: { weekly_usd: 3 }\n"),
                 12, "unknown field `weekly_usd` in limits of key `k1`");
}

TEST(PolicyErrors, UnsupportedSpecFieldsFailInsteadOfBeingIgnored) {
    expect_error("models: {}\nwarn_at: [0.5, 0.8]\n", 2, "`warn_at` is not supported by this version of spend-cap");
    expect_error("plans:\n  free:\n    limits: { monthly_usd: 1 }\n", 1,
                 "`plans` is not supported by this version of spend-cap");
    expect_error("customers:\n  default_limits: { monthly_usd: 1 }\n", 1,
                 "`customers` is not supported by this version of spend-cap");
    for (const char *field : {"plan: paid", "created_at: 2026-01-10T00:00:00Z", "prepaid: true",
                              "low_balance_usd: 5"}) {
        const std::string name = std::string(field).substr(0, std::string(field).find(':'));
        expect_error(std::string("orgs:\n  acme:\n    ") + field + "\n", 3,
                     "`" + name + "` is not supported by this version of spend-cap");
    }
    for (const char *limit : {"daily_requests", "monthly_requests", "daily_tokens", "monthly_tokens", "rpm", "tpm"}) {
        expect_error(with_key("    sha256: " + std::string(kHashA) + "\n    project: p\n    limits:\n" +
                              "      monthly_usd: 10\n      " + limit + ": 600\n"),
                     14, "`" + std::string(limit) + "` is not supported by this version of spend-cap");
    }
    expect_error("orgs:\n  acme:\n    limits: { daily_usd: 20, rpm: 60 }\n", 3,
                 "`rpm` is not supported by this version of spend-cap");
}

TEST(PolicyErrors, KeyNamesAMissingProject) {
    expect_error(yaml(R"(
models:
  m: { input: 1, output: 2 }
orgs:
  acme:
projects:
  p:
    org: acme
keys:
  - id: k1
    sha256: e0f45c82d6ca5ee6f54cc819900039a64d865a336bec00b8ff16a10e40033839
    project: q
)"),
                 11, "key `k1` names project `q`, which is not defined in `projects`");
}

TEST(PolicyErrors, ProjectNamesAMissingOrg) {
    expect_error(yaml(R"(
projects:
  p:
    org: acme
orgs:
  acne:
)"),
                 3, "project `p` names org `acme`, which is not defined in `orgs`");
}

TEST(PolicyErrors, MalformedSha256) {
    const std::string reason = "`sha256` of key `k1` must be 64 hexadecimal characters (the SHA-256 of the secret)";
    expect_error(with_key("    sha256: " + std::string(kHashA).substr(1) + "\n    project: p\n"), 10, reason);
    expect_error(with_key("    sha256: " + std::string(kHashA) + "0\n    project: p\n"), 10, reason);
    expect_error(with_key("    sha256: g" + std::string(kHashA).substr(1) + "\n    project: p\n"), 10, reason);
    expect_error(with_key("    sha256: [1]\n    project: p\n"), 10, reason);
}

TEST(PolicyErrors, BadPrices) {
    expect_error("models:\n  m:\n    input: 1e-3\n    output: 1\n", 3,
                 "`input` of model `m` is not an exact decimal amount (\"1e-3\"): exponents are not allowed; "
                 "write the amount in plain decimal");
    expect_error("models:\n  m:\n    input: 1\n    output: -1\n", 4,
                 "`output` of model `m` is not an exact decimal amount (\"-1\"): negative amounts are not allowed");
    expect_error("models:\n  m: { input: 1, output: 2, cached_input: 0.0000000001 }\n", 2,
                 "`cached_input` of model `m` is not an exact decimal amount (\"0.0000000001\"): "
                 "more than nine digits after the decimal point");
    expect_error("models:\n  m:\n    input: [1]\n", 3, "`input` of model `m` must be a decimal USD amount");
    expect_error("models:\n  m:\n    input:\n", 3, "`input` of model `m` must be a decimal USD amount");
    expect_error("models:\n  m:\n    input: 1\n    cache_read: .5\n", 4,
                 "`cache_read` of model `m` is not an exact decimal amount (\".5\"): amount must start with a digit");
    expect_error(with_key("    sha256: " + std::string(kHashA) + "\n    project: p\n    limits:\n      daily_usd: ten\n"),
                 13, "`daily_usd` in limits of key `k1` is not an exact decimal amount (\"ten\"): "
                     "amount must start with a digit");
}

TEST(PolicyErrors, BadTokenCounts) {
    expect_error("models:\n  m:\n    input: 1\n    max_output_tokens: 0\n", 4,
                 "`max_output_tokens` of model `m` must be a positive integer");
    expect_error("models:\n  m:\n    input: 1\n    max_output_tokens: 1.5\n", 4,
                 "`max_output_tokens` of model `m` must be a positive integer");
    expect_error("default_max_output_tokens: -3\n", 1, "`default_max_output_tokens` must be a positive integer");
    expect_error("default_max_output_tokens: 99999999999999999999\n", 1,
                 "`default_max_output_tokens` must be a positive integer");
}

TEST(PolicyErrors, MissingRequiredFields) {
    expect_error("models:\n  m:\n    output: 1\n", 2, "model `m` is missing `input`");
    expect_error("models:\n  m:\n", 2, "model `m` must be a mapping of prices");
    expect_error("orgs:\n  acme:\nprojects:\n  p:\n    limits: { daily_usd: 1 }\n", 4, "project `p` is missing `org`");
    expect_error("projects:\n  p:\n", 2, "project `p` must be a mapping with `org`");
    expect_error(with_key("    project: p\n"), 9, "key `k1` is missing `sha256`");
    expect_error(with_key("    sha256:\n    project: p\n"), 10,
                 "`sha256` of key `k1` must be 64 hexadecimal characters (the SHA-256 of the secret)");
    expect_error(with_key("    sha256: " + std::string(kHashA) + "\n"), 9, "key `k1` is missing `project`");
    expect_error(yaml(R"(
keys:
  - id: k1
    sha256: e0f45c82d6ca5ee6f54cc819900039a64d865a336bec00b8ff16a10e40033839
    project: p
  - sha256: d3e64608f5182a4408eef248830800d9f4b82167cb91b4b193ac488aa1235fc9
    project: p
)"),
                 5, "keys entry 2 is missing `id`");
}

TEST(PolicyErrors, Duplicates) {
    expect_error(yaml(R"(
models:
  m: { input: 1, output: 2 }
orgs:
  acme:
projects:
  p:
    org: acme
keys:
  - id: k1
    sha256: e0f45c82d6ca5ee6f54cc819900039a64d865a336bec00b8ff16a10e40033839
    project: p
  - id: k1
    sha256: d3e64608f5182a4408eef248830800d9f4b82167cb91b4b193ac488aa1235fc9
    project: p
)"),
                 12, "duplicate key id `k1` (first at line 9)");
    expect_error(yaml(R"(
orgs:
  acme:
projects:
  p:
    org: acme
keys:
  - id: k1
    sha256: e0f45c82d6ca5ee6f54cc819900039a64d865a336bec00b8ff16a10e40033839
    project: p
  - id: k2
    sha256: E0F45C82D6CA5EE6F54CC819900039A64D865A336BEC00B8FF16A10E40033839
    project: p
)"),
                 11, "key `k2` has the same sha256 as key `k1` (line 8)");
    // YAML itself lets a later duplicate silently win; a doubled cap is a mistake.
    expect_error("orgs:\n  acme:\n    limits:\n      daily_usd: 1\n      daily_usd: 100\n", 5,
                 "duplicate field `daily_usd` in limits of org `acme` (first at line 4)");
    expect_error("models:\n  m: { input: 1 }\n  m: { input: 2 }\n", 3,
                 "duplicate field `m` in `models` (first at line 2)");
}

TEST(PolicyErrors, UnknownModelMustBeListed) {
    expect_error("unknown_model: gpt-5\nmodels:\n  m: { input: 1 }\n", 1,
                 "`unknown_model` names model `gpt-5`, which is not in `models` (use `reject` or a listed model)");
    expect_error("unknown_model: [reject]\n", 1, "`unknown_model` must be a non-empty string");
    expect_error("unknown_model:\nmodels:\n  m: { input: 1 }\n", 1, "`unknown_model` must be a non-empty string");
}

TEST(PolicyErrors, WrongTypes) {
    expect_error("models:\n  - m\n", 2, "`models` must be a mapping");
    expect_error("keys:\n  id: k1\n", 2, "`keys` must be a list");
    expect_error("keys:\n  - k1\n", 2, "keys entry 1 must be a mapping");
    expect_error("orgs:\n  acme:\n    limits: 5\n", 3, "`limits` of org `acme` must be a mapping");
    expect_error("orgs:\n  acme: 5\n", 2, "org `acme` must be a mapping");
    expect_error(with_key("    sha256: " + std::string(kHashA) + "\n    project: p\n    revoked: maybe\n"), 12,
                 "`revoked` of key `k1` must be true or false");
    expect_error(with_key("    sha256: " + std::string(kHashA) + "\n    project: p\n    expires_at: next year\n"),
                 12, "`expires_at` of key `k1` must be an RFC 3339 time such as 2027-01-01T00:00:00Z");
    expect_error(with_key("    sha256: " + std::string(kHashA) + "\n    project: [p]\n"), 11,
                 "`project` of key `k1` must be a non-empty string");
}

TEST(PolicyErrors, IdsMustFitTheRedisKeyLayout) {
    expect_error("orgs:\n  \"ac:me\":\n", 2,
                 "org id `ac:me` must not contain ':', '{', '}', spaces or control characters");
    expect_error("orgs:\n  acme:\nprojects:\n  \"{p}\":\n    org: acme\n", 4,
                 "project id `{p}` must not contain ':', '{', '}', spaces or control characters");
}

TEST(PolicyErrors, UnreadableFile) {
    const std::string path = kDataDir + "/policy/does-not-exist.yaml";
    try {
        load_policy_file(path);
        ADD_FAILURE() << "expected a PolicyError";
    } catch (const PolicyError &e) {
        EXPECT_EQ(e.file(), path);
        EXPECT_EQ(e.line(), 0);
        EXPECT_EQ(e.reason(), std::string("cannot open policy file: ") + std::strerror(ENOENT));
        EXPECT_EQ(std::string(e.what()), path + ":0: " + e.reason());
    }
}

TEST(Scopes, NamesAndWords) {
    EXPECT_STREQ(scope_name(Scope::key), "key");
    EXPECT_STREQ(scope_name(Scope::project), "project");
    EXPECT_STREQ(scope_name(Scope::org), "org");
    EXPECT_STREQ(scope_word(Scope::key), "api key");
    EXPECT_STREQ(scope_word(Scope::project), "project");
    EXPECT_STREQ(scope_word(Scope::org), "account");
}

}  // namespace
}  // namespace spendcap
