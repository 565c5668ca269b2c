// Plans and merged limits: the plan ceiling choice, the org's limits with its
// plan's filled in, and customer overrides over the defaults.
#include "policy/policy.h"

#include <gtest/gtest.h>

#include <limits>

namespace spendcap {
namespace {

constexpr std::int64_t kDay = 86400;
constexpr Nanos kUsd = kNanosPerUsd;
constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();

// SPEC section 2's paid plan.
const std::vector<CeilingRow> kPaid = {
    {0, 0, 100 * kUsd},
    {100 * kUsd, 14, 1000 * kUsd},
    {5000 * kUsd, 90, 25000 * kUsd},
};

TEST(CeilingFor, ANewOrgGetsTheFirstRow) {
    EXPECT_EQ(ceiling_for(kPaid, 0, 0), 100 * kUsd);
    EXPECT_EQ(ceiling_for(kPaid, 99 * kUsd, 13 * kDay), 100 * kUsd);
}

TEST(CeilingFor, BothConditionsAreNeeded) {
    // Cleared holds for every row, age only for the first.
    EXPECT_EQ(ceiling_for(kPaid, 1'000'000 * kUsd, 13 * kDay), 100 * kUsd);
    // Age holds for every row, cleared only for the first.
    EXPECT_EQ(ceiling_for(kPaid, 99 * kUsd, 3650 * kDay), 100 * kUsd);
    // Row 3's cleared holds but its age does not: row 2 applies.
    EXPECT_EQ(ceiling_for(kPaid, 6000 * kUsd, 30 * kDay), 1000 * kUsd);
    // Row 3's age holds but its cleared does not.
    EXPECT_EQ(ceiling_for(kPaid, 4999 * kUsd, 365 * kDay), 1000 * kUsd);
    EXPECT_EQ(ceiling_for(kPaid, 6000 * kUsd, 365 * kDay), 25000 * kUsd);
}

TEST(CeilingFor, BoundariesAreInclusive) {
    EXPECT_EQ(ceiling_for(kPaid, 100 * kUsd, 14 * kDay), 1000 * kUsd);
    EXPECT_EQ(ceiling_for(kPaid, 5000 * kUsd, 90 * kDay), 25000 * kUsd);
}

TEST(CeilingFor, OneSecondOrOneNanoShortIsTheRowBefore) {
    EXPECT_EQ(ceiling_for(kPaid, 100 * kUsd, 14 * kDay - 1), 100 * kUsd);
    EXPECT_EQ(ceiling_for(kPaid, 100 * kUsd - 1, 14 * kDay), 100 * kUsd);
    EXPECT_EQ(ceiling_for(kPaid, 5000 * kUsd, 90 * kDay - 1), 1000 * kUsd);
    EXPECT_EQ(ceiling_for(kPaid, 5000 * kUsd - 1, 90 * kDay), 1000 * kUsd);
}

TEST(CeilingFor, TheLastMatchingRowWinsNotTheLargest) {
    const std::vector<CeilingRow> rows = {
        {0, 0, 100 * kUsd},
        {10 * kUsd, 1, 5000 * kUsd},
        {100 * kUsd, 14, 200 * kUsd},  // a later row may lower the ceiling
    };
    EXPECT_EQ(ceiling_for(rows, 200 * kUsd, 30 * kDay), 200 * kUsd);
    EXPECT_EQ(ceiling_for(rows, 50 * kUsd, 30 * kDay), 5000 * kUsd);
    EXPECT_EQ(ceiling_for(rows, 200 * kUsd, 5 * kDay), 5000 * kUsd);
    EXPECT_EQ(ceiling_for(rows, 5 * kUsd, 30 * kDay), 100 * kUsd);
}

TEST(CeilingFor, NoRowHolds) {
    EXPECT_EQ(ceiling_for({}, 0, 0), std::nullopt);
    EXPECT_EQ(ceiling_for({}, kMax, kMax), std::nullopt);
    // Only a hand-built list lacks the 0 / 0 row a loaded plan starts with.
    EXPECT_EQ(ceiling_for({{100 * kUsd, 14, 1000 * kUsd}}, 50 * kUsd, 30 * kDay), std::nullopt);
}

TEST(CeilingFor, FutureCreatedAtAndRefundsStillGetTheFirstRow) {
    // Clock skew (created_at ahead of now) is a brand-new account, and a
    // negative cleared balance (refunds) is none: neither lifts the ceiling.
    EXPECT_EQ(ceiling_for(kPaid, 0, -1), 100 * kUsd);
    EXPECT_EQ(ceiling_for(kPaid, -5 * kUsd, 400 * kDay), 100 * kUsd);
}

TEST(CeilingsByAge, KeepsTheRowsOldEnoughInPolicyOrder) {
    ASSERT_EQ(ceilings_by_age(kPaid, 13 * kDay + 86399).size(), 1u);
    const std::vector<CeilingRow> at14 = ceilings_by_age(kPaid, 14 * kDay);
    ASSERT_EQ(at14.size(), 2u);
    EXPECT_EQ(at14[1].monthly_usd, 1000 * kUsd);
    EXPECT_EQ(ceilings_by_age(kPaid, 90 * kDay).size(), 3u);
    EXPECT_EQ(ceilings_by_age(kPaid, -kDay).size(), 1u);
}

TEST(CeilingFor, ExtremeValuesDoNotOverflow) {
    EXPECT_EQ(ceiling_for(kPaid, kMax, kMax), 25000 * kUsd);
    const std::vector<CeilingRow> rows = {{0, 0, 1}, {0, kMax, 2}};  // age_days * 86400 > int64
    EXPECT_EQ(ceiling_for(rows, 0, kMax), 1);
}

// Free and paid plans as in SPEC section 2, with orgs around them.
const char *kPolicy = R"(plans:
  free:
    limits: { monthly_usd: 1, rpm: 10 }
  paid:
    limits: { daily_usd: 100, tpm: 50000 }
    ceilings:
      - { cleared_usd: 0,    age_days: 0,  monthly_usd: 100 }
      - { cleared_usd: 100,  age_days: 14, monthly_usd: 1000 }
      - { cleared_usd: 5000, age_days: 90, monthly_usd: 25000 }
orgs:
  hobby:
    plan: free
  big_hobby:
    plan: free
    limits: { monthly_usd: 50 }
  daily_hobby:
    plan: free
    limits: { daily_usd: 2 }
  acme:
    plan: paid
    created_at: 2026-01-10T00:00:00Z
    limits: { daily_usd: 20 }
  enterprise:
    plan: paid
    limits: { monthly_usd: 10000, rpm: 0 }
  plain:
    limits: { daily_usd: 3 }
)";

class OrgLimits : public ::testing::Test {
protected:
    std::shared_ptr<const Policy> policy = parse_policy(kPolicy, "plans.yaml");
    const Org &org(const char *id) const { return policy->orgs.at(id); }
};

TEST_F(OrgLimits, AFreePlansCapAppliesWhenTheOrgHasNone) {
    const Limits limits = policy->org_limits(org("hobby"));
    EXPECT_EQ(limits.monthly_usd, 1 * kUsd);
    EXPECT_EQ(limits.rpm, 10);
    EXPECT_FALSE(limits.daily_usd.has_value());
    EXPECT_EQ(policy->dynamic_ceiling(org("hobby")), nullptr);
    EXPECT_EQ(policy->plan_of(org("hobby")), &policy->plans.at("free"));
}

TEST_F(OrgLimits, TheOrgsOwnMonthlyCapReplacesThePlans) {
    const Limits limits = policy->org_limits(org("big_hobby"));
    EXPECT_EQ(limits.monthly_usd, 50 * kUsd);
    EXPECT_EQ(limits.rpm, 10);  // the plan still fills in what the org leaves out
}

TEST_F(OrgLimits, TheOrgsDailyCapIsKeptAlongsideThePlansMonthly) {
    const Limits limits = policy->org_limits(org("daily_hobby"));
    EXPECT_EQ(limits.daily_usd, 2 * kUsd);
    EXPECT_EQ(limits.monthly_usd, 1 * kUsd);
}

TEST_F(OrgLimits, APaidPlansCeilingsDecideTheMonthlyCap) {
    const Org &acme = org("acme");
    EXPECT_EQ(policy->dynamic_ceiling(acme), &policy->plans.at("paid").ceilings);
    const Limits limits = policy->org_limits(acme);
    EXPECT_FALSE(limits.monthly_usd.has_value());  // decided from Redis state at reserve time
    EXPECT_EQ(limits.daily_usd, 20 * kUsd);        // the org's own, not the plan's 100
    EXPECT_EQ(limits.tpm, 50000);
    EXPECT_EQ(acme.limits.daily_usd, 20 * kUsd);   // the org's record is left as written
    EXPECT_FALSE(acme.limits.tpm.has_value());
}

TEST_F(OrgLimits, AnOrgOnAPaidPlanWithItsOwnMonthlyCapHasNoCeiling) {
    const Org &enterprise = org("enterprise");
    EXPECT_EQ(policy->dynamic_ceiling(enterprise), nullptr);
    const Limits limits = policy->org_limits(enterprise);
    EXPECT_EQ(limits.monthly_usd, 10000 * kUsd);
    EXPECT_EQ(limits.daily_usd, 100 * kUsd);
    EXPECT_EQ(limits.rpm, 0);  // 0 is a limit of its own, not "unset"
}

TEST_F(OrgLimits, AnOrgWithoutAPlanKeepsItsOwnLimits) {
    const Org &plain = org("plain");
    EXPECT_EQ(policy->plan_of(plain), nullptr);
    EXPECT_EQ(policy->dynamic_ceiling(plain), nullptr);
    const Limits limits = policy->org_limits(plain);
    EXPECT_EQ(limits.daily_usd, 3 * kUsd);
    EXPECT_FALSE(limits.monthly_usd.has_value());
    EXPECT_FALSE(limits.rpm.has_value());
}

// The parser refuses such a plan; a policy built by hand (or from Redis
// later) must still not get a fixed monthly cap beside its ceilings.
TEST(OrgLimitsByHand, CeilingsWinOverAPlansMonthlyCap) {
    Policy policy;
    Plan paid;
    paid.name = "paid";
    paid.limits.monthly_usd = 5 * kUsd;
    paid.ceilings = kPaid;
    policy.plans["paid"] = paid;
    Org acme;
    acme.id = "acme";
    acme.plan = "paid";
    EXPECT_NE(policy.dynamic_ceiling(acme), nullptr);
    EXPECT_FALSE(policy.org_limits(acme).monthly_usd.has_value());

    acme.plan = "gone";  // a plan that is not defined counts as none
    EXPECT_EQ(policy.plan_of(acme), nullptr);
    EXPECT_EQ(policy.dynamic_ceiling(acme), nullptr);
}

// Every field set to a distinct value, so a field read from the wrong side shows.
Limits all_fields(std::int64_t base) {
    Limits l;
    l.daily_usd = base + 1;
    l.monthly_usd = base + 2;
    l.lifetime_usd = base + 3;
    l.daily_requests = base + 4;
    l.monthly_requests = base + 5;
    l.daily_tokens = base + 6;
    l.monthly_tokens = base + 7;
    l.rpm = base + 8;
    l.tpm = base + 9;
    return l;
}

void expect_fields(const Limits &l, std::int64_t base) {
    EXPECT_EQ(l.daily_usd, base + 1);
    EXPECT_EQ(l.monthly_usd, base + 2);
    EXPECT_EQ(l.lifetime_usd, base + 3);
    EXPECT_EQ(l.daily_requests, base + 4);
    EXPECT_EQ(l.monthly_requests, base + 5);
    EXPECT_EQ(l.daily_tokens, base + 6);
    EXPECT_EQ(l.monthly_tokens, base + 7);
    EXPECT_EQ(l.rpm, base + 8);
    EXPECT_EQ(l.tpm, base + 9);
}

TEST(LimitsOrElse, EveryFieldFallsBackOnItsOwn) {
    expect_fields(Limits{}.or_else(all_fields(100)), 100);
    expect_fields(all_fields(200).or_else(all_fields(100)), 200);
    expect_fields(all_fields(200).or_else(Limits{}), 200);

    Limits partial;
    partial.monthly_usd = 0;  // set to 0: kept, not replaced
    partial.daily_tokens = 7;
    partial.tpm = 9;
    const Limits merged = partial.or_else(all_fields(100));
    EXPECT_EQ(merged.daily_usd, 101);
    EXPECT_EQ(merged.monthly_usd, 0);
    EXPECT_EQ(merged.lifetime_usd, 103);
    EXPECT_EQ(merged.daily_requests, 104);
    EXPECT_EQ(merged.monthly_requests, 105);
    EXPECT_EQ(merged.daily_tokens, 7);
    EXPECT_EQ(merged.monthly_tokens, 107);
    EXPECT_EQ(merged.rpm, 108);
    EXPECT_EQ(merged.tpm, 9);

    const Limits none = Limits{}.or_else(Limits{});
    EXPECT_FALSE(none.daily_usd || none.monthly_usd || none.lifetime_usd || none.daily_requests ||
                 none.monthly_requests || none.daily_tokens || none.monthly_tokens || none.rpm || none.tpm);
}

TEST(CustomersLimitsFor, AnOverrideReplacesTheDefaultsFieldByField) {
    Customers customers;
    customers.default_limits.monthly_usd = 1 * kUsd;
    customers.default_limits.rpm = 30;
    Limits cust_42;
    cust_42.monthly_usd = 5 * kUsd;
    customers.overrides["cust_42"] = cust_42;
    Limits blocked;
    blocked.rpm = 0;
    blocked.daily_requests = 0;
    customers.overrides["blocked"] = blocked;
    customers.overrides["same"] = Limits{};

    const Limits for_42 = customers.limits_for("cust_42");
    EXPECT_EQ(for_42.monthly_usd, 5 * kUsd);
    EXPECT_EQ(for_42.rpm, 30);  // kept from the defaults (SPEC's cust_42 example)
    EXPECT_FALSE(for_42.daily_usd.has_value());

    const Limits for_blocked = customers.limits_for("blocked");
    EXPECT_EQ(for_blocked.rpm, 0);
    EXPECT_EQ(for_blocked.daily_requests, 0);
    EXPECT_EQ(for_blocked.monthly_usd, 1 * kUsd);

    const Limits for_same = customers.limits_for("same");
    EXPECT_EQ(for_same.monthly_usd, 1 * kUsd);
    EXPECT_EQ(for_same.rpm, 30);

    const Limits for_other = customers.limits_for("cust_43");
    EXPECT_EQ(for_other.monthly_usd, 1 * kUsd);
    EXPECT_EQ(for_other.rpm, 30);
    EXPECT_FALSE(for_other.tpm.has_value());

    EXPECT_FALSE(Customers{}.limits_for("anyone").monthly_usd.has_value());
}

}  // namespace
}  // namespace spendcap
