// The policy file: exact prices, cross references, and a precise file:line
// reason for every mistake.
#include "policy/policy.h"

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
    // A model with cache_write and no cache_write_1h: Anthropic's one-hour price, 2 x input,
    // the highest rate an input token of it can have.
    EXPECT_EQ(sonnet.cache_write_1h, 6'000'000'000);
    EXPECT_EQ(sonnet.max_input_rate(), 6'000'000'000);
    EXPECT_FALSE(mini.cache_write_1h.has_value());
    EXPECT_FALSE(mini.context_window.has_value());
    EXPECT_EQ(policy->default_context_window, 200000);
    EXPECT_EQ(policy->context_window(mini), 200000);

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
    expect_error(with_key("    sha256: " + std::string(kHashA) + "\n    project: p\n    limits: { hourly_usd: 3 }\n"),
                 12, "unknown field `hourly_usd` in limits of key `k1`");
}

TEST(Policy, EveryLimitParses) {
    const auto policy = parse_policy(with_key("    sha256: " + std::string(kHashA) + "\n    project: p\n" + yaml(R"(
    limits:
      daily_usd: 2
      monthly_usd: 10.5
      lifetime_usd: 40
      daily_requests: 100
      monthly_requests: 3000
      daily_tokens: 50000
      monthly_tokens: 9223372036854775807
      rpm: 600
      tpm: 200000
)")),
                                     "p.yaml");
    const Limits &limits = policy->find_key(kHashA)->limits;
    EXPECT_EQ(limits.daily_usd, 2 * kNanosPerUsd);
    EXPECT_EQ(limits.monthly_usd, 10'500'000'000);
    EXPECT_EQ(limits.lifetime_usd, 40 * kNanosPerUsd);
    EXPECT_EQ(limits.daily_requests, 100);
    EXPECT_EQ(limits.monthly_requests, 3000);
    EXPECT_EQ(limits.daily_tokens, 50000);
    EXPECT_EQ(limits.monthly_tokens, 9'223'372'036'854'775'807);  // the largest int64
    EXPECT_EQ(limits.rpm, 600);
    EXPECT_EQ(limits.tpm, 200000);
    EXPECT_EQ(limits.request_cap(Window::daily), 100);
    EXPECT_EQ(limits.request_cap(Window::monthly), 3000);
    EXPECT_FALSE(limits.request_cap(Window::lifetime).has_value());  // no lifetime counters
    EXPECT_EQ(limits.token_cap(Window::daily), 50000);
    EXPECT_EQ(limits.token_cap(Window::monthly), 9'223'372'036'854'775'807);
    EXPECT_FALSE(limits.token_cap(Window::lifetime).has_value());
}

TEST(Policy, AbsentLimitsStayAbsent) {
    const auto policy = parse_policy("orgs:\n  acme:\n    limits: { rpm: 5 }\n", "p.yaml");
    const Limits &limits = policy->orgs.at("acme").limits;
    EXPECT_EQ(limits.rpm, 5);
    for (Window w : {Window::daily, Window::monthly, Window::lifetime}) {
        EXPECT_FALSE(limits.cost_cap(w).has_value());
        EXPECT_FALSE(limits.request_cap(w).has_value());
        EXPECT_FALSE(limits.token_cap(w).has_value());
    }
    EXPECT_FALSE(limits.tpm.has_value());
}

TEST(Policy, ZeroCountCapsAreCapsThatBlockEverything) {
    const auto policy = parse_policy(
        "orgs:\n  acme:\n    limits: { daily_requests: 0, monthly_requests: 0, daily_tokens: 0, "
        "monthly_tokens: 0, rpm: 0, tpm: 0 }\n",
        "p.yaml");
    const Limits &limits = policy->orgs.at("acme").limits;
    EXPECT_EQ(limits.daily_requests, 0);
    EXPECT_EQ(limits.monthly_requests, 0);
    EXPECT_EQ(limits.daily_tokens, 0);
    EXPECT_EQ(limits.monthly_tokens, 0);
    EXPECT_EQ(limits.rpm, 0);
    EXPECT_EQ(limits.tpm, 0);
}

TEST(PolicyErrors, CountLimitsMustBeNonNegativeIntegers) {
    for (const char *limit : {"daily_requests", "monthly_requests", "daily_tokens", "monthly_tokens", "rpm", "tpm"})
        for (const char *bad : {"-1", "+5", "1.5", "1.0", "1e3", "0x10", "ten", "\"\"", "[1]", "{ n: 1 }",
                                "9223372036854775808", "99999999999999999999"})
            expect_error(std::string("orgs:\n  acme:\n    limits:\n      daily_usd: 1\n      ") + limit + ": " + bad +
                             "\n",
                         5, "`" + std::string(limit) + "` in limits of org `acme` must be a non-negative integer");
    expect_error("orgs:\n  acme:\n    limits:\n      rpm:\n      tpm: 5\n", 4,
                 "`rpm` in limits of org `acme` must be a non-negative integer");
}

TEST(Policy, WarnAtIsExactSortedAndCanonical) {
    const auto policy = parse_policy("warn_at: [0.95, 0.50, 1.0, 0.8, 0.000000001, \"0.25\"]\n", "p.yaml");
    ASSERT_EQ(policy->warn_at.size(), 6u);
    const std::pair<const char *, std::int64_t> expected[] = {
        {"0.000000001", 1}, {"0.25", 250'000'000}, {"0.5", 500'000'000},
        {"0.8", 800'000'000}, {"0.95", 950'000'000}, {"1", 1'000'000'000}};
    for (std::size_t i = 0; i < 6; ++i) {
        EXPECT_EQ(policy->warn_at[i].label, expected[i].first);
        EXPECT_EQ(policy->warn_at[i].billionths, expected[i].second);
    }
    EXPECT_EQ(parse_policy("warn_at: [1]\n", "p.yaml")->warn_at.at(0).label, "1");
    EXPECT_EQ(parse_policy("warn_at: [0.999999999]\n", "p.yaml")->warn_at.at(0).label, "0.999999999");
}

TEST(Policy, WarnAtMayBeEmptyOrAbsent) {
    EXPECT_TRUE(parse_policy("warn_at: []\n", "p.yaml")->warn_at.empty());
    EXPECT_TRUE(parse_policy("warn_at:\n", "p.yaml")->warn_at.empty());
    EXPECT_TRUE(parse_policy("models: {}\n", "p.yaml")->warn_at.empty());
}

TEST(PolicyErrors, BadWarnAt) {
    expect_error("models: {}\nwarn_at: 0.5\n", 2, "`warn_at` must be a list of fractions such as [0.5, 0.8, 0.95]");
    expect_error("warn_at: { a: 0.5 }\n", 1, "`warn_at` must be a list of fractions such as [0.5, 0.8, 0.95]");
    expect_error("warn_at:\n  - 0.5\n  - [0.8]\n", 3, "`warn_at` entries must be decimal fractions such as 0.8");
    expect_error("warn_at:\n  - 0.5\n  - 5e-1\n", 3,
                 "`warn_at` entry \"5e-1\" is not an exact decimal fraction: exponents are not allowed; "
                 "write the amount in plain decimal");
    expect_error("warn_at: [-0.5]\n", 1,
                 "`warn_at` entry \"-0.5\" is not an exact decimal fraction: negative amounts are not allowed");
    expect_error("warn_at: [0.0000000001]\n", 1,
                 "`warn_at` entry \"0.0000000001\" is not an exact decimal fraction: "
                 "more than nine digits after the decimal point");
    expect_error("warn_at: [half]\n", 1,
                 "`warn_at` entry \"half\" is not an exact decimal fraction: amount must start with a digit");
    expect_error("warn_at: [0]\n", 1, "`warn_at` entry \"0\" must be more than 0 and at most 1");
    expect_error("warn_at: [0.000]\n", 1, "`warn_at` entry \"0.000\" must be more than 0 and at most 1");
    expect_error("warn_at: [1.000000001]\n", 1, "`warn_at` entry \"1.000000001\" must be more than 0 and at most 1");
    expect_error("warn_at: [50]\n", 1, "`warn_at` entry \"50\" must be more than 0 and at most 1");
}

TEST(PolicyErrors, DuplicateWarnAtFractions) {
    expect_error("warn_at:\n  - 0.5\n  - 0.8\n  - 0.50\n", 4, "duplicate `warn_at` fraction 0.5 (first at line 2)");
    expect_error("warn_at: [1, 0.9, 1.00]\n", 1, "duplicate `warn_at` fraction 1 (first at line 1)");
}

// The SPEC section 2 example's plans and org.
const char *kPlans = R"(
plans:
  free:
    limits: { monthly_usd: 1, rpm: 10 }
  paid:
    ceilings:
      - { cleared_usd: 0,    age_days: 0,  monthly_usd: 100 }
      - { cleared_usd: 100,  age_days: 14, monthly_usd: 1000 }
      - { cleared_usd: 5000, age_days: 90, monthly_usd: 25000.5 }
orgs:
  acme:
    plan: paid
    created_at: 2026-01-10T00:00:00Z
    limits: { daily_usd: 20 }
    prepaid: true
    low_balance_usd: 5
  hobby:
    plan: free
    prepaid: false
  plain:
)";

TEST(Policy, PlansParse) {
    const auto policy = parse_policy(yaml(kPlans), "p.yaml");
    ASSERT_EQ(policy->plans.size(), 2u);
    const Plan &free = policy->plans.at("free");
    EXPECT_EQ(free.name, "free");
    EXPECT_EQ(free.limits.monthly_usd, 1 * kNanosPerUsd);
    EXPECT_EQ(free.limits.rpm, 10);
    EXPECT_TRUE(free.ceilings.empty());

    const Plan &paid = policy->plans.at("paid");
    EXPECT_EQ(paid.name, "paid");
    EXPECT_FALSE(paid.limits.monthly_usd.has_value());
    ASSERT_EQ(paid.ceilings.size(), 3u);
    EXPECT_EQ(paid.ceilings[0].cleared_usd, 0);
    EXPECT_EQ(paid.ceilings[0].age_days, 0);
    EXPECT_EQ(paid.ceilings[0].monthly_usd, 100 * kNanosPerUsd);
    EXPECT_EQ(paid.ceilings[1].cleared_usd, 100 * kNanosPerUsd);
    EXPECT_EQ(paid.ceilings[1].age_days, 14);
    EXPECT_EQ(paid.ceilings[1].monthly_usd, 1000 * kNanosPerUsd);
    EXPECT_EQ(paid.ceilings[2].cleared_usd, 5000 * kNanosPerUsd);
    EXPECT_EQ(paid.ceilings[2].age_days, 90);
    EXPECT_EQ(paid.ceilings[2].monthly_usd, 25'000'500'000'000);
}

TEST(Policy, OrgPlanCreatedAtPrepaidAndLowBalanceParse) {
    const auto policy = parse_policy(yaml(kPlans), "p.yaml");
    const Org &acme = policy->orgs.at("acme");
    EXPECT_EQ(acme.plan, "paid");
    EXPECT_EQ(acme.created_at, 1'768'003'200);  // 2026-01-10T00:00:00Z
    EXPECT_TRUE(acme.prepaid);
    EXPECT_EQ(acme.low_balance_usd, 5 * kNanosPerUsd);
    EXPECT_EQ(acme.limits.daily_usd, 20 * kNanosPerUsd);
    EXPECT_EQ(policy->plan_of(acme), &policy->plans.at("paid"));

    const Org &hobby = policy->orgs.at("hobby");
    EXPECT_EQ(hobby.plan, "free");
    EXPECT_FALSE(hobby.created_at.has_value());  // not needed without ceilings
    EXPECT_FALSE(hobby.prepaid);
    EXPECT_FALSE(hobby.low_balance_usd.has_value());

    const Org &plain = policy->orgs.at("plain");
    EXPECT_EQ(plain.plan, "");
    EXPECT_EQ(policy->plan_of(plain), nullptr);
    EXPECT_FALSE(plain.prepaid);
}

TEST(Policy, PlansMayComeAfterTheOrgsThatNameThem) {
    const auto policy = parse_policy(yaml(R"(
orgs:
  acme: { plan: paid, created_at: 2026-01-10 }
plans:
  paid:
    ceilings: [{ cleared_usd: 0, age_days: 0, monthly_usd: 100 }]
)"),
                                     "p.yaml");
    EXPECT_EQ(policy->orgs.at("acme").created_at, 1'768'003'200);
    EXPECT_NE(policy->dynamic_ceiling(policy->orgs.at("acme")), nullptr);
}

TEST(Policy, AnOrgWithItsOwnMonthlyCapNeedsNoCreatedAtOnACeilingsPlan) {
    const auto policy = parse_policy(yaml(R"(
plans:
  paid:
    ceilings: [{ cleared_usd: 0, age_days: 0, monthly_usd: 100 }]
orgs:
  acme:
    plan: paid
    limits: { monthly_usd: 7 }
)"),
                                     "p.yaml");
    EXPECT_FALSE(policy->orgs.at("acme").created_at.has_value());
    EXPECT_EQ(policy->dynamic_ceiling(policy->orgs.at("acme")), nullptr);
}

TEST(Policy, EmptyPlansAndCustomersSectionsAreAllowed) {
    const auto policy = parse_policy("plans:\ncustomers:\n", "p.yaml");
    EXPECT_TRUE(policy->plans.empty());
    EXPECT_TRUE(policy->customers.overrides.empty());
    EXPECT_FALSE(policy->customers.default_limits.monthly_usd.has_value());
}

TEST(PolicyErrors, BadPlans) {
    expect_error("plans:\n  - free\n", 2, "`plans` must be a mapping");
    expect_error("plans:\n  \"fr:ee\":\n    limits: { monthly_usd: 1 }\n", 2,
                 std::string("plan name `fr:ee` ") + kIdRule);
    expect_error("plans:\n  free:\n", 2, "plan `free` must be a mapping with `limits` or `ceilings`");
    expect_error("plans:\n  free: 5\n", 2, "plan `free` must be a mapping with `limits` or `ceilings`");
    expect_error("plans:\n  free:\n    limits: { monthly_usd: 1 }\n    price: 10\n", 4,
                 "unknown field `price` in plan `free`");
    expect_error("plans:\n  free:\n    limits: { monthly_usd: 1, hourly_usd: 1 }\n", 3,
                 "unknown field `hourly_usd` in limits of plan `free`");
    expect_error("plans:\n  free:\n    limits: { monthly_usd: one }\n", 3,
                 "`monthly_usd` in limits of plan `free` is not an exact decimal amount (\"one\"): "
                 "amount must start with a digit");
    expect_error("plans:\n  free:\n    limits: 1\n", 3, "`limits` of plan `free` must be a mapping");
    expect_error("plans:\n  free:\n    limits: { rpm: -1 }\n", 3,
                 "`rpm` in limits of plan `free` must be a non-negative integer");
}

TEST(PolicyErrors, BadCeilings) {
    const std::string plan = "plans:\n  paid:\n    ceilings:\n";  // rows start on line 4
    const std::string first = "      - { cleared_usd: 0, age_days: 0, monthly_usd: 100 }\n";
    expect_error(plan, 3, "`ceilings` of plan `paid` must be a non-empty list of rows");
    expect_error("plans:\n  paid:\n    ceilings: []\n", 3,
                 "`ceilings` of plan `paid` must be a non-empty list of rows");
    expect_error("plans:\n  paid:\n    ceilings: { cleared_usd: 0 }\n", 3,
                 "`ceilings` of plan `paid` must be a non-empty list of rows");
    expect_error(plan + first + "      - 1000\n", 5,
                 "ceilings row 2 of plan `paid` must be a mapping with `cleared_usd`, `age_days` and `monthly_usd`");
    expect_error(plan + first + "      - { cleared_usd: 100, age_days: 14, monthly_usd: 1000, note: x }\n", 5,
                 "unknown field `note` in ceilings row 2 of plan `paid`");
    expect_error(plan + first + "      - { age_days: 14, monthly_usd: 1000 }\n", 5,
                 "ceilings row 2 of plan `paid` is missing `cleared_usd`");
    expect_error(plan + first + "      - { cleared_usd: 100, monthly_usd: 1000 }\n", 5,
                 "ceilings row 2 of plan `paid` is missing `age_days`");
    expect_error(plan + first + "      - { cleared_usd: 100, age_days: 14 }\n", 5,
                 "ceilings row 2 of plan `paid` is missing `monthly_usd`");
    expect_error(plan + first + "      - { cleared_usd: 100, age_days: 1.5, monthly_usd: 1000 }\n", 5,
                 "`age_days` in ceilings row 2 of plan `paid` must be a non-negative integer");
    expect_error(plan + first + "      - { cleared_usd: 100, age_days: -14, monthly_usd: 1000 }\n", 5,
                 "`age_days` in ceilings row 2 of plan `paid` must be a non-negative integer");
    expect_error(plan + first + "      - { cleared_usd: -100, age_days: 14, monthly_usd: 1000 }\n", 5,
                 "`cleared_usd` in ceilings row 2 of plan `paid` is not an exact decimal amount (\"-100\"): "
                 "negative amounts are not allowed");
    expect_error(plan + first + "      - cleared_usd: 100\n        cleared_usd: 200\n", 6,
                 "duplicate field `cleared_usd` in ceilings row 2 of plan `paid` (first at line 5)");
}

TEST(PolicyErrors, FirstCeilingsRowMustBeZeroZero) {
    const std::string reason =
        "the first ceilings row of plan `paid` must have cleared_usd 0 and age_days 0, "
        "so every org on the plan has a ceiling";
    expect_error("plans:\n  paid:\n    ceilings:\n      - { cleared_usd: 100, age_days: 0, monthly_usd: 100 }\n", 4,
                 reason);
    expect_error("plans:\n  paid:\n    ceilings:\n      - { cleared_usd: 0, age_days: 1, monthly_usd: 100 }\n", 4,
                 reason);
    expect_error("plans:\n  paid:\n    ceilings:\n      - { cleared_usd: 0.000000001, age_days: 0, monthly_usd: 1 }\n",
                 4, reason);
}

TEST(PolicyErrors, PlanWithCeilingsAndAMonthlyCap) {
    expect_error(yaml(R"(
plans:
  free:
    limits: { monthly_usd: 1 }
  paid:
    limits: { daily_usd: 5, monthly_usd: 50 }
    ceilings:
      - { cleared_usd: 0, age_days: 0, monthly_usd: 100 }
)"),
                 4, "plan `paid` has both `ceilings` and `limits.monthly_usd`; its ceilings are its monthly cap");
}

TEST(PolicyErrors, OrgNamesAMissingPlan) {
    expect_error(yaml(R"(
plans:
  free:
    limits: { monthly_usd: 1 }
orgs:
  acme:
    limits: { daily_usd: 1 }
    plan: fre
)"),
                 7, "org `acme` names plan `fre`, which is not defined in `plans`");
    expect_error("orgs:\n  acme:\n    plan: free\n", 3,
                 "org `acme` names plan `free`, which is not defined in `plans`");
    expect_error("orgs:\n  acme:\n    plan: [free]\n", 3, "`plan` of org `acme` must be a non-empty string");
    expect_error("orgs:\n  acme:\n    plan:\n", 3, "`plan` of org `acme` must be a non-empty string");
}

TEST(PolicyErrors, OrgOnACeilingsPlanNeedsCreatedAt) {
    expect_error(yaml(R"(
plans:
  paid:
    ceilings: [{ cleared_usd: 0, age_days: 0, monthly_usd: 100 }]
orgs:
  acme:
    plan: paid
    limits: { daily_usd: 20 }
)"),
                 6, "org `acme` is on plan `paid`, whose monthly ceiling rises with account age: it needs "
                    "`created_at` (or a `monthly_usd` of its own)");
}

TEST(PolicyErrors, BadOrgFields) {
    expect_error("orgs:\n  acme:\n    created_at: last year\n", 3,
                 "`created_at` of org `acme` must be an RFC 3339 time such as 2026-01-10T00:00:00Z");
    expect_error("orgs:\n  acme:\n    created_at: 2026-13-01T00:00:00Z\n", 3,
                 "`created_at` of org `acme` must be an RFC 3339 time such as 2026-01-10T00:00:00Z");
    expect_error("orgs:\n  acme:\n    prepaid: sometimes\n", 3, "`prepaid` of org `acme` must be true or false");
    expect_error("orgs:\n  acme:\n    prepaid: [true]\n", 3, "`prepaid` of org `acme` must be true or false");
    expect_error("orgs:\n  acme:\n    prepaid: true\n    low_balance_usd: -5\n", 4,
                 "`low_balance_usd` of org `acme` is not an exact decimal amount (\"-5\"): "
                 "negative amounts are not allowed");
}

TEST(PolicyErrors, LowBalanceNeedsAPrepaidOrg) {
    expect_error("orgs:\n  acme:\n    low_balance_usd: 5\n", 3,
                 "`low_balance_usd` of org `acme` needs `prepaid: true`");
    expect_error("orgs:\n  acme:\n    low_balance_usd: 5\n    prepaid: false\n", 3,
                 "`low_balance_usd` of org `acme` needs `prepaid: true`");
    // The order of the two fields does not matter.
    const auto policy = parse_policy("orgs:\n  acme:\n    low_balance_usd: 0.5\n    prepaid: true\n", "p.yaml");
    EXPECT_EQ(policy->orgs.at("acme").low_balance_usd, 500'000'000);
}

TEST(Policy, CustomersParse) {
    const auto policy = parse_policy(yaml(R"(
customers:
  default_limits: { monthly_usd: 1, rpm: 30 }
  overrides:
    cust_42: { monthly_usd: 5 }
    cust_7:
      daily_tokens: 0
      tpm: 1000
    cust_empty:
)"),
                                     "p.yaml");
    const Customers &customers = policy->customers;
    EXPECT_EQ(customers.default_limits.monthly_usd, 1 * kNanosPerUsd);
    EXPECT_EQ(customers.default_limits.rpm, 30);
    ASSERT_EQ(customers.overrides.size(), 3u);
    EXPECT_EQ(customers.overrides.at("cust_42").monthly_usd, 5 * kNanosPerUsd);
    EXPECT_FALSE(customers.overrides.at("cust_42").rpm.has_value());  // as written; merged by limits_for
    EXPECT_EQ(customers.overrides.at("cust_7").daily_tokens, 0);
    EXPECT_EQ(customers.overrides.at("cust_7").tpm, 1000);
    EXPECT_FALSE(customers.overrides.at("cust_empty").monthly_usd.has_value());

    EXPECT_EQ(customers.limits_for("cust_42").monthly_usd, 5 * kNanosPerUsd);
    EXPECT_EQ(customers.limits_for("cust_42").rpm, 30);
    EXPECT_EQ(customers.limits_for("cust_empty").monthly_usd, 1 * kNanosPerUsd);
    EXPECT_EQ(customers.limits_for("anyone").monthly_usd, 1 * kNanosPerUsd);
}

TEST(PolicyErrors, BadCustomers) {
    expect_error("customers:\n  - cust_42\n", 2, "`customers` must be a mapping");
    expect_error("customers:\n  defaults: { rpm: 1 }\n", 2, "unknown field `defaults` in `customers`");
    expect_error("customers:\n  default_limits: 5\n", 2, "`customers.default_limits` must be a mapping");
    expect_error("customers:\n  default_limits: { rpm: 1.5 }\n", 2,
                 "`rpm` in `customers.default_limits` must be a non-negative integer");
    expect_error("customers:\n  default_limits: { hourly_usd: 1 }\n", 2,
                 "unknown field `hourly_usd` in `customers.default_limits`");
    expect_error("customers:\n  overrides: [cust_42]\n", 2, "`customers.overrides` must be a mapping");
    expect_error("customers:\n  overrides:\n    \"cust 42\": { rpm: 1 }\n", 3,
                 std::string("customer id `cust 42` ") + kIdRule);
    expect_error("customers:\n  overrides:\n    cust_42: 5\n", 3, "customer `cust_42` must be a mapping");
    expect_error("customers:\n  overrides:\n    cust_42: { monthly_usd: 5, rpn: 3 }\n", 3,
                 "unknown field `rpn` in limits of customer `cust_42`");
    expect_error("customers:\n  overrides:\n    cust_42: { rpm: 1 }\n    cust_42: { rpm: 2 }\n", 4,
                 "duplicate field `cust_42` in `customers.overrides` (first at line 3)");
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
    const std::string rule = std::string(" ") + kIdRule;
    expect_error("orgs:\n  \"ac:me\":\n", 2, "org id `ac:me`" + rule);
    expect_error("orgs:\n  acme:\nprojects:\n  \"{p}\":\n    org: acme\n", 4, "project id `{p}`" + rule);
    expect_error("keys:\n  - id: \"k\\t1\"\n", 2, "key id `k\t1`" + rule);  // a YAML-escaped tab
    const std::string long_id(129, 'a');
    expect_error("orgs:\n  " + long_id + ":\n", 2, "org id `" + long_id + "`" + rule);
    EXPECT_EQ(parse_policy("orgs:\n  " + std::string(128, 'a') + ":\n", "p.yaml")->orgs.size(), 1u);
    // Every id is one URL path segment of the management API (SPEC section 7).
    expect_error("orgs:\n  a/b:\n", 2, "org id `a/b`" + rule);
    expect_error("orgs:\n  \"..\":\n", 2, "org id `..`" + rule);
    expect_error("orgs:\n  acme:\nprojects:\n  \".\":\n    org: acme\n", 4, "project id `.`" + rule);
    expect_error("keys:\n  - id: \"x/..\"\n", 2, "key id `x/..`" + rule);
    expect_error("customers:\n  overrides:\n    \"c%2F\": {}\n", 3, "customer id `c%2F`" + rule);
}

TEST(ValidId, TheSpecAlphabet) {
    EXPECT_TRUE(valid_id("a"));
    EXPECT_TRUE(valid_id("cust_42.eu-west"));
    EXPECT_TRUE(valid_id("ann@example.com+eu"));
    EXPECT_TRUE(valid_id("..."));  // only "." and ".." are path segments of their own
    EXPECT_TRUE(valid_id(".a"));
    EXPECT_TRUE(valid_id(std::string(128, 'x')));
    EXPECT_FALSE(valid_id(""));
    EXPECT_FALSE(valid_id("."));
    EXPECT_FALSE(valid_id(".."));
    EXPECT_FALSE(valid_id(std::string(129, 'x')));
    for (const char *bad : {"a:b", "{a", "a}", "a b", "a\tb", "a\nb", "\x1f", "a\x7f", "a/b", "x/..", "a%2Fb",
                            "a?b", "a#b", "a\\b", "caf\xc3\xa9", "a=b", "a&b", "a,b", "a;b", "a'b", "a\"b", "a*b"})
        EXPECT_FALSE(valid_id(bad)) << bad;
    EXPECT_FALSE(valid_id(std::string("a\0b", 3)));
}

TEST(ValidId, WhatMayAlreadyNameAnOrgInRedis) {
    EXPECT_TRUE(fits_redis_key("a/b"));
    EXPECT_TRUE(fits_redis_key("caf\xc3\xa9"));
    for (const char *bad : {"", "a:b", "{a", "a}", "a b", "a\tb"}) EXPECT_FALSE(fits_redis_key(bad)) << bad;
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
    EXPECT_STREQ(scope_name(Scope::customer), "customer");
    EXPECT_STREQ(scope_word(Scope::key), "api key");
    EXPECT_STREQ(scope_word(Scope::project), "project");
    EXPECT_STREQ(scope_word(Scope::org), "account");
    EXPECT_STREQ(scope_word(Scope::customer), "customer");
}

}  // namespace
}  // namespace spendcap
