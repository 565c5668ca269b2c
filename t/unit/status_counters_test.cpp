#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "http/status_counters.h"

using namespace spendcap;

namespace {

struct Block {
    explicit Block(std::size_t orgs) : memory(StatusCounters::bytes(orgs) / 8 + 1) {
        counters = StatusCounters::create(memory.data(), orgs);
    }
    std::vector<std::uint64_t> memory;
    StatusCounters *counters;
};

std::uint64_t requests_of(const MetricsView &v, const std::string &org, const std::string &decision) {
    for (const OrgFigures &o : v.orgs) {
        if (o.org != org) continue;
        for (const auto &[d, n] : o.requests) {
            if (d == decision) return n;
        }
    }
    return 0;
}

}  // namespace

TEST(StatusCounters, CountsRequestsBlocksCostAndTheReserveHistogram) {
    Block b(50);
    StatusCounters &c = *b.counters;
    c.count_request("acme", decision_slot("allow"));
    c.count_request("acme", decision_slot("block"));
    c.count_request("", decision_slot("reject"));
    c.count_block("key", "monthly_usd");
    c.count_block("key", "monthly_usd");
    c.count_block("org", "rpm");
    c.count_settled("acme", 1234, 10, 5, settled_from_slot("usage"));
    c.count_settled("acme", 1, 0, 0, settled_from_slot("reservation"));
    c.count_reserved(99);
    c.observe_reserve(100);      // <= 0.25 ms
    c.observe_reserve(2000000);  // above 1 s
    c.count_redis_error(1);
    c.count_lost(0, 3);
    c.backlog().add(4);
    c.backlog().sub(1);

    const MetricsView v = c.view(true, "1.2.3", "1.22.1");
    EXPECT_EQ(v.requests[0].value, 1u);  // allow
    EXPECT_EQ(v.requests[1].value, 1u);  // block
    EXPECT_EQ(v.requests[2].value, 1u);  // reject
    ASSERT_EQ(v.blocked.size(), 2u);
    std::uint64_t key_monthly = 0, org_rpm = 0;
    for (const MetricSample &s : v.blocked) {
        if (s.labels[0].second == "key" && s.labels[1].second == "monthly_usd") key_monthly = s.value;
        if (s.labels[0].second == "org" && s.labels[1].second == "rpm") org_rpm = s.value;
    }
    EXPECT_EQ(key_monthly, 2u);
    EXPECT_EQ(org_rpm, 1u);
    EXPECT_EQ(v.cost_nanousd, 1235u);
    EXPECT_EQ(v.reserved_nanousd, 99u);
    EXPECT_EQ(v.input_tokens, 10u);
    EXPECT_EQ(v.output_tokens, 5u);
    EXPECT_EQ(v.settlements[0].value, 1u);
    EXPECT_EQ(v.settlements[1].value, 1u);
    EXPECT_EQ(v.settlements_lost[0].value, 3u);
    EXPECT_EQ(v.backlog, 3u);
    EXPECT_EQ(v.redis_errors[1].value, 1u);
    EXPECT_EQ(v.redis_buckets[0], 1u);
    EXPECT_EQ(v.redis_buckets[kRedisMicrosBounds.size()], 1u);
    EXPECT_EQ(v.redis_micros_sum, 2000100u);
    EXPECT_EQ(requests_of(v, "acme", "allow"), 1u);
    EXPECT_EQ(requests_of(v, "_other", "reject"), 1u);  // no org yet
    EXPECT_EQ(v.orgs.back().org, "_other");
    const std::string text = render_metrics(v);
    EXPECT_NE(text.find("spend_cap_org_cost_nanousd_total{org=\"acme\"} 1235\n"), std::string::npos);
    EXPECT_NE(text.find("spend_cap_settlements_lost_total{reason=\"backlog_full\"} 3\n"), std::string::npos);
}

TEST(StatusCounters, TheFirstOrgsKeepTheirLabelsTheRestAreOther) {
    Block b(3);
    StatusCounters &c = *b.counters;
    for (int round = 0; round < 2; ++round) {
        for (int i = 0; i < 10; ++i) c.count_request("org" + std::to_string(i), decision_slot("allow"));
    }
    const MetricsView v = c.view(false, "", "");
    ASSERT_EQ(v.orgs.size(), 4u);  // org0..org2 and _other
    std::uint64_t sum = 0;
    for (const OrgFigures &o : v.orgs) sum += o.requests[0].second;
    EXPECT_EQ(sum, 20u);
    EXPECT_EQ(requests_of(v, "org0", "allow"), 2u);
    EXPECT_EQ(requests_of(v, "org2", "allow"), 2u);
    EXPECT_EQ(requests_of(v, "_other", "allow"), 14u);
    EXPECT_EQ(c.org_slot("org9"), c.other_slot());
}

TEST(StatusCounters, ALabelTooLongCountsAsOther) {
    Block b(3);
    const std::string long_org(kMaxLabelBytes + 1, 'x');
    EXPECT_EQ(b.counters->org_slot(long_org), b.counters->other_slot());
    EXPECT_NE(b.counters->org_slot(std::string(kMaxLabelBytes, 'x')), b.counters->other_slot());
}

TEST(StatusCounters, MoneySaturatesAndAGaugeNeverGoesBelowZero) {
    SharedCounter c;
    c.add(UINT64_MAX - 1);
    c.add(5);
    EXPECT_EQ(c.get(), UINT64_MAX);
    SharedCounter g;
    g.add(1);
    g.sub(3);
    EXPECT_EQ(g.get(), 0u);
}

TEST(StatusCounters, AReloadWithTheSameSizeKeepsTheFigures) {
    Block b(5);
    b.counters->count_request("acme", 0);
    EXPECT_EQ(StatusCounters::existing(b.memory.data(), 5), b.counters);
    EXPECT_EQ(StatusCounters::existing(b.memory.data(), 6), nullptr);
}

TEST(StatusCounters, ThreadsRacingForLabelsNeverGiveOneNameTwoSlots) {
    Block b(16);
    StatusCounters &c = *b.counters;
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&c] {
            for (int round = 0; round < 200; ++round) {
                for (int i = 0; i < 40; ++i) c.count_request("org" + std::to_string(i), decision_slot("allow"));
            }
        });
    }
    for (std::thread &t : threads) t.join();
    const MetricsView v = c.view(false, "", "");
    EXPECT_EQ(v.orgs.size(), 17u);
    std::uint64_t sum = 0;
    for (const OrgFigures &o : v.orgs) sum += o.requests[0].second;
    EXPECT_EQ(sum, 4u * 200 * 40);
    for (const OrgFigures &o : v.orgs) {
        if (o.org != "_other") EXPECT_EQ(o.requests[0].second, 800u) << o.org;
    }
}
