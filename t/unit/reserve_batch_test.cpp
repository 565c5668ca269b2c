// The reserve script run on a batch of requests of one org
// (reserve_batch_command), and the batch records it leaves, in the embedded
// Lua 5.1 against the in-memory Redis of fake_redis_lua.h: requests decided
// in order against the counters as those before them left them, one reply
// part per request, each counter written once with the batch's sum, one
// record (a hash) and one deadline per batch, the tombstone of a batch given
// up, settlement of batch records (answered or not, resent, released at the
// deadline), all or nothing (OOM, overflow), and exact arithmetic past 10^15
// and near INT64_MAX.
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fake_redis_lua.h"
#include "policy/policy.h"
#include "redis/errors.h"
#include "accounting/reservation.h"
#include "script_test_support.h"

namespace spendcap {
namespace {

using namespace spendcap::test;

using Parts = std::vector<std::vector<long long>>;
using Fields = std::map<std::string, std::string>;

const std::string kHash2(64, 'b');
const std::string kK2Monthly = P + "spend:key:k2:m:2026-11";
const std::string kProjectMonthly = P + "spend:project:p:m:2026-11";

std::shared_ptr<const Ledger> shared(const Ledger &l) { return std::make_shared<const Ledger>(l); }

ReserveItem item(const std::shared_ptr<const Ledger> &l, Nanos cost, const std::string &rid, bool dry_run = false,
                 std::int64_t tokens = 0) {
    return ReserveItem{l, Amounts{cost, tokens}, rid, dry_run};
}

class ReserveBatch : public ScriptTest {
protected:
    Parts reserve_parts(const std::vector<ReserveItem> &items, const std::string &batch,
                        std::int64_t ttl_ms = kDefaultReservationTtlMs) {
        const Reply reply = reserve_batch(items, batch, ttl_ms);
        EXPECT_EQ(reply.type, Reply::Type::array) << reply;
        return parts_of(reply);
    }

    Reply settle_batch(const std::vector<SettleItem> &items) {
        const std::vector<std::string> argv = settle_batch_command(items);
        EXPECT_FALSE(argv.empty());
        std::vector<std::string> rids;
        for (const SettleItem &item : items) rids.push_back(item.request_id);
        return send_settlement(argv, rids);
    }

    // The increments INCRBY sent to `key` since log entry `from`.
    std::vector<std::string> increments(const std::string &key, std::size_t from = 0) {
        std::vector<std::string> out;
        for (std::size_t i = from; i < redis.log.size(); ++i)
            if (redis.log[i].size() == 3 && redis.log[i][0] == "INCRBY" && redis.log[i][1] == key)
                out.push_back(redis.log[i][2]);
        return out;
    }

