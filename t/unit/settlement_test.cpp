// settle_at: what a request settles at, from what its response showed.
#include <gtest/gtest.h>

#include "accounting/settlement.h"

namespace spendcap {
namespace {

ModelPrice price() {
    ModelPrice p;
    p.name = "m";
    p.input = 1'000'000'000;   // 1 USD per million tokens: 1000 nano-USD a token
    p.output = 2'000'000'000;  // 2000 nano-USD a token
    return p;
}

Estimate estimate() {
    Estimate e;
    e.input_tokens = 100;
    e.output_tokens = 50;
    e.cost = 100 * 1000 + 50 * 2000;
    return e;
}

Usage usage(std::int64_t in, std::int64_t out) {
    Usage u;
    u.input = in;
    u.output = out;
    return u;
}

ResponseSeen complete(const Usage &u, unsigned status = 200) {
    ResponseSeen s;
    s.read = true;
    s.state = UsageScanner::State::found;
    s.usage = u;
    s.status = status;
    s.request_sent = true;
    return s;
}

TEST(SettleAt, ACompleteUsageIsTheCost) {
    const Settlement s = settle_at(complete(usage(10, 20)), estimate(), price());
    EXPECT_EQ(s.cost, 10 * 1000 + 20 * 2000);
    EXPECT_EQ(s.usage.output, 20);
    EXPECT_STREQ(s.from, "usage");
    EXPECT_EQ(s.warning, "");
}

TEST(SettleAt, ACompleteUsageAboveTheEstimateIsStillTheCost) {
    const Settlement s = settle_at(complete(usage(1000, 1000)), estimate(), price());
    EXPECT_EQ(s.cost, 1000 * 1000 + 1000 * 2000);
    EXPECT_STREQ(s.from, "usage");
}

TEST(SettleAt, AnImplausibleUsageIsNotTakenAtFaceValue) {
    for (const Usage &u : {usage(kMaxPlausibleTokens + 1, 1), usage(1, kMaxPlausibleTokens + 1),
                           usage(-1, 1), usage(1'000'000'000'000'000'000, 0)}) {
        const Settlement s = settle_at(complete(u), estimate(), price());
        EXPECT_EQ(s.cost, estimate().cost);
        EXPECT_EQ(s.usage.input, 100);
        EXPECT_EQ(s.usage.output, 50);
        EXPECT_STREQ(s.from, "reservation");
        EXPECT_NE(s.warning.find("beyond the plausible 100000000"), std::string::npos) << s.warning;
    }
    // at the bound it is taken
    EXPECT_STREQ(settle_at(complete(usage(kMaxPlausibleTokens, 0)), estimate(), price()).from, "usage");
}

TEST(SettleAt, NoUsageFromAnAnswerThatRanIsTheReservation) {
    ResponseSeen seen;
    seen.read = true;
    seen.state = UsageScanner::State::no_usage;
    seen.status = 200;
    seen.request_sent = true;
    const Settlement s = settle_at(seen, estimate(), price());
    EXPECT_EQ(s.cost, estimate().cost);
    EXPECT_STREQ(s.from, "reservation");
    EXPECT_EQ(s.warning, "the response has no usage");

    seen.status = 0;  // no answer after the request was sent: it may have run
    EXPECT_EQ(settle_at(seen, estimate(), price()).cost, estimate().cost);
    EXPECT_EQ(settle_at(seen, estimate(), price()).warning, "the provider did not answer (aborted or timed out)");
}

TEST(SettleAt, AnErrorAnswerOrANeverSentRequestCostsNothing) {
    ResponseSeen seen;
    seen.read = true;
    seen.state = UsageScanner::State::no_usage;
    seen.status = 500;
    seen.request_sent = true;
    Settlement s = settle_at(seen, estimate(), price());
    EXPECT_EQ(s.cost, 0);
    EXPECT_STREQ(s.from, "usage");
    EXPECT_EQ(s.warning, "");

    seen.status = 0;
    seen.request_sent = false;  // the upstream was never reached
    EXPECT_EQ(settle_at(seen, estimate(), price()).cost, 0);
}

TEST(SettleAt, AnIncompleteStreamNeverSettlesBelowWhatItReported) {
    ResponseSeen seen = complete(usage(10, 20));
    seen.state = UsageScanner::State::malformed;
    seen.error = "the stream ended before its final event";
    Settlement s = settle_at(seen, estimate(), price());
    EXPECT_EQ(s.cost, estimate().cost);  // reported 50,000 < the reservation
    EXPECT_STREQ(s.from, "reservation");
    EXPECT_EQ(s.warning, "the stream ended before its final event");

    seen.usage = usage(500, 500);  // more than the reservation
    s = settle_at(seen, estimate(), price());
    EXPECT_EQ(s.cost, 500 * 1000 + 500 * 2000);
    EXPECT_STREQ(s.from, "usage");
    EXPECT_EQ(s.usage.input, 500);
}

TEST(SettleAt, AnUnreadableResponseIsTheReservation) {
    ResponseSeen seen = complete(usage(10, 20));
    seen.unreadable = true;  // e.g. br: whatever the reader saw is not trusted
    const Settlement s = settle_at(seen, estimate(), price());
    EXPECT_EQ(s.cost, estimate().cost);
    EXPECT_STREQ(s.from, "reservation");
    EXPECT_EQ(s.warning, "the response's encoding is not readable or not in memory");

    ResponseSeen unread;
    unread.status = 200;
    EXPECT_EQ(settle_at(unread, estimate(), price()).warning, "the response was not read");
}

}  // namespace
}  // namespace spendcap

