// The fake Redis's hashes, PEXPIRE / PTTL and TYPE (fake_redis_lua.h),
// checked against what Redis 7.0 answers, directly and from Lua.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "fake_redis_lua.h"

namespace spendcap_test {
namespace {

using Fields = std::map<std::string, std::string>;
const std::string kWrongType = "WRONGTYPE Operation against a key holding the wrong kind of value";

std::vector<std::string> strings_of(const Reply &r) {
    std::vector<std::string> out;
    for (const Reply &e : r.elements) out.push_back(e.type == Reply::Type::nil ? "(nil)" : e.str);
    return out;
}

TEST(FakeRedisHash, HsetCountsNewFieldsAndUpdatesOthers) {
    FakeRedis redis;
    EXPECT_EQ(redis.command({"HSET", "h", "a", "1", "b", "2"}), Reply::of_integer(2));
    EXPECT_EQ(redis.command({"HSET", "h", "a", "10", "c", "3"}), Reply::of_integer(1));  // a is an update
    EXPECT_EQ(redis.command({"HSET", "h", "d", "4", "d", "5"}), Reply::of_integer(1));   // twice counts once
    EXPECT_EQ(redis.hash("h"), (Fields{{"a", "10"}, {"b", "2"}, {"c", "3"}, {"d", "5"}}));
    EXPECT_EQ(redis.command({"HLEN", "h"}), Reply::of_integer(4));
    EXPECT_EQ(redis.command({"HLEN", "missing"}), Reply::of_integer(0));
    EXPECT_EQ(redis.command({"HEXISTS", "h", "a"}), Reply::of_integer(1));
    EXPECT_EQ(redis.command({"HEXISTS", "h", "zz"}), Reply::of_integer(0));
    EXPECT_EQ(redis.command({"HEXISTS", "missing", "a"}), Reply::of_integer(0));
    const std::string arity = "ERR wrong number of arguments for 'hset' command";
    EXPECT_EQ(redis.command({"HSET", "h", "a"}).str, arity);
    EXPECT_EQ(redis.command({"HSET", "h"}).str, arity);
    EXPECT_EQ(redis.command({"HSET", "h", "a", "1", "b"}).str, arity);
    EXPECT_EQ(redis.hash("h").at("a"), "10");  // nothing of a refused HSET
    EXPECT_EQ(redis.hash("missing"), Fields{});
    EXPECT_FALSE(redis.exists("missing"));
}

TEST(FakeRedisHash, HmgetAnswersNilForWhatIsMissing) {
    FakeRedis redis;
    redis.hset("h", "a", "1");
    redis.hset("h", "b", "");
    const Reply r = redis.command({"HMGET", "h", "a", "zz", "b"});
    ASSERT_EQ(r.type, Reply::Type::array) << r;
    EXPECT_EQ(r.elements[0], Reply::bulk("1"));
    EXPECT_EQ(r.elements[1], Reply::nil());
    EXPECT_EQ(r.elements[2], Reply::bulk(""));  // an empty value is not nil
    EXPECT_EQ(redis.command({"HMGET", "missing", "a", "b"}), Reply::array({Reply::nil(), Reply::nil()}));
    EXPECT_EQ(redis.command({"HMGET", "h"}).str, "ERR wrong number of arguments for 'hmget' command");
}

TEST(FakeRedisHash, HdelDeletesAnEmptiedHash) {
    FakeRedis redis;
    redis.command({"HSET", "h", "a", "1", "b", "2", "c", "3"});
    EXPECT_EQ(redis.command({"HDEL", "h", "a", "zz"}), Reply::of_integer(1));
    EXPECT_EQ(redis.command({"HDEL", "missing", "a"}), Reply::of_integer(0));
    EXPECT_FALSE(redis.exists("missing"));
    EXPECT_EQ(redis.command({"HDEL", "h", "b", "c", "b"}), Reply::of_integer(2));
    EXPECT_FALSE(redis.exists("h"));
    EXPECT_EQ(redis.data().count("h"), 0u);
    EXPECT_EQ(redis.command({"TYPE", "h"}), Reply::status("none"));
}

TEST(FakeRedisHash, HgetallIsFlatInFieldOrder) {
    FakeRedis redis;
    EXPECT_EQ(redis.command({"HGETALL", "missing"}), Reply::array({}));
    redis.command({"HSET", "h", "b", "2", "a", "1", "c", "3"});
    EXPECT_EQ(strings_of(redis.command({"HGETALL", "h"})), (std::vector<std::string>{"a", "1", "b", "2", "c", "3"}));
    // Snapshots compare hashes by content.
    FakeRedis other;
    other.hset("h", "c", "3");
    other.hset("h", "a", "1");
    other.hset("h", "b", "2");
    EXPECT_EQ(redis.data(), other.data());
    other.hset("h", "b", "x");
    EXPECT_NE(redis.data(), other.data());
}

TEST(FakeRedisHash, PexpireAndPttlUseTheTestsClock) {
    FakeRedis redis;
    redis.set_now_ms(1795000000250);
    EXPECT_EQ(redis.command({"PTTL", "h"}), Reply::of_integer(-2));
    EXPECT_EQ(redis.command({"PEXPIRE", "h", "1000"}), Reply::of_integer(0));  // no key
    EXPECT_FALSE(redis.exists("h"));
    redis.hset("h", "a", "1");
    EXPECT_EQ(redis.command({"PTTL", "h"}), Reply::of_integer(-1));
    EXPECT_EQ(redis.command({"PEXPIRE", "h", "1500"}), Reply::of_integer(1));
    EXPECT_EQ(redis.pexpire_at("h"), 1795000001750);
    EXPECT_EQ(redis.command({"PTTL", "h"}), Reply::of_integer(1500));
    // Writing a field keeps the whole key's expiry.
    EXPECT_EQ(redis.command({"HSET", "h", "b", "2"}), Reply::of_integer(1));
    EXPECT_EQ(redis.pexpire_at("h"), 1795000001750);
    redis.set_now_ms(1795000001750);  // at its expiry the key still lives
    EXPECT_EQ(redis.command({"PTTL", "h"}), Reply::of_integer(0));
    EXPECT_EQ(redis.command({"HLEN", "h"}), Reply::of_integer(2));
    redis.set_now_ms(1795000001751);
    EXPECT_EQ(redis.command({"HLEN", "h"}), Reply::of_integer(0));
    EXPECT_EQ(redis.command({"PTTL", "h"}), Reply::of_integer(-2));
    EXPECT_EQ(redis.hash("h"), Fields{});
    // 0 or less deletes the key and answers 1.
    redis.set("s", "x");
    EXPECT_EQ(redis.command({"PEXPIRE", "s", "0"}), Reply::of_integer(1));
    EXPECT_FALSE(redis.exists("s"));
    redis.set("s", "x");
    EXPECT_EQ(redis.command({"PEXPIRE", "s", "-5"}), Reply::of_integer(1));
    EXPECT_FALSE(redis.exists("s"));
    // Redis 7.0's errors and options.
    redis.set("s", "x");
    EXPECT_EQ(redis.command({"PEXPIRE", "s", "1.5"}).str, "ERR value is not an integer or out of range");
    EXPECT_EQ(redis.command({"PEXPIRE", "s", "9223372036854775807"}).str,
              "ERR invalid expire time in 'pexpire' command");
    EXPECT_EQ(redis.command({"PEXPIRE", "s", "10", "foo"}).str, "ERR Unsupported option foo");
    EXPECT_EQ(redis.command({"PEXPIRE", "s", "10", "nx", "gt"}).str,
              "ERR NX and XX, GT or LT options at the same time are not compatible");
    EXPECT_EQ(redis.command({"PEXPIRE", "s", "10", "GT", "LT"}).str,
              "ERR GT and LT options at the same time are not compatible");
    EXPECT_EQ(redis.command({"PEXPIRE", "s", "10", "XX"}), Reply::of_integer(0));  // no expiry yet
    EXPECT_EQ(redis.command({"PEXPIRE", "s", "10", "GT"}), Reply::of_integer(0));  // none is infinite
    EXPECT_EQ(redis.command({"PEXPIRE", "s", "10", "NX"}), Reply::of_integer(1));
    EXPECT_EQ(redis.command({"PEXPIRE", "s", "20", "NX"}), Reply::of_integer(0));
    EXPECT_EQ(redis.command({"PEXPIRE", "s", "5", "GT"}), Reply::of_integer(0));
    EXPECT_EQ(redis.command({"PEXPIRE", "s", "20", "gt"}), Reply::of_integer(1));
    EXPECT_EQ(redis.command({"PEXPIRE", "s", "30", "LT"}), Reply::of_integer(0));
    EXPECT_EQ(redis.command({"PEXPIRE", "s", "15", "LT", "XX"}), Reply::of_integer(1));
    EXPECT_EQ(redis.command({"PTTL", "s"}), Reply::of_integer(15));
}

TEST(FakeRedisHash, TypeNamesEachKind) {
    FakeRedis redis;
    redis.set("s", "1");
    redis.hset("h", "f", "v");
    redis.command({"ZADD", "z", "1", "m"});
    redis.command({"XADD", "x", "*", "f", "v"});
    EXPECT_EQ(redis.command({"TYPE", "missing"}), Reply::status("none"));
    EXPECT_EQ(redis.command({"TYPE", "s"}), Reply::status("string"));
    EXPECT_EQ(redis.command({"TYPE", "h"}), Reply::status("hash"));
    EXPECT_EQ(redis.command({"TYPE", "z"}), Reply::status("zset"));
    EXPECT_EQ(redis.command({"TYPE", "x"}), Reply::status("stream"));
    EXPECT_EQ(redis.command({"TYPE"}).str, "ERR wrong number of arguments for 'type' command");
}

TEST(FakeRedisHash, WrongTypeBothWays) {
    FakeRedis redis;
    redis.hset("h", "f", "7");
    for (const std::vector<std::string> &c : std::vector<std::vector<std::string>>{
             {"GET", "h"},
             {"INCRBY", "h", "1"},
             {"ZADD", "h", "1", "m"},
             {"ZREM", "h", "m"},
             {"ZSCORE", "h", "m"},
             {"ZCARD", "h"},
             {"ZRANGEBYSCORE", "h", "-inf", "+inf"},
             {"XADD", "h", "*", "f", "v"},
         })
        EXPECT_EQ(redis.command(c).str, kWrongType) << c[0];
    EXPECT_EQ(redis.hash("h"), (Fields{{"f", "7"}}));  // untouched
    redis.set("s", "1");
    redis.command({"ZADD", "z", "1", "m"});
    redis.command({"XADD", "x", "*", "f", "v"});
    for (const char *key : {"s", "z", "x"}) {
        for (const std::vector<std::string> &c : std::vector<std::vector<std::string>>{
                 {"HSET", key, "f", "v"},
                 {"HMGET", key, "f"},
                 {"HDEL", key, "f"},
                 {"HGETALL", key},
                 {"HEXISTS", key, "f"},
                 {"HLEN", key},
             })
            EXPECT_EQ(redis.command(c).str, kWrongType) << c[0] << " " << key;
    }
    EXPECT_EQ(redis.get("s"), "1");
    // The commands on any type still work, and SET replaces a hash.
    EXPECT_EQ(redis.command({"EXISTS", "h"}), Reply::of_integer(1));
    EXPECT_EQ(redis.command({"SET", "h", "x"}), Reply::status("OK"));
    EXPECT_EQ(redis.get("h"), "x");
    EXPECT_EQ(redis.command({"DEL", "s"}), Reply::of_integer(1));
    EXPECT_EQ(redis.command({"HSET", "s", "f", "v"}), Reply::of_integer(1));  // a free key takes a hash
}

TEST(FakeRedisHash, HsetIsRefusedOnOomButHdelAndPexpireAreNot) {
    FakeRedis redis;
    LuaRunner lua(redis);
    redis.hset("h", "a", "1");
    redis.hset("h", "b", "2");
    redis.oom = true;
    const std::string oom = FakeRedis::kOomError;
    EXPECT_EQ(redis.command({"HSET", "h", "c", "3"}).str, oom);
    EXPECT_EQ(redis.command({"HSET", "new", "c", "3"}).str, oom);
    EXPECT_FALSE(redis.exists("new"));
    EXPECT_EQ(redis.command({"HMGET", "h", "a"}), Reply::array({Reply::bulk("1")}));
    EXPECT_EQ(redis.command({"HDEL", "h", "a"}), Reply::of_integer(1));
    EXPECT_EQ(redis.command({"PEXPIRE", "h", "100000"}), Reply::of_integer(1));
    // In a script: refused as the first write, allowed after HDEL / PEXPIRE.
    Reply r = lua.run("return redis.pcall('HSET', 'h', 'c', '3')", {}, {});
    EXPECT_EQ(r.str, oom);
    r = lua.run("redis.call('HLEN', 'h')\nredis.call('HSET', 'h', 'c', '3')\nreturn 1", {}, {}, "f_x");
    EXPECT_EQ(r.str, oom + " script: f_x, on @user_script:2.");
    EXPECT_EQ(redis.hash("h"), (Fields{{"b", "2"}}));
    r = lua.run("redis.call('HDEL', 'h', 'none')\nreturn redis.call('HSET', 'h', 'c', '3')", {}, {});
    EXPECT_EQ(r, Reply::of_integer(1));
    r = lua.run("redis.call('PEXPIRE', 'h', 50000)\nreturn redis.call('HSET', 'h', 'd', '4')", {}, {});
    EXPECT_EQ(r, Reply::of_integer(1));
    EXPECT_EQ(redis.hash("h"), (Fields{{"b", "2"}, {"c", "3"}, {"d", "4"}}));
}

TEST(FakeRedisHash, FromLua) {
    FakeRedis redis;
    LuaRunner lua(redis);
    redis.set_now_ms(1795000000000);
    const Reply r = lua.run(R"lua(
local added = redis.call('HSET', KEYS[1], 'n', 5, 'big', 1795000000000 + 900000)
local got = redis.call('HMGET', KEYS[1], 'n', 'missing', 'big')
local all = redis.call('HGETALL', KEYS[1])
local t = redis.call('TYPE', KEYS[1])
local none = redis.call('TYPE', 'nothing')
local px = redis.call('PEXPIRE', KEYS[1], 2000)
local wrong = redis.pcall('GET', KEYS[1])
return {added, got[1], type(got[2]), tostring(got[2]), got[3], #all, all[1], all[2], t['ok'], none['ok'],
        px, redis.call('PTTL', KEYS[1]), redis.call('HEXISTS', KEYS[1], 'n'), redis.call('HLEN', KEYS[1]),
        wrong['err'], redis.call('HDEL', KEYS[1], 'n', 'big'), redis.call('EXISTS', KEYS[1])}
)lua",
                            {"h"}, {});
    ASSERT_EQ(r.type, Reply::Type::array) << r;
    ASSERT_EQ(r.elements.size(), 17u) << r;
    EXPECT_EQ(r.elements[0], Reply::of_integer(2));
    EXPECT_EQ(r.elements[1], Reply::bulk("5"));  // numbers are sent as %.17g
    EXPECT_EQ(r.elements[2], Reply::bulk("boolean"));  // a nil bulk in an array is false
    EXPECT_EQ(r.elements[3], Reply::bulk("false"));
    EXPECT_EQ(r.elements[4], Reply::bulk("1795000900000"));
    EXPECT_EQ(r.elements[5], Reply::of_integer(4));
    EXPECT_EQ(r.elements[6], Reply::bulk("big"));
    EXPECT_EQ(r.elements[7], Reply::bulk("1795000900000"));
    EXPECT_EQ(r.elements[8], Reply::bulk("hash"));  // status -> {ok = 'hash'}
    EXPECT_EQ(r.elements[9], Reply::bulk("none"));
    EXPECT_EQ(r.elements[10], Reply::of_integer(1));
    EXPECT_EQ(r.elements[11], Reply::of_integer(2000));
    EXPECT_EQ(r.elements[12], Reply::of_integer(1));
    EXPECT_EQ(r.elements[13], Reply::of_integer(2));
    EXPECT_EQ(r.elements[14], Reply::bulk(kWrongType));
    EXPECT_EQ(r.elements[15], Reply::of_integer(2));
    EXPECT_EQ(r.elements[16], Reply::of_integer(0));
    // A status reply returned as it is stays a status.
    EXPECT_EQ(lua.run("return redis.call('TYPE', 'nothing')", {}, {}), Reply::status("none"));
}

}  // namespace
}  // namespace spendcap_test
