// The LIMITS object as JSON (policy/limits_json.h), shared by the management
// API's bodies and answers and the records the request path reads back.
#include "policy/limits_json.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>

using namespace spendcap;

namespace {

TEST(LimitsJson, ParsesEveryFieldOfTheFile) {
    std::string error;
    const std::optional<Limits> all = parse_limits(
        R"({"daily_usd": "2", "monthly_usd": 10, "lifetime_usd": "40.5", "daily_requests": 1000,)"
        R"( "monthly_requests": 0, "daily_tokens": 5, "monthly_tokens": 6, "rpm": 600, "tpm": 200000})",
        error);
    ASSERT_TRUE(all) << error;
    EXPECT_EQ(all->daily_usd, std::optional<Nanos>(2 * kNanosPerUsd));
    EXPECT_EQ(all->monthly_usd, std::optional<Nanos>(10 * kNanosPerUsd));
    EXPECT_EQ(all->lifetime_usd, std::optional<Nanos>(40'500'000'000));
    EXPECT_EQ(all->daily_requests, std::optional<std::int64_t>(1000));
    EXPECT_EQ(all->monthly_requests, std::optional<std::int64_t>(0));
    EXPECT_EQ(all->daily_tokens, std::optional<std::int64_t>(5));
    EXPECT_EQ(all->monthly_tokens, std::optional<std::int64_t>(6));
    EXPECT_EQ(all->rpm, std::optional<std::int64_t>(600));
    EXPECT_EQ(all->tpm, std::optional<std::int64_t>(200000));
}

TEST(LimitsJson, WritesInTheFilesOrderAndReadsBack) {
    Limits limits;
    limits.tpm = 7;
    limits.lifetime_usd = 1;  // one nano-USD
    limits.daily_usd = 2 * kNanosPerUsd;
    EXPECT_EQ(limits_json(limits), R"({"daily_usd":"2.00","lifetime_usd":"0.000000001","tpm":7})");
    EXPECT_EQ(limits_json(Limits{}), "{}");
    std::string error;
    const std::optional<Limits> again = parse_limits(limits_json(limits), error);
    ASSERT_TRUE(again) << error;
    EXPECT_EQ(limits_json(*again), limits_json(limits));
    EXPECT_EQ(again->lifetime_usd, std::optional<Nanos>(1));
}

TEST(LimitsJson, ErrorsArePlainMessagesNamingTheField) {
    std::string error;
    EXPECT_FALSE(parse_limits(R"({"rpm": 1, "burst": 2})", error));
    EXPECT_EQ(error, "unknown field `burst`");
    EXPECT_FALSE(parse_limits(R"({"rpm": -1})", error));
    EXPECT_EQ(error, "`rpm` must be a non-negative integer");
    EXPECT_FALSE(parse_limits(R"({"daily_usd": "1e3"})", error));
    EXPECT_EQ(error, "`daily_usd` must be a non-negative decimal USD amount such as \"10.50\": exponents are not "
                     "allowed; write the amount in plain decimal (got \"1e3\")");
    EXPECT_FALSE(parse_limits("null", error));
    EXPECT_EQ(error, "request body must be a JSON object");
    EXPECT_FALSE(parse_limits("{", error));
    EXPECT_EQ(error.rfind("request body is not valid JSON: ", 0), 0u) << error;
}

TEST(LimitsJson, AMemberIsNoneWhenAbsentOrNull) {
    json::Body body;
    std::string error;
    ASSERT_TRUE(json::load_object(R"({"none": null, "some": {"rpm": 5}, "bad": 3, "deep": {"rpm": "5"}})", body,
                                  error));
    json::ObjectReader reader(body, error);
    Limits limits;
    limits.tpm = 9;
    EXPECT_TRUE(read_limits(reader, "absent", limits));
    EXPECT_TRUE(read_limits(reader, "none", limits));
    EXPECT_EQ(limits.tpm, std::optional<std::int64_t>(9));  // left as it was
    EXPECT_TRUE(read_limits(reader, "some", limits));
    EXPECT_EQ(limits.rpm, std::optional<std::int64_t>(5));
    EXPECT_FALSE(limits.tpm);  // replaced as a whole
    EXPECT_TRUE(error.empty()) << error;

    EXPECT_FALSE(read_limits(reader, "bad", limits));
    EXPECT_EQ(error, "`bad` must be an object of limits");
    EXPECT_FALSE(read_limits(reader, "deep", limits));
    EXPECT_EQ(error, "`deep.rpm` must be a non-negative integer");
    EXPECT_EQ(limits.rpm, std::optional<std::int64_t>(5));  // a LIMITS that does not read changes nothing
}

}  // namespace