// ---------------------------------------------------------------------------
// Whether the log phase settles (the rules the glue used to hold itself).

namespace {
spendcap::SettleFacts facts(bool sent, bool open, bool refused, bool failed, bool reached, bool ledger = true) {
    return spendcap::SettleFacts{sent, open, refused, failed, reached, ledger};
}
}  // namespace

TEST(PlanSettlement, AnAllowedRequestSettlesInItsBatch) {
    const spendcap::SettlePlan p = spendcap::plan_settlement(facts(true, false, false, false, true));
    EXPECT_TRUE(p.settle);
    EXPECT_TRUE(p.in_batch);
}

TEST(PlanSettlement, NothingWasCountedNothingSettles) {
    EXPECT_FALSE(spendcap::plan_settlement(facts(false, false, false, false, false)).settle);  // refused here
    EXPECT_FALSE(spendcap::plan_settlement(facts(true, false, true, false, false)).settle);    // a cap refused it
    EXPECT_FALSE(spendcap::plan_settlement(facts(true, false, false, true, false)).settle);    // Redis error, 500
    EXPECT_FALSE(spendcap::plan_settlement(facts(true, false, false, false, true, false)).settle);  // no ledger
}

TEST(PlanSettlement, FailingOpenAddsTheRealCostWithoutABatch) {
    const spendcap::SettlePlan unsent = spendcap::plan_settlement(facts(false, true, false, false, true));
    EXPECT_TRUE(unsent.settle);
    EXPECT_FALSE(unsent.in_batch);
    // Its reserve left and Redis answered an error: nothing to look for in a batch.
    const spendcap::SettlePlan failed = spendcap::plan_settlement(facts(true, true, false, true, true));
    EXPECT_TRUE(failed.settle);
    EXPECT_FALSE(failed.in_batch);
}

TEST(PlanSettlement, ATimedOutReserveSettlesInItsBatchEvenWhenRefusedHere) {
    // fail-closed timeout: refused with 503, settled at nothing to give back
    // whatever Redis may still reserve
    const spendcap::SettlePlan p = spendcap::plan_settlement(facts(true, false, false, false, false));
    EXPECT_TRUE(p.settle);
    EXPECT_TRUE(p.in_batch);
}
