#include <gtest/gtest.h>

#include <sstream>
#include <string>

#include "http/metrics.h"

using namespace spendcap;

namespace {

bool has_line(const std::string &text, const std::string &line) {
    std::istringstream in(text);
    std::string l;
    while (std::getline(in, l)) {
        if (l == line) return true;
    }
    return false;
}

MetricsView example() {
    MetricsView v;
    v.requests = {{{{"decision", "allow"}}, 7}, {{{"decision", "block"}}, 2}, {{{"decision", "reject"}}, 1}};
    v.blocked = {{{{"scope", "key"}, {"limit", "monthly_usd"}}, 1}, {{{"scope", "org"}, {"limit", "rpm"}}, 1}};
    v.cost_nanousd = 123456789;
    v.reserved_nanousd = 999999999999;
    v.input_tokens = 700;
    v.output_tokens = 70;
    v.settlements = {{{{"from", "usage"}}, 6}, {{{"from", "reservation"}}, 1}};
    v.backlog = 3;
    v.redis_up = true;
    v.redis_errors = {{{{"kind", "timeout"}}, 4}};
    v.redis_buckets[0] = 2;                      // <= 0.25 ms
    v.redis_buckets[2] = 3;                      // <= 1 ms
    v.redis_buckets[kRedisMicrosBounds.size()] = 1;  // above 1 s
    v.redis_micros_sum = 1002345;
    v.orgs = {{"acme", 100, {{"allow", 5}, {"block", 2}}}, {"_other", 23, {{"allow", 2}}}};
    v.version = "0.9.0";
    v.nginx = "1.22.1";
    return v;
}

}  // namespace

TEST(Metrics, EveryFamilyOfTheSpecWithItsLabels) {
    const std::string text = render_metrics(example());
    for (const char *line : {
             "# TYPE spend_cap_requests_total counter",
             "spend_cap_requests_total{decision=\"allow\"} 7",
             "spend_cap_requests_total{decision=\"reject\"} 1",
             "spend_cap_blocked_total{scope=\"key\",limit=\"monthly_usd\"} 1",
             "spend_cap_cost_nanousd_total 123456789",
             "spend_cap_reserved_nanousd_total 999999999999",
             "spend_cap_tokens_total{kind=\"input\"} 700",
             "spend_cap_tokens_total{kind=\"output\"} 70",
             "spend_cap_settlements_total{from=\"reservation\"} 1",
             "# TYPE spend_cap_settlement_backlog gauge",
             "spend_cap_settlement_backlog 3",
             "spend_cap_redis_up 1",
             "spend_cap_redis_errors_total{kind=\"timeout\"} 4",
             "# TYPE spend_cap_redis_seconds histogram",
             "spend_cap_org_cost_nanousd_total{org=\"acme\"} 100",
             "spend_cap_org_cost_nanousd_total{org=\"_other\"} 23",
             "spend_cap_org_requests_total{org=\"acme\",decision=\"block\"} 2",
             "spend_cap_info{version=\"0.9.0\",nginx=\"1.22.1\"} 1",
         }) {
        EXPECT_TRUE(has_line(text, line)) << line << "\n" << text;
    }
    EXPECT_EQ(text.find("Inf "), std::string::npos);
    EXPECT_EQ(text.find("NaN"), std::string::npos);
    EXPECT_EQ(text.back(), '\n');
}

TEST(Metrics, TheHistogramIsCumulativeWithExactSecondsInItsSum) {
    const std::string text = render_metrics(example());
    EXPECT_TRUE(has_line(text, "spend_cap_redis_seconds_bucket{le=\"0.00025\"} 2"));
    EXPECT_TRUE(has_line(text, "spend_cap_redis_seconds_bucket{le=\"0.0005\"} 2"));
    EXPECT_TRUE(has_line(text, "spend_cap_redis_seconds_bucket{le=\"0.001\"} 5"));
    EXPECT_TRUE(has_line(text, "spend_cap_redis_seconds_bucket{le=\"1\"} 5"));
    EXPECT_TRUE(has_line(text, "spend_cap_redis_seconds_bucket{le=\"+Inf\"} 6"));
    EXPECT_TRUE(has_line(text, "spend_cap_redis_seconds_count 6"));
    EXPECT_TRUE(has_line(text, "spend_cap_redis_seconds_sum 1.002345"));
    MetricsView empty;
    const std::string none = render_metrics(empty);
    EXPECT_TRUE(has_line(none, "spend_cap_redis_seconds_sum 0.000000"));
    EXPECT_TRUE(has_line(none, "spend_cap_redis_seconds_count 0"));
    EXPECT_TRUE(has_line(none, "spend_cap_redis_up 0"));
}

TEST(Metrics, ObservationsFallInTheirBucket) {
    EXPECT_EQ(redis_seconds_bucket(0), 0u);
    EXPECT_EQ(redis_seconds_bucket(250), 0u);  // le: at the bound counts in it
    EXPECT_EQ(redis_seconds_bucket(251), 1u);
    EXPECT_EQ(redis_seconds_bucket(1000000), kRedisMicrosBounds.size() - 1);
    EXPECT_EQ(redis_seconds_bucket(1000001), kRedisMicrosBounds.size());
    EXPECT_EQ(redis_seconds_bucket(UINT64_MAX), kRedisMicrosBounds.size());
}

TEST(Metrics, LabelValuesAreEscaped) {
    EXPECT_EQ(prometheus_labels({{"org", "a\"b\\c\nd"}}), "{org=\"a\\\"b\\\\c\\nd\"}");
    EXPECT_EQ(prometheus_labels({}), "");
}
