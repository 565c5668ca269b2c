// The key schema (redis/keys.h): every name spend-cap uses, and the slot rule
// a Redis Cluster needs (an org's keys share the slot of its {ORG} tag).
#include "redis/keys.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "fake_redis_lua.h"

namespace spendcap {
namespace {

using spendcap_test::key_slot;

TEST(Keys, TheSpecsPublicNames) {
    EXPECT_EQ(keys::counter("acme", keys::Measure::spend, Scope::key, "k1", "d:2026-11-18"),
              "sc:{acme}:spend:key:k1:d:2026-11-18");
    EXPECT_EQ(keys::counter("acme", keys::Measure::requests, Scope::project, "p", "m:2026-11"),
              "sc:{acme}:reqs:project:p:m:2026-11");
    EXPECT_EQ(keys::counter("acme", keys::Measure::tokens, Scope::customer, "c_1", "life"),
              "sc:{acme}:tokens:customer:c_1:life");
    EXPECT_EQ(keys::rate("acme", Scope::org, "acme", "rpm", "2026-11-18T11:06"),
              "sc:{acme}:rate:org:acme:rpm:2026-11-18T11:06");
    EXPECT_EQ(keys::balance("acme"), "sc:{acme}:balance");
    EXPECT_EQ(keys::held("acme"), "sc:{acme}:balance:held");
    EXPECT_EQ(keys::cleared("acme"), "sc:{acme}:cleared");
    EXPECT_EQ(keys::events("acme"), "sc:{acme}:events");
    EXPECT_EQ(keys::key_lookup("ab12"), "sc:key:ab12");
}

TEST(Keys, AnOrgsKeysShareItsSlotAndTheGlobalOnesHaveTheirOwn) {
    const std::string org = "acme-corp";
    const unsigned slot = key_slot(keys::org_prefix(org));
    const std::vector<std::string> of_org = {
        keys::counter(org, keys::Measure::spend, Scope::key, "k", "life"), keys::rate(org, Scope::key, "k", "tpm", "m"),
        keys::balance(org), keys::held(org), keys::cleared(org), keys::settlements(org), keys::events(org),
        keys::config(org), keys::key_record(org, "k"), keys::project_record(org, "p"), keys::org_record(org),
        keys::customer_record(org, "c"), keys::api_keys(org), keys::api_projects(org), keys::topup(org, "ab"),
        keys::reserved(org), keys::deadlines(org), keys::settled(org), keys::released(org), keys::gone(org),
        keys::markers(org, "m:2026-11"), keys::low_balance(org), keys::key_expired(org, "k", 1),
        keys::legacy_batch_deadlines(org), keys::legacy_request_deadlines(org), keys::legacy_record(org, "b"),
        keys::legacy_released(org, "r")};
    for (const std::string &k : of_org) {
        EXPECT_EQ(k.rfind("sc:{" + org + "}:", 0), 0u) << k;
        EXPECT_EQ(key_slot(k), slot) << k;
    }
    // each org's keys in one slot, and two orgs in two (these two, at least)
    EXPECT_NE(key_slot(keys::events("acme")), key_slot(keys::events("beta")));
    // the global records: no tag, so each id's in a slot of its own
    EXPECT_EQ(keys::key_id("key_1"), "sc:keyid:key_1");
    EXPECT_EQ(keys::project_index("p1"), "sc:project:p1");
    EXPECT_EQ(keys::api_orgs(), "sc:orgs");
    EXPECT_NE(key_slot(keys::key_id("key_1")), key_slot(keys::key_lookup("ab12")));
}

TEST(Keys, EveryNameIsDistinct) {
    const std::string o = "o";
    const std::vector<std::string> names = {
        keys::reserved(o), keys::deadlines(o), keys::settled(o), keys::released(o), keys::gone(o),
        keys::legacy_batch_deadlines(o), keys::legacy_request_deadlines(o), keys::balance(o), keys::held(o),
        keys::cleared(o), keys::settlements(o), keys::events(o), keys::config(o), keys::org_record(o),
        keys::api_keys(o), keys::api_projects(o), keys::low_balance(o)};
    for (std::size_t i = 0; i < names.size(); ++i)
        for (std::size_t j = i + 1; j < names.size(); ++j) EXPECT_NE(names[i], names[j]);
}

}  // namespace
}  // namespace spendcap
