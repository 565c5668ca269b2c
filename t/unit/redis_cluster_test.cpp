#include <gtest/gtest.h>

#include "redis/cluster.h"

using spendcap::key_slot;
using spendcap::Reply;

TEST(RedisCluster, KeySlotMatchesRedis) {
    // Values from Redis's CLUSTER KEYSLOT.
    EXPECT_EQ(key_slot("foo"), 12182);
    EXPECT_EQ(key_slot("123456789"), 12739);
    EXPECT_EQ(key_slot(""), 0);
    EXPECT_EQ(key_slot("{user1000}.following"), key_slot("{user1000}.followers"));
    EXPECT_EQ(key_slot("{user1000}.following"), key_slot("user1000"));
    // An empty tag or an unclosed brace: the whole key.
    EXPECT_EQ(key_slot("foo{}{bar}"), key_slot(std::string("foo{}{bar}")));
    EXPECT_NE(key_slot("foo{}{bar}"), key_slot("bar"));
    EXPECT_EQ(key_slot("foo{{bar}}zap"), key_slot("{bar"));
    EXPECT_EQ(key_slot("foo{bar}{zap}"), key_slot("bar"));
    EXPECT_EQ(key_slot("{bar"), key_slot(std::string("{bar")));
}

TEST(RedisCluster, OneOrgOneSlot) {
    EXPECT_EQ(key_slot("sc:{acme}:spend:key:k1:d:2026-12-05"), key_slot("sc:{acme}:balance"));
    EXPECT_EQ(key_slot("sc:{acme}:events"), key_slot("acme"));
}

TEST(RedisCluster, CommandSlotIsItsFirstKeys) {
    EXPECT_EQ(spendcap::command_slot({"EVALSHA", "abc", "2", "sc:{o}:a", "sc:{o}:b", "x"}), key_slot("o"));
    EXPECT_EQ(spendcap::command_slot({"EVALSHA", "abc", "0", "x"}), -1);
    EXPECT_EQ(spendcap::command_slot({"EVALSHA", "abc", "1"}), -1);
    EXPECT_EQ(spendcap::command_slot({"PING"}), -1);
}

TEST(RedisCluster, Redirects) {
    auto moved = spendcap::parse_redirect("MOVED 3999 127.0.0.1:6381");
    ASSERT_TRUE(moved);
    EXPECT_EQ(moved->kind, spendcap::Redirect::Kind::moved);
    EXPECT_EQ(moved->slot, 3999);
    EXPECT_EQ(moved->to.host, "127.0.0.1");
    EXPECT_EQ(moved->to.port, 6381);
    auto ask = spendcap::parse_redirect("ASK 0 ::1:7000");
    ASSERT_TRUE(ask);
    EXPECT_EQ(ask->kind, spendcap::Redirect::Kind::ask);
    EXPECT_EQ(ask->to.host, "::1");
    EXPECT_EQ(ask->to.name(), "::1:7000");
    for (const char *bad : {"MOVED", "MOVED 3999", "MOVED x 1.2.3.4:5", "MOVED 16384 a:1", "MOVED 1 a:0",
                            "MOVED 1 a:65536", "MOVED 1 :7000", "ASK 1 host", "TRYAGAIN x", "ERR MOVED 1 a:1"}) {
        EXPECT_FALSE(spendcap::parse_redirect(bad)) << bad;
    }
}

namespace {
Reply node(const std::string &host, long long port) {
    return Reply::array({Reply::bulk(host), Reply::of_integer(port), Reply::bulk("id")});
}
Reply range(long long first, long long last, Reply master, std::vector<Reply> replicas = {}) {
    std::vector<Reply> e{Reply::of_integer(first), Reply::of_integer(last), std::move(master)};
    for (auto &r : replicas) e.push_back(std::move(r));
    return Reply::array(std::move(e));
}
}  // namespace

TEST(RedisCluster, SlotMapFromClusterSlots) {
    Reply reply = Reply::array({range(0, 5460, node("127.0.0.1", 7000), {node("127.0.0.1", 7003)}),
                                range(5461, 10922, node("", 7001)),
                                range(10923, 16383, node("127.0.0.1", 7002)),
                                range(100, 100, node("127.0.0.1", 7002))});  // last word wins
    auto map = spendcap::parse_cluster_slots(reply, "10.0.0.9");
    ASSERT_TRUE(map);
    ASSERT_EQ(map->masters.size(), 3u);  // replicas get no connection
    EXPECT_TRUE(map->complete());
    EXPECT_EQ(map->master_of(0)->port, 7000);
    EXPECT_EQ(map->master_of(5461)->name(), "10.0.0.9:7001");  // empty host: the node asked
    EXPECT_EQ(map->master_of(16383)->port, 7002);
    EXPECT_EQ(map->master_of(100)->port, 7002);
    EXPECT_EQ(map->master_of(-1), nullptr);
    EXPECT_EQ(map->master_of(16384), nullptr);
}

TEST(RedisCluster, SlotMapWithHoles) {
    auto map = spendcap::parse_cluster_slots(Reply::array({range(0, 10, node("h", 1)), range(11, 20, node("?", 2))}), "x");
    ASSERT_TRUE(map);
    EXPECT_FALSE(map->complete());
    EXPECT_EQ(map->master_of(11), nullptr);
    EXPECT_EQ(map->master_of(30), nullptr);
    EXPECT_TRUE(spendcap::parse_cluster_slots(Reply::array({}), "x"));
}

TEST(RedisCluster, SlotMapRejectsWhatIsNotOne) {
    EXPECT_FALSE(spendcap::parse_cluster_slots(Reply::error("ERR This instance has cluster support disabled"), "x"));
    EXPECT_FALSE(spendcap::parse_cluster_slots(Reply::array({Reply::of_integer(1)}), "x"));
    EXPECT_FALSE(spendcap::parse_cluster_slots(Reply::array({range(5, 4, node("h", 1))}), "x"));
    EXPECT_FALSE(spendcap::parse_cluster_slots(Reply::array({range(0, 16384, node("h", 1))}), "x"));
    EXPECT_FALSE(spendcap::parse_cluster_slots(Reply::array({range(-1, 3, node("h", 1))}), "x"));
}
