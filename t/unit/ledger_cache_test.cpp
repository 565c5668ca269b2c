// LedgerCache: a key's ledger built once per (policy, key, customer, UTC
// minute), direct-mapped in a fixed number of slots so that memory stays
// bounded whatever the number of keys.
#include "accounting/ledger.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "base/periods.h"
#include "policy/policy.h"

namespace spendcap {
namespace {

constexpr std::int64_t kNow = 1795000000;          // 2026-11-18T11:06:40Z
constexpr std::int64_t kMinuteStart = 1794999960;  // 11:06:00
constexpr std::int64_t kMinuteReset = 1795000020;  // 11:07:00

const char *kPolicy = R"(models:
  m: { input: 1, output: 2 }
warn_at: [0.5]
customers:
  default_limits: { monthly_usd: 1, rpm: 30 }
plans:
  paid:
    ceilings:
      - { cleared_usd: 0, age_days: 0, monthly_usd: 100 }
      - { cleared_usd: 100, age_days: 14, monthly_usd: 1000 }
orgs:
  acme:
    limits: { monthly_usd: 1000, tpm: 900 }
  paid_org:
    plan: paid
    created_at: 2026-10-19T11:06:40Z
    prepaid: true
    low_balance_usd: 5
projects:
  acme-prod:
    org: acme
    limits: { monthly_usd: 50 }
  p_paid: { org: paid_org }
keys:
  - id: k1
    sha256: 1111111111111111111111111111111111111111111111111111111111111111
    project: acme-prod
    limits: { daily_usd: 2, rpm: 60 }
  - id: k2
    sha256: 2222222222222222222222222222222222222222222222222222222222222222
    project: acme-prod
  - id: k_paid
    sha256: 3333333333333333333333333333333333333333333333333333333333333333
    project: p_paid
)";

const Key &key_of(const Policy &policy, char c) {
    const Key *key = policy.find_key(std::string(64, c));
    if (key == nullptr) throw std::runtime_error(std::string("no key ") + c);
    return *key;
}

// A policy with `n` keys k0..k(n-1) of one project.
std::shared_ptr<const Policy> many_keys_policy(int n) {
    std::string y = "models:\n  m: { input: 1, output: 2 }\norgs:\n  acme: {}\nprojects:\n  p: { org: acme }\nkeys:\n";
    for (int i = 0; i < n; ++i) {
        char sha[65];
        std::snprintf(sha, sizeof sha, "%064x", i + 1);
        y += "  - { id: k" + std::to_string(i) + ", sha256: " + sha + ", project: p, limits: { daily_usd: 1 } }\n";
    }
    return parse_policy(y, "many.yaml");
}

const Key &nth_key(const Policy &policy, int i) {
    char sha[65];
    std::snprintf(sha, sizeof sha, "%064x", i + 1);
    const Key *key = policy.find_key(sha);
    if (key == nullptr) throw std::runtime_error("no key " + std::to_string(i));
    return *key;
}

// The same ledger, counter for counter.
void expect_same(const Ledger &a, const Ledger &b) {
    EXPECT_EQ(a.org, b.org);
    EXPECT_EQ(a.key_id, b.key_id);
    ASSERT_EQ(a.counters.size(), b.counters.size());
    for (std::size_t i = 0; i < a.counters.size(); ++i) {
        EXPECT_EQ(a.counters[i].key, b.counters[i].key) << i;
        EXPECT_EQ(a.counters[i].cap, b.counters[i].cap) << a.counters[i].key;
        EXPECT_EQ(a.counters[i].expire_at, b.counters[i].expire_at) << a.counters[i].key;
        EXPECT_EQ(a.counters[i].kind, b.counters[i].kind) << a.counters[i].key;
        EXPECT_EQ(a.counters[i].scope, b.counters[i].scope) << a.counters[i].key;
        EXPECT_EQ(a.counters[i].window, b.counters[i].window) << a.counters[i].key;
    }
    EXPECT_EQ(a.balance, b.balance);
    EXPECT_EQ(a.held, b.held);
    EXPECT_EQ(a.low_balance, b.low_balance);
    EXPECT_EQ(a.ceiling_counter, b.ceiling_counter);
    ASSERT_EQ(a.ceilings.size(), b.ceilings.size());
    for (std::size_t r = 0; r < a.ceilings.size(); ++r) {
        EXPECT_EQ(a.ceilings[r].cleared_usd, b.ceilings[r].cleared_usd);
        EXPECT_EQ(a.ceilings[r].monthly_usd, b.ceilings[r].monthly_usd);
    }
    ASSERT_EQ(a.warn_at.size(), b.warn_at.size());
    for (std::size_t w = 0; w < a.warn_at.size(); ++w) EXPECT_EQ(a.warn_at[w].label, b.warn_at[w].label);
    EXPECT_EQ(a.periods.now, b.periods.now);
    EXPECT_EQ(a.periods.day, b.periods.day);
    EXPECT_EQ(a.periods.minute, b.periods.minute);
    EXPECT_EQ(a.periods.minute_reset, b.periods.minute_reset);
}

TEST(LedgerCache, AHitWithinOneMinuteIsTheSameLedger) {
    const auto policy = parse_policy(kPolicy, "test.yaml");
    const Key &k1 = key_of(*policy, '1');
    LedgerCache cache;
    EXPECT_EQ(cache.hits(), 0u);
    EXPECT_EQ(cache.misses(), 0u);
    const std::shared_ptr<const Ledger> first = cache.get(*policy, k1, "", kNow);
    ASSERT_NE(first, nullptr);
    EXPECT_EQ(cache.misses(), 1u);
    EXPECT_EQ(cache.hits(), 0u);
    // The same minute, from its first second to its last.
    for (const std::int64_t t : {kNow, kNow + 1, kMinuteStart, kMinuteReset - 1}) {
        EXPECT_EQ(cache.get(*policy, k1, "", t), first) << t;
    }
    EXPECT_EQ(cache.hits(), 4u);
    EXPECT_EQ(cache.misses(), 1u);
    // The ledger keeps the time of the minute's first request.
    EXPECT_EQ(first->periods.now, kNow);
    EXPECT_EQ(first->key_id, "k1");
}

TEST(LedgerCache, ANewMinuteMisses) {
    const auto policy = parse_policy(kPolicy, "test.yaml");
    const Key &k1 = key_of(*policy, '1');
    LedgerCache cache;
    const auto first = cache.get(*policy, k1, "", kNow);
    const auto next = cache.get(*policy, k1, "", kMinuteReset);
    EXPECT_NE(next, first);
    EXPECT_EQ(cache.misses(), 2u);
    EXPECT_EQ(cache.hits(), 0u);
    EXPECT_EQ(first->periods.minute, "2026-11-18T11:06");
    EXPECT_EQ(next->periods.minute, "2026-11-18T11:07");
    EXPECT_EQ(next->periods.now, kMinuteReset);
    // The rate counters name their minute.
    EXPECT_EQ(first->counters.back().key, "sc:{acme}:rate:org:acme:tpm:2026-11-18T11:06");
    EXPECT_EQ(next->counters.back().key, "sc:{acme}:rate:org:acme:tpm:2026-11-18T11:07");
    // The minute before misses too.
    EXPECT_NE(cache.get(*policy, k1, "", kMinuteStart - 1), first);
    EXPECT_EQ(cache.misses(), 3u);
    // And that minute is now cached (the last ledger its slot took).
    EXPECT_EQ(cache.get(*policy, k1, "", kMinuteStart - 2), cache.get(*policy, k1, "", kMinuteStart - 30));
    EXPECT_EQ(cache.hits(), 2u);
}

TEST(LedgerCache, AnotherCustomerMisses) {
    const auto policy = parse_policy(kPolicy, "test.yaml");
    const Key &k1 = key_of(*policy, '1');
    LedgerCache cache;
    // (Each hit asked right after its miss: a slot keeps the last ledger it
    // took, whereas two different entries may share a slot.)
    const auto none = cache.get(*policy, k1, "", kNow);
    EXPECT_EQ(cache.get(*policy, k1, "", kNow + 5), none);
    const auto c1 = cache.get(*policy, k1, "cust_1", kNow);
    EXPECT_EQ(cache.get(*policy, k1, "cust_1", kNow + 5), c1);
    const auto c2 = cache.get(*policy, k1, "cust_2", kNow);
    EXPECT_EQ(cache.misses(), 3u);
    EXPECT_EQ(cache.hits(), 2u);
    EXPECT_NE(none, c1);
    EXPECT_NE(c1, c2);
    EXPECT_EQ(none->counters.size(), 3u * 7 + 2);
    ASSERT_EQ(c1->counters.size(), 4u * 7 + 3);
    EXPECT_EQ(c1->counters[21].key, "sc:{acme}:spend:customer:cust_1:d:2026-11-18");
    EXPECT_EQ(c2->counters[21].key, "sc:{acme}:spend:customer:cust_2:d:2026-11-18");
    EXPECT_EQ(c2->counters.back().key, "sc:{acme}:rate:customer:cust_2:rpm:2026-11-18T11:06");
}

TEST(LedgerCache, AnotherKeyMisses) {
    const auto policy = parse_policy(kPolicy, "test.yaml");
    LedgerCache cache;
    const auto l1 = cache.get(*policy, key_of(*policy, '1'), "", kNow);
    const auto l2 = cache.get(*policy, key_of(*policy, '2'), "", kNow);
    EXPECT_EQ(cache.misses(), 2u);
    EXPECT_EQ(cache.hits(), 0u);
    EXPECT_NE(l1, l2);
    EXPECT_EQ(l1->key_id, "k1");
    EXPECT_EQ(l2->key_id, "k2");
    EXPECT_EQ(l2->counters[0].key, "sc:{acme}:spend:key:k2:d:2026-11-18");
    EXPECT_EQ(cache.get(*policy, key_of(*policy, '2'), "", kNow), l2);
    EXPECT_EQ(cache.hits(), 1u);
}

TEST(LedgerCache, AnotherPolicyMisses) {
    const auto p1 = parse_policy(kPolicy, "test.yaml");
    const auto p2 = parse_policy(kPolicy, "test.yaml");  // reloaded: the same text, another generation
    ASSERT_NE(p1->generation, p2->generation);
    EXPECT_NE(p1->generation, 0u);
    LedgerCache cache;
    const auto a = cache.get(*p1, key_of(*p1, '1'), "", kNow);
    const auto b = cache.get(*p2, key_of(*p2, '1'), "", kNow);
    EXPECT_NE(a, b);
    EXPECT_EQ(cache.misses(), 2u);
    expect_same(*a, *b);

    // The same Key object under another generation (a policy replaced in
    // place, its keys at the same addresses) is not taken for the old one.
    auto mutable_policy = std::make_shared<Policy>(*p1);
    const Key &key = key_of(*mutable_policy, '1');
    LedgerCache one_slot(1);
    const auto before = one_slot.get(*mutable_policy, key, "", kNow);
    EXPECT_EQ(one_slot.get(*mutable_policy, key, "", kNow), before);
    EXPECT_EQ(one_slot.hits(), 1u);
    mutable_policy->generation = p2->generation + 1000;
    const auto after = one_slot.get(*mutable_policy, key, "", kNow);
    EXPECT_NE(after, before);
    EXPECT_EQ(one_slot.misses(), 2u);
    EXPECT_EQ(one_slot.hits(), 1u);
}

TEST(LedgerCache, HitsAndMissesCount) {
    const auto policy = parse_policy(kPolicy, "test.yaml");
    const Key &k1 = key_of(*policy, '1');
    LedgerCache cache;
    for (int i = 0; i < 10; ++i) cache.get(*policy, k1, "", kNow + i % 3);
    EXPECT_EQ(cache.misses(), 1u);
    EXPECT_EQ(cache.hits(), 9u);
    for (int m = 1; m <= 5; ++m) cache.get(*policy, k1, "", kNow + 60 * m);
    EXPECT_EQ(cache.misses(), 6u);
    EXPECT_EQ(cache.hits(), 9u);
}

TEST(LedgerCache, ASlotHoldsOneLedger) {
    const auto policy = parse_policy(kPolicy, "test.yaml");
    const Key &k1 = key_of(*policy, '1'), &k2 = key_of(*policy, '2');
    // One slot (and 0 counts as 1): each newcomer replaces the other.
    for (const std::size_t slots : {std::size_t{1}, std::size_t{0}}) {
        LedgerCache cache(slots);
        const auto a = cache.get(*policy, k1, "", kNow);
        const auto b = cache.get(*policy, k2, "", kNow);
        const auto c = cache.get(*policy, k1, "", kNow);
        EXPECT_EQ(cache.misses(), 3u) << slots;
        EXPECT_EQ(cache.hits(), 0u) << slots;
        EXPECT_NE(a, c) << slots;  // rebuilt ...
        expect_same(*a, *c);       // ... the same
        EXPECT_EQ(b->key_id, "k2");
        EXPECT_EQ(cache.get(*policy, k1, "", kNow), c) << slots;
    }
}

TEST(LedgerCache, MemoryStaysBoundedWhateverTheNumberOfKeys) {
    constexpr int kKeys = 200;
    const auto policy = many_keys_policy(kKeys);
    LedgerCache cache(2);
    std::vector<std::weak_ptr<const Ledger>> made;
    for (int round = 0; round < 2; ++round)
        for (int i = 0; i < kKeys; ++i) {
            std::shared_ptr<const Ledger> l = cache.get(*policy, nth_key(*policy, i), "", kNow);
            ASSERT_NE(l, nullptr);
            EXPECT_EQ(l->key_id, "k" + std::to_string(i));
            made.push_back(l);
        }  // our reference dropped: only the cache may keep it
    std::size_t alive = 0;
    for (const auto &w : made) alive += w.expired() ? 0 : 1;
    EXPECT_GE(alive, 1u);
    EXPECT_LE(alive, 2u);
    EXPECT_EQ(cache.hits() + cache.misses(), 2u * kKeys);
    EXPECT_GE(cache.misses(), 2u * kKeys - 2);  // two slots can hold at most two of them
    // Customers and minutes share the slots too.
    for (int i = 0; i < kKeys; ++i) {
        made.push_back(cache.get(*policy, nth_key(*policy, 0), "cust_" + std::to_string(i), kNow));
        made.push_back(cache.get(*policy, nth_key(*policy, 1), "", kNow + 60 * (i + 1)));
    }
    alive = 0;
    for (const auto &w : made) alive += w.expired() ? 0 : 1;
    EXPECT_LE(alive, 2u);
}

// DISABLED: fails with src/core/ledger.cpp as it is. The slot is
// (Key address ^ ...) % slots with std::hash<const void *> the identity:
// with a power-of-two slot count only the address's low bits choose the
// slot, and Key nodes sit at a fixed stride, so 100 keys of one minute keep
// about 35 ledgers in 2048 slots (a well-mixed hash keeps about 95). Enable
// once the slot hash mixes its inputs.
TEST(LedgerCache, KeysOfOneMinuteSpreadOverTheSlots) {
    constexpr int kKeys = 100;
    const auto policy = many_keys_policy(kKeys);
    LedgerCache cache;  // 2048 slots
    for (int i = 0; i < kKeys; ++i) cache.get(*policy, nth_key(*policy, i), "", kNow);
    const std::size_t before = cache.hits();
    for (int i = 0; i < kKeys; ++i) cache.get(*policy, nth_key(*policy, i), "", kNow);
    EXPECT_GE(cache.hits() - before, 85u);
}

TEST(LedgerCache, ACachedLedgerIsLedgerForAtThatMinute) {
    const auto policy = parse_policy(kPolicy, "test.yaml");
    LedgerCache cache;
    for (const char c : {'1', '2', '3'}) {
        const Key &key = key_of(*policy, c);
        for (const std::string customer : {"", "cust_9"}) {
            const auto cached = cache.get(*policy, key, customer, kNow);
            expect_same(*cached, ledger_for(*policy, key, customer, periods_at(kNow)));
            // A hit later in the minute is the ledger of its first request.
            const auto hit = cache.get(*policy, key, customer, kNow + 15);
            EXPECT_EQ(hit, cached);
            expect_same(*hit, ledger_for(*policy, key, customer, periods_at(kNow)));
            // Its counters are those of any time in that minute.
            const Ledger later = ledger_for(*policy, key, customer, periods_at(kNow + 15));
            ASSERT_EQ(hit->counters.size(), later.counters.size());
            for (std::size_t i = 0; i < later.counters.size(); ++i) {
                EXPECT_EQ(hit->counters[i].key, later.counters[i].key);
                EXPECT_EQ(hit->counters[i].cap, later.counters[i].cap);
                EXPECT_EQ(hit->counters[i].expire_at, later.counters[i].expire_at);
            }
        }
    }
    // The prepaid plan org's ledger: balance, hold and ceilings included.
    const auto paid = cache.get(*policy, key_of(*policy, '3'), "", kNow);
    ASSERT_TRUE(paid->balance.has_value());
    ASSERT_TRUE(paid->held.has_value());
    ASSERT_TRUE(paid->ceiling_counter.has_value());
    EXPECT_EQ(paid->ceilings.size(), 2u);
    EXPECT_EQ(paid->low_balance, std::optional<Nanos>(5 * kNanosPerUsd));
}

}  // namespace
}  // namespace spendcap
