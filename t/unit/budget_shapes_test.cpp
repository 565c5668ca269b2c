// SPEC section 2b's budget shapes in the core: model patterns, their
// percent-encoding, per-model and weekly counters, allowed models, the
// forecast's arithmetic and local-time periods in a ledger.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "accounting/cap.h"
#include "accounting/forecast.h"
#include "accounting/ledger.h"
#include "accounting/reservation.h"
#include "http/assessment.h"
#include "http/envelope.h"
#include "policy/limits_json.h"
#include "policy/model_patterns.h"
#include "policy/policy.h"

namespace spendcap {
namespace {

constexpr std::int64_t kNow = 1795000000;  // 2026-11-18T11:06:40Z (a Wednesday, ISO week 2026-W47)
constexpr Nanos kUsd = 1'000'000'000;

TEST(ModelPatterns, ExactAndStar) {
    EXPECT_TRUE(model_matches("gpt-4o", "gpt-4o"));
    EXPECT_FALSE(model_matches("gpt-4o", "gpt-4o-mini"));
    EXPECT_TRUE(model_matches("gpt-4o*", "gpt-4o-mini"));
    EXPECT_TRUE(model_matches("gpt-4o*", "gpt-4o"));
    EXPECT_FALSE(model_matches("gpt-4o*", "gpt-4"));
    EXPECT_TRUE(model_matches("claude-*", "claude-sonnet-4-5"));
    EXPECT_TRUE(model_matches("*-mini", "gpt-4o-mini"));
    EXPECT_TRUE(model_matches("*", ""));
    EXPECT_TRUE(model_matches("a*b*c", "axxbyyc"));
    EXPECT_FALSE(model_matches("a*b*c", "axxbyy"));
    EXPECT_FALSE(model_matches("x", ""));
    // no backtracking blow-up: a long hostile name answers at once
    EXPECT_FALSE(model_matches("*a*a*a*a*a*a*a*a*b", std::string(100000, 'a')));
}

TEST(ModelPatterns, Validation) {
    EXPECT_EQ(model_pattern_problem("gpt-4o*"), "");
    EXPECT_NE(model_pattern_problem(""), "");
    EXPECT_NE(model_pattern_problem("gpt 4o"), "");
    EXPECT_NE(model_pattern_problem("gpt\n"), "");
    EXPECT_NE(model_pattern_problem(std::string(129, 'a')), "");
    EXPECT_EQ(model_pattern_problem(std::string(128, 'a')), "");
}

TEST(ModelPatterns, PercentEncoding) {
    EXPECT_EQ(encode_pattern("gpt-4o*"), "gpt-4o*");
    EXPECT_EQ(encode_pattern("a:b{c}d%e f"), "a%3Ab%7Bc%7Dd%25e%20f");
    EXPECT_EQ(encode_pattern(std::string("\x01\x7f\xff", 3)), "%01%7F%FF");
}

TEST(Forecast, Arithmetic) {
    const std::int64_t start = 1'000'000, reset = start + 86400;
    // 2 USD in 6 hours of a 10 USD day: 30 hours at that pace, after the reset.
    EXPECT_EQ(forecast_exhaustion(2 * kUsd, 10 * kUsd, start, reset, start + 6 * 3600), std::nullopt);
    // 5 USD in 6 hours: 12 hours.
    EXPECT_EQ(forecast_exhaustion(5 * kUsd, 10 * kUsd, start, reset, start + 6 * 3600), start + 12 * 3600);
    // exact ceiling: 3 in 1 hour of 10 -> 3h20m exactly (12000 s)
    EXPECT_EQ(forecast_exhaustion(3 * kUsd, 10 * kUsd, start, reset, start + 3600), start + 12000);
    EXPECT_EQ(forecast_exhaustion(3, 10, start, reset, start + 3601), start + 12004);  // ceil(36010/3)
    // less than an hour in, nothing spent, past the reset: no forecast
    EXPECT_EQ(forecast_exhaustion(9 * kUsd, 10 * kUsd, start, reset, start + 3599), std::nullopt);
    EXPECT_EQ(forecast_exhaustion(0, 10 * kUsd, start, reset, start + 7200), std::nullopt);
    EXPECT_EQ(forecast_exhaustion(kUsd, 10 * kUsd, start, reset, reset), std::nullopt);
    // a cap already reached: an instant at or before now
    EXPECT_LE(*forecast_exhaustion(12 * kUsd, 10 * kUsd, start, reset, start + 7200), start + 7200);
    // absurd numbers do not overflow
    const Nanos huge = INT64_MAX;
    EXPECT_EQ(forecast_exhaustion(1, huge, start, reset, start + 7200), std::nullopt);
    EXPECT_EQ(forecast_exhaustion(huge, huge, start, reset, start + 7200), start + 7200);
}

const char *kPolicy = R"(models:
  gpt-4o: { input: 2.5, output: 10 }
  gpt-4o-mini: { input: 0.15, output: 0.6 }
warn_at: [0.5]
orgs:
  acme:
    timezone: Pacific/Kiritimati
    limits: { weekly_usd: 50, allowed_models: ["gpt-4o*"] }
projects:
  p:
    org: acme
keys:
  - id: k1
    sha256: 0000000000000000000000000000000000000000000000000000000000000001
    project: p
    limits:
      monthly_usd: 100
      models:
        "gpt-4o": { daily_usd: 5, rpm: 3 }
        "claude-*": { weekly_requests: 10 }
  - id: k2
    sha256: 0000000000000000000000000000000000000000000000000000000000000002
    project: p
    limits: { allowed_models: [gpt-4o-mini] }
)";

const Counter *find(const Ledger &l, const std::string &key) {
    for (const Counter &c : l.counters)
        if (c.key == key) return &c;
    return nullptr;
}

TEST(BudgetShapes, LedgerHasThePatternsCountersInTheOrgsLocalPeriods) {
    const auto policy = parse_policy(kPolicy, "shapes.yaml");
    const Key &k1 = *policy->find_key_by_id("k1");
    LedgerCache cache;
    // 11:06 UTC is 01:06 the next day at +14
    const auto l = cache.get(*policy, k1, "", kNow, "gpt-4o");
    ASSERT_TRUE(l->by_model);
    EXPECT_FALSE(l->model_refused_by);
    const Counter *model_daily = find(*l, "sc:{acme}:spend:key:k1:model:gpt-4o:d:2026-11-19");
    ASSERT_NE(model_daily, nullptr);
    EXPECT_EQ(model_daily->cap, 5 * kUsd);
    EXPECT_EQ(model_daily->model, "gpt-4o");
    EXPECT_EQ(model_daily->label, "key k1 daily 2026-11-19 gpt-4o");
    EXPECT_NE(find(*l, "sc:{acme}:rate:key:k1:model:gpt-4o:rpm:2026-11-18T11:06"), nullptr);  // rates stay UTC
    // the pattern caps only its daily window: no monthly counter of it
    EXPECT_EQ(find(*l, "sc:{acme}:spend:key:k1:model:gpt-4o:m:2026-11"), nullptr);
    // weekly counters for the org (a weekly limit) only; ISO week of the local date
    EXPECT_NE(find(*l, "sc:{acme}:spend:org:acme:w:2026-W47"), nullptr);
    EXPECT_EQ(find(*l, "sc:{acme}:spend:key:k1:w:2026-W47"), nullptr);
    // the day resets at local midnight: 2026-11-19T10:00:00Z
    EXPECT_EQ(l->periods.day_reset, 1795082400 + 36000 - 36000);
    const CapRef cap = cap_ref(*l, static_cast<std::size_t>(model_daily - l->counters.data()), kNow);
    EXPECT_EQ(blocked_by_label(cap), "key:daily:gpt-4o");
    EXPECT_EQ(cap_message(cap), "api key has reached its daily spend limit for gpt-4o");
    const ErrorReply reply = render_error(Surface::openai, error_code_for(cap.limit), "", cap);
    EXPECT_NE(reply.body.find(R"("window":"daily","reset_at":"2026-11-19T10:00:00Z","model":"gpt-4o")"),
              std::string::npos)
        << reply.body;

    // another model: none of the pattern's counters, its own ledger
    const auto mini = cache.get(*policy, k1, "", kNow, "gpt-4o-mini");
    EXPECT_EQ(find(*mini, "sc:{acme}:spend:key:k1:model:gpt-4o:d:2026-11-19"), nullptr);
    EXPECT_EQ(cache.get(*policy, k1, "", kNow, "gpt-4o").get(), l.get());  // both stay cached
    EXPECT_EQ(cache.get(*policy, k1, "", kNow, "gpt-4o-mini").get(), mini.get());
}

TEST(BudgetShapes, AllowedModelsOfEveryScope) {
    const auto policy = parse_policy(kPolicy, "shapes.yaml");
    const Key &k1 = *policy->find_key_by_id("k1");
    const Key &k2 = *policy->find_key_by_id("k2");
    LedgerCache cache;
    EXPECT_FALSE(cache.get(*policy, k1, "", kNow, "gpt-4o-mini")->model_refused_by);
    EXPECT_EQ(cache.get(*policy, k1, "", kNow, "claude-sonnet-4-5")->model_refused_by, Scope::org);
    EXPECT_FALSE(cache.get(*policy, k2, "", kNow, "gpt-4o-mini")->model_refused_by);
    EXPECT_EQ(cache.get(*policy, k2, "", kNow, "gpt-4o")->model_refused_by, Scope::key);
    const ErrorReply openai = render_error(Surface::openai, ErrorCode::model_not_allowed,
                                           model_not_allowed_message("gpt-4o", Scope::key));
    EXPECT_EQ(openai.status, 403);
    EXPECT_NE(openai.body.find(R"("message":"model gpt-4o is not allowed for this api key","type":"invalid_request_error")"),
              std::string::npos);
    const ErrorReply anthropic = render_error(Surface::anthropic, ErrorCode::model_not_allowed,
                                              model_not_allowed_message("gpt-4o", Scope::org));
    EXPECT_NE(anthropic.body.find(R"("type":"permission_error","message":"model gpt-4o is not allowed for this account")"),
              std::string::npos)
        << anthropic.body;
}

TEST(BudgetShapes, LimitsJsonRoundTripsPatterns) {
    std::string error;
    const auto limits = parse_limits(
        R"({"weekly_usd":"7.5","models":{"gpt-4o*":{"daily_usd":5,"rpm":3}},"allowed_models":["gpt-4o*","o3"]})", error);
    ASSERT_TRUE(limits) << error;
    EXPECT_EQ(limits_json(*limits),
              R"({"weekly_usd":"7.50","models":{"gpt-4o*":{"daily_usd":"5.00","rpm":3}},"allowed_models":["gpt-4o*","o3"]})");
    EXPECT_FALSE(parse_limits(R"({"allowed_models":["bad pattern"]})", error));
    EXPECT_NE(error.find("allowed_models"), std::string::npos) << error;
    EXPECT_FALSE(parse_limits(R"({"models":{"":{"rpm":1}}})", error));
    EXPECT_FALSE(parse_limits(R"({"models":{"a":{"models":{}}}})", error));
    EXPECT_FALSE(parse_limits(R"({"models":{"a":{"allowed_models":["x"]}}})", error));
}

TEST(BudgetShapes, TheFileRefusesBadPatternsAndZones) {
    const std::string base = "models:\n  m: { input: 1, output: 1 }\norgs:\n  o:\n";
    EXPECT_THROW(parse_policy(base + "    timezone: Mars/Olympus\n", "z.yaml"), PolicyError);
    EXPECT_NO_THROW(parse_policy(base + "    timezone: Europe/Berlin\n", "z.yaml"));
    try {
        parse_policy(base + "    limits: { allowed_models: [\"a b\"] }\n", "z.yaml");
        FAIL() << "a pattern with a space loads";
    } catch (const PolicyError &e) {
        EXPECT_NE(std::string(e.what()).find("z.yaml:5:"), std::string::npos) << e.what();
    }
    EXPECT_THROW(parse_policy(base + "    limits: { models: { m: { models: {} } } }\n", "z.yaml"), PolicyError);
}

TEST(BudgetShapes, AModelNameLongerThan256BytesIsRefusedBeforeAnyMatching) {
    const auto policy = parse_policy("models:\n  m: { input: 1, output: 1 }\nunknown_model: m\n", "m.yaml");
    const std::string body = R"({"model":")" + std::string(257, 'a') + R"(","messages":[]})";
    const BodyAssessment long_name = assess_body(*policy, body, "");
    ASSERT_TRUE(long_name.refusal);
    EXPECT_EQ(*long_name.refusal, ErrorCode::invalid_request);
    EXPECT_EQ(long_name.message, "`model` is longer than 256 bytes");
    const BodyAssessment fits =
        assess_body(*policy, R"({"model":")" + std::string(256, 'a') + R"(","messages":[]})", "");
    EXPECT_FALSE(fits.refusal) << fits.message;
    ASSERT_NE(fits.price, nullptr);
    EXPECT_EQ(fits.price->name, "m");  // priced as the unknown_model stand-in
}

}  // namespace
}  // namespace spendcap