    // Two keys of project p (org acme): k1 with a daily cap, k2 with a
    // monthly one, the project with a monthly cap both check.
    void use_two_keys() {
        use(std::string("models:\n  m: { input: 1, output: 2 }\nwarn_at: [0.5]\n"
                        "orgs:\n  acme:\n"
                        "projects:\n  p:\n    org: acme\n    limits: { monthly_usd: 50 }\n"
                        "keys:\n"
                        "  - id: k1\n    sha256: ") +
            kHash + "\n    project: p\n    limits: { daily_usd: 10 }\n" + "  - id: k2\n    sha256: " + kHash2 +
            "\n    project: p\n    limits: { monthly_usd: 20 }\n");
    }
};

SettleItem settle_item(const std::shared_ptr<const Ledger> &l, Amounts estimate, Amounts real, const std::string &rid,
                       const std::string &batch, bool answered = true) {
    return SettleItem{l, estimate, real, rid, std::nullopt, batch, answered};
}

// ---------------------------------------------------------------------------
// Requests decided in order; one reply part each; one write per counter.

TEST_F(ReserveBatch, ThreeRequestsAgainstACapForTwoTheThirdIsRefusedAndTheCounterIsWrittenOnce) {
    use(policy_yaml("{ daily_usd: 10 }"));
    const auto l = shared(ledger());
    ASSERT_EQ(sent_counters(*l), (std::vector<std::size_t>{0}));  // only the key's daily spend is checked
    const std::size_t mark = redis.log.size();
    const Reply reply = reserve_batch({item(l, 4 * kUsd, "req-1"), item(l, 4 * kUsd, "req-2"),
                                       item(l, 4 * kUsd, "req-3")},
                                      "batch-1");
    // One flat array: per request its part's length, then the part, in order.
    ASSERT_EQ(reply.type, Reply::Type::array) << reply;
    ASSERT_EQ(reply.elements.size(), 17u) << reply;
    EXPECT_EQ(reply.elements[0].integer, 5) << reply;
    const Parts parts = parts_of(reply);
    EXPECT_EQ(parts, (Parts{{1, 0, 0, 0, 4'000'000'000}, {1, 0, 0, 0, 8'000'000'000}, {0, 1, 8'000'000'000, 0}}));
    EXPECT_EQ(decode_reserve_reply(*l, parts[0]).kind, ReserveOutcome::Kind::allowed);
    EXPECT_EQ(decode_reserve_reply(*l, parts[1]).tightest_remaining, 2 * kUsd);
    const ReserveOutcome third = decode_reserve_reply(*l, parts[2]);
    EXPECT_EQ(third.kind, ReserveOutcome::Kind::blocked);
    EXPECT_EQ(third.refused_by, std::optional<std::size_t>(0));

    // Exactly two estimates, written by one INCRBY with the batch's sum.
    EXPECT_EQ(at(kKeyDaily), "8000000000");
    EXPECT_EQ(increments(kKeyDaily, mark), (std::vector<std::string>{"8000000000"}));
    EXPECT_EQ(redis.expire_at(kKeyDaily), kDayExpire);
    // One record for the batch: the reserved requests' fields, none for the refused one.
    EXPECT_EQ(record("batch-1"), (Fields{{"req-1", record_of(*l, 4 * kUsd, 0)}, {"req-2", record_of(*l, 4 * kUsd, 0)}}));
    EXPECT_EQ(record("batch-1", "req-1"), "-4000000000 spend:key:k1:d:2026-11-18\n");
    EXPECT_EQ(deadline_of("batch-1"), static_cast<double>(kNow * 1000 + kDefaultReservationTtlMs));
    for (const char *rid : {"req-1", "req-2", "req-3"}) EXPECT_FALSE(redis.exists(P + "resv:" + rid)) << rid;
    // One deadline, the batch's.
    EXPECT_EQ(deadlines(), (Deadlines{{"batch-1", static_cast<double>(kNow * 1000 + kDefaultReservationTtlMs)}}));
    // The refusal reached the cap (once); the batch took the counter past half of it.
    EXPECT_EQ(events(), (std::vector<Event>{
                            reached("key", "k1", "daily", "2026-11-18", "8000000000", "10000000000"),
                            warning("key", "k1", "daily", "2026-11-18", "0.5", "8000000000", "10000000000")}));
}

TEST_F(ReserveBatch, ARefusedRequestAddsNothingSoALaterSmallerOneFits) {
    use(policy_yaml("{ daily_usd: 10, daily_requests: 2 }"));
    const auto l = shared(ledger());
    const std::string reqs = P + "reqs:key:k1:d:2026-11-18";
    ASSERT_EQ(sent_counters(*l), (std::vector<std::size_t>{0, 3}));
    const std::size_t mark = redis.log.size();
    const Parts parts = reserve_parts({item(l, 6 * kUsd, "req-1"), item(l, 6 * kUsd, "req-2"),
                                       item(l, 3 * kUsd, "req-3"), item(l, 1, "req-4")},
                                      "req-1");
    EXPECT_EQ(parts, (Parts{{1, 0, 0, 0, 6'000'000'000, 1},
                            {0, 1, 6'000'000'000, 0},   // refused by the spend: its request not counted
                            {1, 0, 0, 0, 9'000'000'000, 2},
                            {0, 2, 2, 0}}));            // then by the request count, which the third reached
    EXPECT_EQ(decode_reserve_reply(*l, parts[3]).refused_by, std::optional<std::size_t>(3));
    EXPECT_EQ(at(kKeyDaily), "9000000000");
    EXPECT_EQ(at(reqs), "2");
    EXPECT_EQ(increments(kKeyDaily, mark), (std::vector<std::string>{"9000000000"}));
    EXPECT_EQ(increments(reqs, mark), (std::vector<std::string>{"2"}));
    EXPECT_EQ(record("req-1"), (Fields{{"req-1", record_of(*l, 6 * kUsd, 0)}, {"req-3", record_of(*l, 3 * kUsd, 0)}}));
}

TEST_F(ReserveBatch, ABatchWhoseRequestsAreAllRefusedWritesNothingButTheReachedMarker) {
    use(policy_yaml("{ daily_usd: 10 }"));
    const auto l = shared(ledger());
    redis.set(kKeyDaily, "9000000000");
    const auto before = redis.data();
    const std::size_t mark = redis.log.size();
    const Parts parts = reserve_parts({item(l, 2 * kUsd, "req-1"), item(l, 3 * kUsd, "req-2")}, "req-1");
    EXPECT_EQ(parts, (Parts{{0, 1, 9'000'000'000, 0}, {0, 1, 9'000'000'000, 0}}));
    EXPECT_EQ(without(P + "markers:"), before);  // no record, no deadline, no counter written
    EXPECT_EQ(increments(kKeyDaily, mark), std::vector<std::string>{});
    // Two refusals by one cap in one batch: reached once.
    EXPECT_EQ(events(), (std::vector<Event>{reached("key", "k1", "daily", "2026-11-18", "9000000000", "10000000000")}));
}

TEST_F(ReserveBatch, TwoKeysOfOneOrgShareTheProjectCounterWrittenOnceWithBothDeltas) {
    use_two_keys();
    const auto k1 = shared(ledger_of_key(kHash));
    const auto k2 = shared(ledger_of_key(kHash2));
    ASSERT_EQ(k1->counters[0].key, kKeyDaily);
    ASSERT_EQ(k2->counters[1].key, kK2Monthly);
    ASSERT_EQ(k1->counters[8].key, kProjectMonthly);
    ASSERT_EQ(k2->counters[8].key, kProjectMonthly);
    ASSERT_EQ(sent_counters(*k1), (std::vector<std::size_t>{0, 8}));
    ASSERT_EQ(sent_counters(*k2), (std::vector<std::size_t>{1, 8}));
    redis.set(kProjectMonthly, "40000000000");
    const std::size_t mark = redis.log.size();
    const Parts parts = reserve_parts({item(k1, 2 * kUsd, "req-a"), item(k2, 3 * kUsd, "req-b"),
                                       item(k1, kUsd, "req-c"), item(k2, 5 * kUsd, "req-d"),
                                       item(k2, 4 * kUsd, "req-e")},
                                      "req-a");
    // Each part has its own key's counters, in its ledger's order; the
    // project's counter as the requests before left it, whatever their key.
    ASSERT_EQ(parts.size(), 5u);
    EXPECT_EQ(parts[0], (std::vector<long long>{1, 0, 0, 0, 2'000'000'000, 42'000'000'000}));
    EXPECT_EQ(parts[1], (std::vector<long long>{1, 0, 0, 0, 3'000'000'000, 45'000'000'000}));
    EXPECT_EQ(parts[2], (std::vector<long long>{1, 0, 0, 0, 3'000'000'000, 46'000'000'000}));
    EXPECT_EQ(parts[3], (std::vector<long long>{0, 2, 46'000'000'000, 0}));  // 46 + 5 > 50: the project refuses
    EXPECT_EQ(parts[4], (std::vector<long long>{1, 0, 0, 0, 7'000'000'000, 50'000'000'000}));
    EXPECT_EQ(after_of(*k1, parts[2], 0), 3'000'000'000);
    EXPECT_EQ(after_of(*k2, parts[4], 8), 50'000'000'000);
    const ReserveOutcome refused = decode_reserve_reply(*k2, parts[3]);
    ASSERT_EQ(refused.kind, ReserveOutcome::Kind::blocked);
    EXPECT_EQ(refused.refused_by, std::optional<std::size_t>(8));
    const ReserveOutcome last = decode_reserve_reply(*k2, parts[4]);
    ASSERT_EQ(last.kind, ReserveOutcome::Kind::allowed) << last.error;
    EXPECT_EQ(last.tightest_index, std::optional<std::size_t>(8));  // the project: 0 left
    EXPECT_EQ(last.tightest_remaining, 0);
    // Each counter once, the shared one with every reserved request's delta.
    EXPECT_EQ(increments(kProjectMonthly, mark), (std::vector<std::string>{"10000000000"}));
    EXPECT_EQ(increments(kKeyDaily, mark), (std::vector<std::string>{"3000000000"}));
    EXPECT_EQ(increments(kK2Monthly, mark), (std::vector<std::string>{"7000000000"}));
    EXPECT_EQ(at(kProjectMonthly), "50000000000");
    EXPECT_EQ(at(kKeyDaily), "3000000000");
    EXPECT_EQ(at(kK2Monthly), "7000000000");
    EXPECT_EQ(record("req-a"), (Fields{{"req-a", record_of(*k1, 2 * kUsd, 0)},
                                       {"req-b", record_of(*k2, 3 * kUsd, 0)},
                                       {"req-c", record_of(*k1, kUsd, 0)},
                                       {"req-e", record_of(*k2, 4 * kUsd, 0)}}));
    EXPECT_EQ(record("req-a", "req-b"), "-3000000000 spend:key:k2:m:2026-11\n-3000000000 spend:project:p:m:2026-11\n");
    EXPECT_EQ(deadlines().size(), 1u);
    // No warning: the project was past half its cap before the batch, k2's
    // monthly went 0 -> 7 of 20 and k1's daily 0 -> 3 of 10. req-d's refusal
    // reached the project's cap.
    EXPECT_EQ(events(), (std::vector<Event>{reached("project", "p", "monthly", "2026-11", "46000000000",
                                                    "50000000000")}));

    // Settled in one batch: each request's reservation replaced by its real cost.
    EXPECT_EQ(settle_batch({settle_item(k1, {2 * kUsd, 0}, {kUsd, 0}, "req-a", "req-a"),
                            settle_item(k2, {3 * kUsd, 0}, {kUsd, 0}, "req-b", "req-a"),
                            settle_item(k1, {kUsd, 0}, {kUsd, 0}, "req-c", "req-a"),
                            settle_item(k2, {4 * kUsd, 0}, {kUsd, 0}, "req-e", "req-a")})
                  .integer,
              1);
    EXPECT_EQ(at(kProjectMonthly), "44000000000");
    EXPECT_EQ(at(kKeyDaily), "2000000000");
    EXPECT_EQ(at(kK2Monthly), "2000000000");
    EXPECT_FALSE(has(batch_record("req-a")));
    EXPECT_TRUE(deadlines().empty());
    EXPECT_EQ(settlements(), "4");
}

TEST_F(ReserveBatch, ADryRunRequestIsReservedEvenWhenRefusedAndCountsForThoseAfterIt) {
    use(policy_yaml("{ daily_usd: 10 }"));
    const auto l = shared(ledger());
    const std::size_t mark = redis.log.size();
    const Parts parts = reserve_parts({item(l, 8 * kUsd, "req-1"), item(l, 5 * kUsd, "req-2", true),
                                       item(l, kUsd, "req-3"), item(l, kUsd, "req-4", true)},
                                      "req-1");
    EXPECT_EQ(parts, (Parts{{1, 0, 0, 0, 8'000'000'000},
                            {1, 1, 8'000'000'000, 0, 13'000'000'000},  // would have been refused: reserved
                            {0, 1, 13'000'000'000, 0},                 // the dry run's 5 USD count
                            {1, 1, 13'000'000'000, 0, 14'000'000'000}}));
    const ReserveOutcome dry = decode_reserve_reply(*l, parts[1]);
    ASSERT_EQ(dry.kind, ReserveOutcome::Kind::allowed) << dry.error;
    EXPECT_EQ(dry.refused_by, std::optional<std::size_t>(0));
    EXPECT_EQ(decode_reserve_reply(*l, parts[2]).kind, ReserveOutcome::Kind::blocked);
    EXPECT_EQ(at(kKeyDaily), "14000000000");
    EXPECT_EQ(increments(kKeyDaily, mark), (std::vector<std::string>{"14000000000"}));
    EXPECT_EQ(record("req-1"), (Fields{{"req-1", record_of(*l, 8 * kUsd, 0)},
                                       {"req-2", record_of(*l, 5 * kUsd, 0)},
                                       {"req-4", record_of(*l, kUsd, 0)}}));
    // Reached once for the batch's three refusals; the warning once, with the
    // counter after the batch.
    EXPECT_EQ(events(), (std::vector<Event>{
                            reached("key", "k1", "daily", "2026-11-18", "8000000000", "10000000000"),
                            warning("key", "k1", "daily", "2026-11-18", "0.5", "14000000000", "10000000000")}));
}

TEST_F(ReserveBatch, APaidPlansCeilingIsChosenOnceAndRefusesInOrder) {
    use(policy_yaml("", kPaidPlan, paid_org("2026-10-19T11:06:40Z")));  // row 1: 100 USD
    const auto l = shared(ledger());
    ASSERT_EQ(l->ceiling_counter, std::optional<std::size_t>(15));
    const Parts parts = reserve_parts({item(l, 60 * kUsd, "req-1"), item(l, 50 * kUsd, "req-2"),
                                       item(l, 40 * kUsd, "req-3")},
                                      "req-1");
    ASSERT_EQ(parts.size(), 3u);
    ASSERT_EQ(parts[0].size(), 5u);
    EXPECT_EQ(parts[0][3], 1);
    EXPECT_EQ(parts[1], (std::vector<long long>{0, sent_position(*l, 15), 60'000'000'000, 1}));
    EXPECT_EQ(parts[2][0], 1);
    EXPECT_EQ(parts[2][3], 1);
    EXPECT_EQ(after_of(*l, parts[2], 15), 100'000'000'000);
    EXPECT_EQ(decode_reserve_reply(*l, parts[2]).ceiling_cap, std::optional<Nanos>(100 * kUsd));
    EXPECT_EQ(at(kOrgMonthly), "100000000000");
    EXPECT_EQ(events(), (std::vector<Event>{
                            reached("org", "acme", "monthly", "2026-11", "60000000000", "100000000000"),
                            warning("org", "acme", "monthly", "2026-11", "0.5", "100000000000", "100000000000")}));
}

// ---------------------------------------------------------------------------
// Warnings: from the counter before the batch to after it.

TEST_F(ReserveBatch, ABatchWarnsOnceWithTheCounterAfterTheBatch) {
    use(policy_yaml("{ monthly_usd: 10 }", "warn_at: [0.5, 0.8]\n"));
    const auto l = shared(ledger());
    // One by one, the second would cross 0.5 at 6 USD and the third 0.8 at 9.
    reserve_parts({item(l, 3 * kUsd, "req-1"), item(l, 3 * kUsd, "req-2"), item(l, 3 * kUsd, "req-3")}, "req-1");
    EXPECT_EQ(at(kKeyMonthly), "9000000000");
    EXPECT_EQ(events(), (std::vector<Event>{
                            warning("key", "k1", "monthly", "2026-11", "0.5", "9000000000", "10000000000"),
                            warning("key", "k1", "monthly", "2026-11", "0.8", "9000000000", "10000000000")}));
    // Given back and crossed again: each fraction told once per cap and period.
    EXPECT_EQ(settle_batch({settle_item(l, {3 * kUsd, 0}, {0, 0}, "req-1", "req-1"),
                            settle_item(l, {3 * kUsd, 0}, {0, 0}, "req-2", "req-1"),
                            settle_item(l, {3 * kUsd, 0}, {0, 0}, "req-3", "req-1")})
                  .integer,
              1);
    EXPECT_EQ(at(kKeyMonthly), "0");
    reserve_parts({item(l, 5 * kUsd, "req-4"), item(l, 4 * kUsd, "req-5")}, "req-4");
    EXPECT_EQ(events().size(), 2u);
}

// ---------------------------------------------------------------------------
// All or nothing.

TEST_F(ReserveBatch, OomOnTheBatchsFirstWriteChangesNothingAndTheSameBatchLandsLater) {
    use(policy_yaml("{ daily_usd: 10, rpm: 100 }"));
    const auto l = shared(ledger());
    redis.set(kKeyDaily, "1000000000");
    const std::vector<std::string> argv = reserve_batch_command(
        {item(l, 4 * kUsd, "req-1"), item(l, 4 * kUsd, "req-2"), item(l, 4 * kUsd, "req-3")}, "req-1");
    ASSERT_FALSE(argv.empty());
    redis.oom = true;
    const auto before = redis.data();
    const Reply r = lua.evalsha(argv);
    ASSERT_TRUE(r.is_error()) << r;
    EXPECT_EQ(r.str.rfind(FakeRedis::kOomError, 0), 0u) << r.str;
    EXPECT_EQ(classify_redis_error(r.str).kind, RedisErrorKind::transient);
    // No counter, record, deadline, marker or event: the reached marker of
    // req-3's refusal was refused too (its event lost), then the record.
    EXPECT_EQ(redis.data(), before);
    redis.oom = false;
    const Reply landed = lua.evalsha(argv);
    EXPECT_EQ(parts_of(landed), (Parts{{1, 0, 0, 0, 5'000'000'000, 1},
                                       {1, 0, 0, 0, 9'000'000'000, 2},
                                       {0, 1, 9'000'000'000, 0}}));
    EXPECT_EQ(at(kKeyDaily), "9000000000");
    EXPECT_EQ(at(P + "rate:key:k1:rpm:2026-11-18T11:06"), "2");
    EXPECT_EQ(record("req-1").size(), 2u);
}

TEST_F(ReserveBatch, AnOverflowInABatchChangesNothing) {
    use(policy_yaml("{ daily_usd: 10 }", "", kPrepaid));
    const auto l = shared(ledger());
    ASSERT_EQ(l->counters.back().key, kHeld);  // written by every reservation, never capped, last
    redis.set(kBalance, "50000000000");
    redis.set(kHeld, "9223372036854775000");
    // Each request alone fits in the hold, the batch's sum does not: its
    // INCRBY is refused, the counters before it taken back.
    const auto before = redis.data();
    const std::size_t mark = redis.log.size();
    const Reply r = reserve_batch({item(l, 500, "req-1"), item(l, 500, "req-2")}, "req-1");
    ASSERT_TRUE(r.is_error()) << r;
    EXPECT_EQ(r.str, "ERR increment or decrement would overflow");
    EXPECT_EQ(redis.data(), before);  // no counter, record, deadline or expiry left
    EXPECT_EQ(increments(kKeyDaily, mark), (std::vector<std::string>{"1000", "-1000"}));
    EXPECT_EQ(increments(kBalance, mark), (std::vector<std::string>{"-1000", "1000"}));
    EXPECT_FALSE(redis.exists(kKeyDaily));  // created, then deleted
    // One of them fits, exactly up to INT64_MAX.
    const Parts parts = reserve_parts({item(l, 807, "req-1")}, "req-1");
    ASSERT_EQ(parts.size(), 1u);
    EXPECT_EQ(parts[0][0], 1);
    EXPECT_EQ(at(kHeld), "9223372036854775807");
    EXPECT_EQ(at(kKeyDaily), "807");
    EXPECT_EQ(redis.expire_at(kKeyDaily), kDayExpire);
}

TEST_F(ReserveBatch, AnOverflowAfterADryRunsRefusalChangesNoCounter) {
    use(policy_yaml("{ daily_usd: 10, monthly_usd: 10 }"));
    Ledger base = ledger();
    ASSERT_EQ(base.counters[1].key, kKeyMonthly);
    base.counters[1].cap = std::numeric_limits<std::int64_t>::max();
    const auto l = shared(base);
    redis.set(kKeyMonthly, "9223372036854775000");
    // Two dry runs (past every cap) whose sum passes INT64_MAX.
    const auto before = redis.data();
    const Reply r = reserve_batch({item(l, 500, "req-1", true), item(l, 500, "req-2", true)}, "req-1");
    ASSERT_TRUE(r.is_error()) << r;
    EXPECT_EQ(r.str, "ERR increment or decrement would overflow");
    // No counter, record or deadline left. (The second dry run's refusal
    // reported the cap reached before the write failed: that marker and
    // event stay, as they did before batches.)
    EXPECT_EQ(without(P + "markers:"), before);
}

// ---------------------------------------------------------------------------
// The tombstone of a batch given up.

TEST_F(ReserveBatch, ABatchWithATombstoneRepliesTwoAndChangesNothing) {
    use(policy_yaml("{ daily_usd: 10 }"));
    const auto l = shared(ledger());
    // A due reservation of another batch: not even given back.
    ASSERT_EQ(reserve_parts({item(l, kUsd, "old")}, "old", 1)[0][0], 1);
    redis.set_now_ms(kNow * 1000 + 5);
    redis.command({"ZADD", keys::gone("acme"), std::to_string(kNow * 1000 + 86'400'000), "batch-1"});
    const auto before = redis.data();
    const Reply reply = reserve_batch({item(l, kUsd, "req-1"), item(l, 20 * kUsd, "req-2"), item(l, kUsd, "req-3")},
                                      "batch-1");
    EXPECT_EQ(reply, Reply::array({Reply::of_integer(2)}));  // not nested
    EXPECT_TRUE(is_tombstone_reply(reply));
    EXPECT_EQ(redis.data(), before);
    EXPECT_TRUE(events().empty());
    const ReserveOutcome o = decode_reserve_reply(*l, *part_of(reply, 0));
    EXPECT_EQ(o.kind, ReserveOutcome::Kind::error);
    EXPECT_EQ(o.error, "reserve script found the request already settled");
    // Another batch id goes through (the due one fits beside it: it stays
    // for the periodic sweep).
    EXPECT_EQ(reserve_parts({item(l, kUsd, "req-1")}, "batch-2")[0][0], 1);
    EXPECT_EQ(at(kKeyDaily), "2000000000");
    EXPECT_TRUE(has(batch_record("old")));
}

// ---------------------------------------------------------------------------
// Settling batch records.

TEST_F(ReserveBatch, SettlingPartOfABatchKeepsTheRestAndAResendIsANoOp) {
    use(policy_yaml("{ daily_usd: 10 }", "", kPrepaid));
    const auto l = shared(ledger());
    redis.set(kBalance, "50000000000");
    ASSERT_EQ(reserve_parts({item(l, 2 * kUsd, "req-1"), item(l, 2 * kUsd, "req-2"), item(l, 2 * kUsd, "req-3")},
                            "req-1")
                  .size(),
              3u);
    EXPECT_EQ(at(kKeyDaily), "6000000000");
    EXPECT_EQ(at(kBalance), "44000000000");
    EXPECT_EQ(at(kHeld), "6000000000");
    // req-2 alone: its field goes, the batch's record and deadline stay.
    const SettleItem two = settle_item(l, {2 * kUsd, 0}, {kUsd, 0}, "req-2", "req-1");
    EXPECT_EQ(settle_batch({two}).integer, 1);
    EXPECT_EQ(record("req-1"), (Fields{{"req-1", record_of(*l, 2 * kUsd, 0)}, {"req-3", record_of(*l, 2 * kUsd, 0)}}));
    EXPECT_EQ(deadlines().size(), 1u);
    EXPECT_EQ(at(kKeyDaily), "5000000000");
    EXPECT_EQ(at(kBalance), "45000000000");
    EXPECT_EQ(at(kHeld), "4000000000");
    EXPECT_EQ(settlements(), "1");
    EXPECT_FALSE(has(settled_marker("req-2")));  // answered: no marker
    // Resent: reply 0, nothing changes, not even the count of settlements.
    auto was = redis.data();
    std::size_t mark = redis.log.size();
    EXPECT_EQ(settle_batch({two}).integer, 0);
    EXPECT_EQ(settle_batch({settle_item(l, {2 * kUsd, 0}, {9 * kUsd, 0}, "req-2", "req-1")}).integer, 0);
    EXPECT_EQ(redis.data(), was);
    EXPECT_EQ(incrbys(kKeyDaily, mark) + incrbys(kBalance, mark) + incrbys(P + "settlements", mark), 0u);
    // With one not yet settled: refused whole.
    const Reply partly = settle_batch({two, settle_item(l, {2 * kUsd, 0}, {kUsd, 0}, "req-3", "req-1")});
    ASSERT_TRUE(partly.is_error()) << partly;
    EXPECT_EQ(partly.str, "ERR spend-cap: a settlement batch found partly settled");
    EXPECT_EQ(redis.data(), was);
    // The last two: the record is gone, and with it the batch's deadline.
    const std::vector<SettleItem> rest = {settle_item(l, {2 * kUsd, 0}, {kUsd, 0}, "req-1", "req-1"),
                                          settle_item(l, {2 * kUsd, 0}, {kUsd, 0}, "req-3", "req-1")};
    EXPECT_EQ(settle_batch(rest).integer, 1);
    EXPECT_FALSE(has(batch_record("req-1")));
    EXPECT_FALSE(redis.exists(keys::deadlines("acme")));
    EXPECT_EQ(at(kKeyDaily), "3000000000");
    EXPECT_EQ(at(kBalance), "47000000000");
    EXPECT_EQ(at(kHeld), "0");
    EXPECT_EQ(settlements(), "3");
    was = redis.data();
    mark = redis.log.size();
    EXPECT_EQ(settle_batch(rest).integer, 0);
    EXPECT_EQ(redis.data(), was);
    EXPECT_EQ(increments(P + "settlements", mark), std::vector<std::string>{});
}

TEST_F(ReserveBatch, ASettlementBatchMayEndRequestsOfSeveralReserveBatches) {
    use(policy_yaml("{ daily_usd: 10 }"));
    const auto l = shared(ledger());
    ASSERT_EQ(reserve_parts({item(l, kUsd, "a-1")}, "a-1", 1000).size(), 1u);
    ASSERT_EQ(reserve_parts({item(l, kUsd, "b-1"), item(l, kUsd, "b-2")}, "b-1", 2000).size(), 2u);
    EXPECT_EQ(deadlines().size(), 2u);
    const std::size_t mark = redis.log.size();
    EXPECT_EQ(settle_batch({settle_item(l, {kUsd, 0}, {kUsd / 2, 0}, "b-1", "b-1"),
                            settle_item(l, {kUsd, 0}, {kUsd / 2, 0}, "a-1", "a-1")})
                  .integer,
              1);
    EXPECT_EQ(increments(kKeyDaily, mark), (std::vector<std::string>{"-1000000000"}));  // both, once
    EXPECT_EQ(at(kKeyDaily), "2000000000");
    EXPECT_FALSE(has(batch_record("a-1")));
    EXPECT_EQ(record("b-1"), (Fields{{"b-2", record_of(*l, kUsd, 0)}}));
    EXPECT_EQ(deadlines(), (Deadlines{{"b-1", static_cast<double>(kNow * 1000 + 2000)}}));
    EXPECT_EQ(settlements(), "2");
    // b-2's reservation, still recorded, is given back at its batch's deadline.
    redis.set_now_ms(kNow * 1000 + 2000);
    EXPECT_EQ(sweep(8).integer, 1);
    EXPECT_EQ(at(kKeyDaily), "1000000000");
    EXPECT_EQ(at(released_marker("b-2")), "1");
    EXPECT_FALSE(has(released_marker("b-1")));
}

TEST_F(ReserveBatch, AnUnansweredSettlementBeforeItsReserveLandsLeavesATombstoneThatTurnsTheReserveAway) {
    use(policy_yaml("{ daily_usd: 10, rpm: 100 }", "", kPrepaid));
    const auto l = shared(ledger());
    redis.set(kBalance, "50000000000");
    // The batch's reserve was sent, timed out, and has not reached Redis yet.
    const std::vector<std::string> late =
        reserve_batch_command({item(l, 3 * kUsd, "req-1"), item(l, 2 * kUsd, "req-2")}, "req-1");
    ASSERT_FALSE(late.empty());
    // Both settle unanswered (fail-open): their real cost is counted.
    const std::vector<SettleItem> items = {settle_item(l, {3 * kUsd, 0}, {kUsd, 0}, "req-1", "req-1", false),
                                           settle_item(l, {2 * kUsd, 0}, {kUsd / 2, 0}, "req-2", "req-1", false)};
    EXPECT_EQ(settle_batch(items).integer, 1);
    EXPECT_EQ(at(kKeyDaily), "1500000000");
    EXPECT_EQ(at(kBalance), "48500000000");
    EXPECT_FALSE(redis.exists(kHeld));                                  // nothing was held
    EXPECT_FALSE(redis.exists(P + "rate:key:k1:rpm:2026-11-18T11:06"));  // its minute is not known to be live
    EXPECT_EQ(settlements(), "2");
    for (const char *rid : {"req-1", "req-2"}) {
        EXPECT_EQ(at(settled_marker(rid)), "1") << rid;
        EXPECT_EQ(expire_at(settled_marker(rid)), kNow + 86400) << rid;
    }
    EXPECT_EQ(at(gone_marker("req-1")), "1");
    EXPECT_EQ(expire_at(gone_marker("req-1")), kNow + 86400);
    // The settlement resent: nothing.
    auto was = redis.data();
    EXPECT_EQ(settle_batch(items).integer, 0);
    EXPECT_EQ(redis.data(), was);
    // The late reserve lands: {2}, nothing reserved.
    const Reply reply = lua.evalsha(late);
    EXPECT_EQ(reply, Reply::array({Reply::of_integer(2)}));
    EXPECT_EQ(redis.data(), was);
    EXPECT_FALSE(has(batch_record("req-1")));
    EXPECT_TRUE(deadlines().empty());
}

TEST_F(ReserveBatch, AnUnansweredSettlementAfterItsReserveLandedReplacesTheReservation) {
    use(policy_yaml("{ daily_usd: 10 }", "", kPrepaid));
    const auto l = shared(ledger());
    redis.set(kBalance, "50000000000");
    // The reserve landed, its answer was lost.
    ASSERT_EQ(reserve_parts({item(l, 3 * kUsd, "req-1"), item(l, 2 * kUsd, "req-2")}, "req-1").size(), 2u);
    EXPECT_EQ(at(kKeyDaily), "5000000000");
    const SettleItem one = settle_item(l, {3 * kUsd, 0}, {kUsd, 0}, "req-1", "req-1", false);
    EXPECT_EQ(settle_batch({one}).integer, 1);
    // As an answered one: the estimate replaced by the real cost, its field gone.
    EXPECT_EQ(at(kKeyDaily), "3000000000");
    EXPECT_EQ(at(kBalance), "47000000000");
    EXPECT_EQ(at(kHeld), "2000000000");
    EXPECT_EQ(record("req-1"), (Fields{{"req-2", record_of(*l, 2 * kUsd, 0)}}));
    // Marked settled (it has no field to prove it), no tombstone (the reserve landed).
    EXPECT_EQ(at(settled_marker("req-1")), "1");
    EXPECT_FALSE(has(gone_marker("req-1")));
    const auto was = redis.data();
    EXPECT_EQ(settle_batch({one}).integer, 0);
    EXPECT_EQ(redis.data(), was);
    // req-2, answered, settles as usual: the record and deadline go.
    EXPECT_EQ(settle_batch({settle_item(l, {2 * kUsd, 0}, {2 * kUsd, 0}, "req-2", "req-1")}).integer, 1);
    EXPECT_EQ(at(kKeyDaily), "3000000000");
    EXPECT_EQ(at(kHeld), "0");
    EXPECT_FALSE(has(batch_record("req-1")));
    EXPECT_TRUE(deadlines().empty());
    EXPECT_EQ(settlements(), "2");
}

TEST_F(ReserveBatch, AReleasedBatchsLateSettlementCountsTheRealCostOnceAndDeletesTheMarker) {
    use(policy_yaml("{ daily_usd: 10, daily_tokens: 1000 }", "", kPrepaid));
    const auto l = shared(ledger());
    preset(*l);
    const auto before = redis.data();
    const std::string tokens = P + "tokens:key:k1:d:2026-11-18";
    const std::int64_t t0 = kNow * 1000;
    ASSERT_EQ(reserve_parts({item(l, 3 * kUsd, "req-1", false, 100), item(l, 2 * kUsd, "req-2", false, 50)}, "req-1",
                            1000)
                  .size(),
              2u);
    EXPECT_EQ(at(kKeyDaily), "6000000000");
    EXPECT_EQ(deadlines(), (Deadlines{{"req-1", static_cast<double>(t0 + 1000)}}));
    // Not due yet.
    redis.set_now_ms(t0 + 999);
    EXPECT_EQ(sweep(8).integer, 0);
    // Due: both requests given back; each marked released for a day.
    redis.now = kNow + 2;
    redis.micros = 0;
    EXPECT_EQ(sweep(8).integer, 2);
    EXPECT_EQ(without(keys::released("acme")), before);
    for (const char *rid : {"req-1", "req-2"}) {
        EXPECT_EQ(at(released_marker(rid)), "1") << rid;
        EXPECT_EQ(expire_at(released_marker(rid)), kNow + 2 + 86400) << rid;
    }
    EXPECT_FALSE(has(batch_record("req-1")));
    EXPECT_FALSE(redis.exists(keys::deadlines("acme")));
    EXPECT_EQ(sweep(8).integer, 0);
    // req-1 settles late (answered): its real cost, added once; its marker gone.
    const SettleItem one = settle_item(l, {3 * kUsd, 100}, {kUsd, 40}, "req-1", "req-1");
    std::size_t mark = redis.log.size();
    EXPECT_EQ(settle_batch({one}).integer, 1);
    EXPECT_EQ(at(kKeyDaily), plus(preset_value(l->counters[0]), kUsd));
    EXPECT_EQ(at(tokens), plus(preset_value(l->counters[5]), 40));
    EXPECT_EQ(at(kBalance), plus(preset_value(l->counters[*l->balance]), -kUsd));
    EXPECT_EQ(at(kHeld), preset_value(l->counters[*l->held]));  // nothing held: not touched
    EXPECT_EQ(incrbys(kKeyDaily, mark), 1u);
    EXPECT_EQ(incrbys(kHeld, mark), 0u);
    EXPECT_FALSE(has(released_marker("req-1")));
    EXPECT_TRUE(has(released_marker("req-2")));
    EXPECT_EQ(settlements(), "1");
    // Resent: nothing.
    auto was = redis.data();
    EXPECT_EQ(settle_batch({one}).integer, 0);
    EXPECT_EQ(redis.data(), was);
    // req-2 too, once.
    const SettleItem two = settle_item(l, {2 * kUsd, 50}, {kUsd / 2, 10}, "req-2", "req-1");
    EXPECT_EQ(settle_batch({two}).integer, 1);
    EXPECT_EQ(at(kKeyDaily), plus(preset_value(l->counters[0]), kUsd + kUsd / 2));
    EXPECT_EQ(at(tokens), plus(preset_value(l->counters[5]), 50));
    EXPECT_FALSE(has(released_marker("req-2")));
    was = redis.data();
    mark = redis.log.size();
    EXPECT_EQ(settle_batch({two}).integer, 0);
    EXPECT_EQ(redis.data(), was);
    EXPECT_EQ(settlements(), "2");
}

TEST_F(ReserveBatch, AReserveGivesBackDueBatchesOfItsOrgFirst) {
    use(policy_yaml("{ daily_usd: 10 }"));
    const auto l = shared(ledger());
    ASSERT_EQ(reserve_parts({item(l, 4 * kUsd, "req-1"), item(l, 4 * kUsd, "req-2")}, "req-1", 1).size(), 2u);
    EXPECT_EQ(at(kKeyDaily), "8000000000");
    redis.set_now_ms(kNow * 1000 + 1);
    // 8 more fit only because the due batch is given back before the checks.
    const Parts parts = reserve_parts({item(l, 8 * kUsd, "req-3")}, "req-3");
    EXPECT_EQ(parts, (Parts{{1, 0, 0, 0, 8'000'000'000}}));
    EXPECT_FALSE(has(batch_record("req-1")));
    EXPECT_EQ(at(released_marker("req-1")), "1");
    EXPECT_EQ(at(released_marker("req-2")), "1");
    EXPECT_EQ(deadlines(), (Deadlines{{"req-3", static_cast<double>(kNow * 1000 + 1 + kDefaultReservationTtlMs)}}));
}

// A batch record of the layout before sc:{ORG}:reserved (the hash
// resv:BATCH by sc:{ORG}:deadlines), left by a node not yet upgraded: the
// sweep gives each of its requests back once, marking each released:RID for
// a day as that layout's settlement expects, and touches only keys it names.
TEST_F(ReserveBatch, ASweepStillGivesBackLegacyBatchRecords) {
    use(policy_yaml("{ daily_usd: 10 }", "", kPrepaid));
    redis.set(kKeyDaily, "5000000000");
    redis.set(kBalance, "5000000000");
    redis.set(kHeld, "5000000000");
    redis.hset(P + "resv:old", "r1", "-3000000000 spend:key:k1:d:2026-11-18\n3000000000 balance\n"
                                     "-3000000000 balance:held\n");
    redis.hset(P + "resv:old", "r2", "-2000000000 spend:key:k1:d:2026-11-18\n2000000000 balance\n"
                                     "-2000000000 balance:held\n");
    redis.command({"ZADD", P + "deadlines", std::to_string(kNow * 1000 - 1), "old"});
    // and one whose deadline has not come
    redis.hset(P + "resv:later", "r3", "-1 spend:key:k1:d:2026-11-18\n");
    redis.command({"ZADD", P + "deadlines", std::to_string(kNow * 1000 + 1), "later"});
    EXPECT_EQ(sweep(8).integer, 2);
    EXPECT_EQ(at(kKeyDaily), "0");
    EXPECT_EQ(at(kBalance), "10000000000");
    EXPECT_EQ(at(kHeld), "0");
    EXPECT_FALSE(redis.exists(P + "resv:old"));
    for (const char *rid : {"r1", "r2"}) {
        EXPECT_EQ(at(P + "released:" + rid), "1") << rid;
        EXPECT_EQ(redis.expire_at(P + "released:" + rid), kNow + 86400) << rid;
    }
    EXPECT_TRUE(redis.exists(P + "resv:later"));
    EXPECT_EQ(redis.zset(P + "deadlines").size(), 1u);
    EXPECT_EQ(sweep(8).integer, 0);  // once
    EXPECT_EQ(at(kKeyDaily), "0");
}

TEST_F(ReserveBatch, ASweepStillGivesBackLegacyStringRecords) {
    use(policy_yaml("{ daily_usd: 10 }", "", kPrepaid));
    const auto l = shared(ledger());
    // A reservation made before batches: a string record, its deadline in
    // sc:{ORG}:reservations under the request's id.
    redis.set(kKeyDaily, "3000000000");
    redis.set(kBalance, "7000000000");
    redis.set(kHeld, "3000000000");
    redis.set(P + "resv:old-1", "-3000000000 spend:key:k1:d:2026-11-18\n3000000000 balance\n"
                                "-3000000000 balance:held\n");
    redis.command({"ZADD", P + "reservations", std::to_string(kNow * 1000 - 1), "old-1"});
    // And a batch record not due yet.
    ASSERT_EQ(reserve_parts({item(l, kUsd, "req-1")}, "req-1").size(), 1u);
    EXPECT_EQ(sweep(8).integer, 1);
    EXPECT_EQ(at(kKeyDaily), "1000000000");
    EXPECT_EQ(at(kBalance), "9000000000");
    EXPECT_EQ(at(kHeld), "1000000000");
    EXPECT_FALSE(redis.exists(P + "resv:old-1"));
    EXPECT_FALSE(redis.exists(P + "reservations"));
    EXPECT_FALSE(redis.exists(P + "released:old-1"));  // no marker for a legacy string record
    EXPECT_TRUE(has(batch_record("req-1")));
    EXPECT_EQ(sweep(8).integer, 0);
}

// ---------------------------------------------------------------------------
// Exact arithmetic: values below 2^53 are Lua numbers, larger ones integer
// strings; a batch crosses between the two.

TEST_F(ReserveBatch, AroundTwoToTheFiftyThreeEveryNanoCounts) {
    use(policy_yaml("{ monthly_usd: 10 }", ""));
    Ledger base = ledger();
    base.counters[1].cap = 9'007'199'254'740'993;  // 2^53 + 1: no double holds it
    const auto l = shared(base);
    redis.set(kKeyMonthly, "9007199254740990");
    const Parts parts = reserve_parts({item(l, 1, "req-1"), item(l, 1, "req-2"), item(l, 1, "req-3"),
                                       item(l, 1, "req-4"), item(l, 0, "req-5")},
                                      "req-1");
    EXPECT_EQ(parts, (Parts{{1, 0, 0, 0, 9'007'199'254'740'991},
                            {1, 0, 0, 0, 9'007'199'254'740'992},
                            {1, 0, 0, 0, 9'007'199'254'740'992},  // 2^53 + 1 as a reply (a double) rounds
                            {0, 1, 9'007'199'254'740'992, 0},
                            {1, 0, 0, 0, 9'007'199'254'740'992}}));
    EXPECT_EQ(at(kKeyMonthly), "9007199254740993");  // the counter itself is exact: the cap, reached
}

TEST_F(ReserveBatch, ACapAtTenToTheFifteenIsExact) {
    use(policy_yaml("{ monthly_usd: 10 }", ""));
    Ledger base = ledger();
    base.counters[1].cap = 1'000'000'000'000'000;  // 10^15: 16 digits
    const auto l = shared(base);
    redis.set(kKeyMonthly, "999999999999990");  // 15 digits
    const std::size_t mark = redis.log.size();
    const Parts parts = reserve_parts({item(l, 5, "req-1"), item(l, 5, "req-2"), item(l, 1, "req-3"),
                                       item(l, 0, "req-4")},
                                      "req-1");
    EXPECT_EQ(parts, (Parts{{1, 0, 0, 0, 999'999'999'999'995},
                            {1, 0, 0, 0, 1'000'000'000'000'000},  // exactly the cap
                            {0, 1, 1'000'000'000'000'000, 0},
                            {1, 0, 0, 0, 1'000'000'000'000'000}}));
    EXPECT_EQ(at(kKeyMonthly), "1000000000000000");
    EXPECT_EQ(increments(kKeyMonthly, mark), (std::vector<std::string>{"10"}));
    // Back below it, from a string to a number.
    redis.set(kKeyMonthly, "1000000000000001");
    EXPECT_EQ(parts_of(reserve_batch({item(l, 1, "req-5")}, "req-5")), (Parts{{0, 1, 1'000'000'000'000'001, 0}}));
    redis.set(kKeyMonthly, "-1000000000000001");  // given back below 0
    const Parts negative = reserve_parts({item(l, 1'000'000'000'000'001, "req-6"), item(l, 1'000'000'000'000'000,
                                                                                         "req-7"),
                                          item(l, 1, "req-8")},
                                         "req-6");
    EXPECT_EQ(negative, (Parts{{1, 0, 0, 0, 0}, {1, 0, 0, 0, 1'000'000'000'000'000}, {0, 1, 1'000'000'000'000'000, 0}}));
    EXPECT_EQ(at(kKeyMonthly), "1000000000000000");
}

TEST_F(ReserveBatch, ABatchsSumCrossingTenToTheFifteenIsExact) {
    use(policy_yaml("{ monthly_usd: 10 }", ""));
    Ledger base = ledger();
    base.counters[1].cap = 2'000'000'000'000'000;
    const auto l = shared(base);
    const std::size_t mark = redis.log.size();
    const Parts parts = reserve_parts({item(l, 600'000'000'000'000, "req-1"), item(l, 600'000'000'000'000, "req-2"),
                                       item(l, 800'000'000'000'001, "req-3"), item(l, 800'000'000'000'000, "req-4")},
                                      "req-1");
    EXPECT_EQ(parts, (Parts{{1, 0, 0, 0, 600'000'000'000'000},
                            {1, 0, 0, 0, 1'200'000'000'000'000},
                            {0, 1, 1'200'000'000'000'000, 0},
                            {1, 0, 0, 0, 2'000'000'000'000'000}}));
    EXPECT_EQ(at(kKeyMonthly), "2000000000000000");
    EXPECT_EQ(increments(kKeyMonthly, mark), (std::vector<std::string>{"2000000000000000"}));
    EXPECT_EQ(record("req-1", "req-3"), "(nil)");
    EXPECT_EQ(record("req-1", "req-4"), "-800000000000000 spend:key:k1:m:2026-11\n");
}

TEST_F(ReserveBatch, ACapNearInt64MaxIsExactAcrossABatch) {
    use(policy_yaml("{ monthly_usd: 10 }", "warn_at: [0.5]\n"));
    Ledger base = ledger();
    const Nanos cap = 9'223'372'036'854'775'000;  // doubles near it are 1024 apart
    base.counters[1].cap = cap;
    const auto l = shared(base);
    redis.set(kKeyMonthly, "9223372036854774000");
    const std::size_t mark = redis.log.size();
    const Parts parts = reserve_parts({item(l, 500, "req-1"), item(l, 501, "req-2"), item(l, 500, "req-3"),
                                       item(l, 1, "req-4")},
                                      "req-1");
    ASSERT_EQ(parts.size(), 4u);
    EXPECT_EQ(parts[0][0], 1);
    EXPECT_EQ(parts[1][0], 0);  // 9223372036854775001 > cap: a double would say equal
    EXPECT_EQ(parts[2][0], 1);  // exactly the cap
    EXPECT_EQ(parts[3][0], 0);
    for (const auto &part : parts)
        for (long long v : part) EXPECT_LE(v, std::numeric_limits<long long>::max());
    EXPECT_EQ(at(kKeyMonthly), "9223372036854775000");
    EXPECT_EQ(increments(kKeyMonthly, mark), (std::vector<std::string>{"1000"}));
    EXPECT_EQ(decode_reserve_reply(*l, parts[1]).kind, ReserveOutcome::Kind::blocked);
    EXPECT_EQ(decode_reserve_reply(*l, parts[2]).kind, ReserveOutcome::Kind::allowed);
    // Settled: exact too.
    EXPECT_EQ(settle_batch({settle_item(l, {500, 0}, {499, 0}, "req-1", "req-1"),
                            settle_item(l, {500, 0}, {1, 0}, "req-3", "req-1")})
                  .integer,
              1);
    EXPECT_EQ(at(kKeyMonthly), "9223372036854774500");
}

TEST_F(ReserveBatch, AWarningThresholdNearInt64MaxIsCrossedExactlyByABatch) {
    use(policy_yaml("{ monthly_usd: 10 }", "warn_at: [0.5]\n"));
    Ledger base = ledger();
    base.counters[1].cap = 9'223'372'036'854'775'000;  // threshold ceil(cap / 2) = 4611686018427387500
    const auto l = shared(base);
    ASSERT_EQ(warn_threshold(9'223'372'036'854'775'000, WarnFraction{"0.5", 500'000'000}), 4'611'686'018'427'387'500);
    redis.set(kKeyMonthly, "4611686018427387000");
    // Up to one short of it: nothing (a double would have it at the threshold).
    reserve_parts({item(l, 300, "req-1"), item(l, 199, "req-2")}, "req-1");
    EXPECT_EQ(at(kKeyMonthly), "4611686018427387499");
    EXPECT_TRUE(events().empty());
    // Exactly to it: one warning, the counter's exact value.
    reserve_parts({item(l, 1, "req-3"), item(l, 2, "req-4")}, "req-3");
    EXPECT_EQ(at(kKeyMonthly), "4611686018427387502");
    EXPECT_EQ(events(), (std::vector<Event>{warning("key", "k1", "monthly", "2026-11", "0.5", "4611686018427387502",
                                                    "9223372036854775000")}));
}

// add_all must not take an existing counter for a new one when its reply,
// as a Lua number (a double), rounds to the delta: past 2^53 a counter of 5
// plus 9e18 reads as 9e18, and its own expiry must stay.
TEST_F(ReserveBatch, AnExistingCountersExpiryIsKeptPastTwoToThe53) {
    use(policy_yaml("{ monthly_usd: 10 }", ""));
    Ledger base = ledger();
    base.counters[1].cap = std::numeric_limits<std::int64_t>::max();
    const auto l = shared(base);
    redis.set(kKeyMonthly, "5");
    redis.command({"EXPIREAT", kKeyMonthly, "1900000000"});
    ASSERT_EQ(reserve_parts({item(l, 9'000'000'000'000'000'000, "req-1")}, "req-1")[0][0], 1);
    EXPECT_EQ(at(kKeyMonthly), "9000000000000000005");
    EXPECT_EQ(redis.expire_at(kKeyMonthly), 1900000000);  // not a new counter: its expiry left alone
}

TEST_F(ReserveBatch, ABalancePastTenToTheFifteenIsDrawnExactly) {
    use(policy_yaml("", "", kPrepaid));
    const auto l = shared(ledger());
    redis.set(kBalance, "1000000000000001");
    const Parts parts = reserve_parts({item(l, 600'000'000'000'000, "req-1"), item(l, 400'000'000'000'001, "req-2")},
                                      "req-1");
    ASSERT_EQ(parts.size(), 2u);
    EXPECT_EQ(parts[0], (std::vector<long long>{1, 0, 0, 0, 400'000'000'000'001, 600'000'000'000'000}));
    EXPECT_EQ(parts[1], (std::vector<long long>{1, 0, 0, 0, 0, 1'000'000'000'000'001}));
    EXPECT_EQ(at(kBalance), "0");
    EXPECT_EQ(at(kHeld), "1000000000000001");
    EXPECT_EQ(settle_batch({settle_item(l, {600'000'000'000'000, 0}, {1, 0}, "req-1", "req-1"),
                            settle_item(l, {400'000'000'000'001, 0}, {1, 0}, "req-2", "req-1")})
                  .integer,
              1);
    EXPECT_EQ(at(kBalance), "999999999999999");
    EXPECT_EQ(at(kHeld), "0");
}

// The balance must cover each estimate (estimate <= balance), as the
// requests before it in the batch left it.
TEST_F(ReserveBatch, ABatchDrawsTheBalanceInOrderAndRefusesWhenItIsShort) {
    use(policy_yaml("", "", kPrepaid));
    const auto l = shared(ledger());
    ASSERT_EQ(l->counters[21].key, kBalance);
    redis.set(kBalance, "5000000000");
    const Parts parts = reserve_parts({item(l, 3 * kUsd, "req-1"), item(l, 3 * kUsd, "req-2"),
                                       item(l, 2 * kUsd, "req-3"), item(l, 1, "req-4")},
                                      "req-1");
    EXPECT_EQ(parts, (Parts{{1, 0, 0, 0, 2'000'000'000, 3'000'000'000},
                            {0, sent_position(*l, 21), 2'000'000'000, 0},
                            {1, 0, 0, 0, 0, 5'000'000'000},
                            {0, sent_position(*l, 21), 0, 0}}));
    EXPECT_EQ(at(kBalance), "0");
    EXPECT_EQ(at(kHeld), "5000000000");
    // Past 10^15 as well: one nano short is refused.
    redis.set(kBalance, "1000000000000000");
    EXPECT_EQ(parts_of(reserve_batch({item(l, 1'000'000'000'000'001, "req-5")}, "req-5")),
              (Parts{{0, sent_position(*l, 21), 1'000'000'000'000'000, 0}}));
    EXPECT_EQ(at(kBalance), "1000000000000000");
}

}  // namespace
}  // namespace spendcap
