// The real reserve, settle and sweep Lua scripts (scripts::reserve().text,
// scripts::settle().text, scripts::sweep().text), run in an embedded Lua 5.1 against an
// in-memory Redis (fake_redis_lua.h), with exactly the EVALSHA argv
// reserve_command / settle_command / sweep_command produce. This is where the
// threshold crossing rule, spend_cap_reached, low_balance, the check order,
// ceilings, dry runs, settlement, reservation deadlines, refused requests and
// all-or-nothing writes (overflow, OOM) are pinned down, one request at a
// time: reserve_command is a batch of one whose batch id is the request id
// (its record the hash sc:{ORG}:resv:RID with the one field RID, its deadline
// the member RID of sc:{ORG}:deadlines, its reply part element 0 of the
// reply). Batches of several requests: reserve_batch_test.cpp and
// settle_batch_test.cpp.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include <algorithm>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "base/digest.h"
#include "admin/daily.h"
#include "admin/ops.h"
#include "http/envelope.h"
#include "fake_redis_lua.h"
#include "policy/policy.h"
#include "identity/records.h"
#include "redis/errors.h"
#include "request/request.h"
#include "accounting/reservation.h"
#include "script_test_support.h"

namespace spendcap {
namespace {

using namespace spendcap::test;

class LuaScripts : public ScriptTest {};

std::string label_of(const Ledger &l, const ReserveOutcome &o) {
    if (!o.refused_by) return "(none)";
    return blocked_by_label(cap_ref(l, *o.refused_by));
}

// ---------------------------------------------------------------------------
// The harness itself behaves like Redis's scripting where the scripts rely on it.

TEST(FakeRedisLua, ConvertsRepliesAsRedisDoes) {
    FakeRedis redis;
    LuaRunner lua(redis);
    const Reply r = lua.run(R"lua(
local missing = redis.call('GET', 'nope')
local set = redis.call('SET', 'a', 'x', 'NX')
local again = redis.call('SET', 'a', 'y', 'NX')
local n = redis.call('INCRBY', 'n', '41')
return {type(missing), tostring(missing), set['ok'], tostring(again), n + 1, redis.call('EXISTS', 'a', 'n', 'zz'), 'str'}
)lua",
                            {}, {});
    ASSERT_EQ(r.type, Reply::Type::array) << r;
    ASSERT_EQ(r.elements.size(), 7u);
    EXPECT_EQ(r.elements[0].str, "boolean");  // nil bulk -> false
    EXPECT_EQ(r.elements[1].str, "false");
    EXPECT_EQ(r.elements[2].str, "OK");       // status -> {ok = 'OK'}
    EXPECT_EQ(r.elements[3].str, "false");    // SET NX on an existing key
    EXPECT_EQ(r.elements[4].integer, 42);     // integer -> number
    EXPECT_EQ(r.elements[5].integer, 2);
    EXPECT_EQ(r.elements[6].type, Reply::Type::string);
    EXPECT_EQ(redis.get("a"), "x");
}

TEST(FakeRedisLua, ErrorsAbortTheScriptWithoutRollingBack) {
    FakeRedis redis;
    LuaRunner lua(redis);
    Reply r = lua.run("redis.call('SET', 'b', '1')\nredis.call('INCRBY', 'b', '1.5')\nreturn 1", {}, {});
    ASSERT_TRUE(r.is_error());
    EXPECT_NE(r.str.find("not an integer"), std::string::npos) << r.str;
    EXPECT_EQ(redis.get("b"), "1");  // Redis keeps what ran before the error
    r = lua.run("error('spend-cap: boom')", {}, {});
    ASSERT_TRUE(r.is_error());
    EXPECT_NE(r.str.find("spend-cap: boom"), std::string::npos) << r.str;
    r = lua.run("x = 1", {}, {});
    ASSERT_TRUE(r.is_error());
    EXPECT_NE(r.str.find("create global"), std::string::npos) << r.str;
    r = lua.run("return undefined_thing", {}, {});
    EXPECT_TRUE(r.is_error());
    r = lua.run("redis.call('SET', 'k', {})", {}, {});
    EXPECT_TRUE(r.is_error());
    redis.set("big", "9223372036854775807");
    r = lua.run("return redis.call('INCRBY', 'big', '1')", {}, {});
    EXPECT_TRUE(r.is_error());
}

TEST(FakeRedisLua, NumbersAreSentAsRedisFormatsThem) {
    FakeRedis redis;
    LuaRunner lua(redis);
    redis.now = 1000;
    const Reply r = lua.run("redis.call('SET', 'k', 'v', 'EX', 86400, 'NX') return 1", {}, {});
    ASSERT_FALSE(r.is_error()) << r;
    EXPECT_EQ(redis.log.back(), (std::vector<std::string>{"SET", "k", "v", "EX", "86400", "NX"}));
    EXPECT_EQ(redis.expire_at("k"), 1000 + 86400);
    EXPECT_EQ(redis.pexpire_at("k"), (1000 + 86400) * 1000LL);
    redis.now = 1000 + 86400;  // a key lives through its last millisecond
    EXPECT_TRUE(redis.exists("k"));
    redis.micros = 1000;
    EXPECT_FALSE(redis.exists("k"));
}

std::string at_or(FakeRedis &redis, const std::string &key) { return redis.get(key).value_or("(nil)"); }

TEST(FakeRedisLua, EvalshaSplitsKeysAndArgsAndKnowsScriptsBySha) {
    FakeRedis redis;
    LuaRunner lua(redis);
    lua.add_script("sha", "return {KEYS[1], KEYS[2], ARGV[1], tostring(KEYS[3]), #ARGV}");
    const Reply r = lua.evalsha({"EVALSHA", "sha", "2", "{t}k1", "{t}k2", "a1"});
    ASSERT_EQ(r.type, Reply::Type::array) << r;
    EXPECT_EQ(r.elements[0].str, "{t}k1");
    EXPECT_EQ(r.elements[1].str, "{t}k2");
    EXPECT_EQ(r.elements[2].str, "a1");
    EXPECT_EQ(r.elements[3].str, "nil");
    EXPECT_EQ(r.elements[4].integer, 1);
    EXPECT_EQ(lua.evalsha({"EVALSHA", "other", "0"}).str.substr(0, 8), "NOSCRIPT");
}

// As a Redis Cluster node would: the keys of one call in one slot, and a
// script touching only the keys it declared (so that a script building a key
// name fails here rather than in a cluster).
TEST(FakeRedisLua, KeysAreDeclaredAndInOneSlot) {
    FakeRedis redis;
    LuaRunner lua(redis);
    lua.add_script("sha", "redis.call('SET', KEYS[1], '1') return redis.call('GET', ARGV[1])");
    EXPECT_EQ(lua.evalsha({"EVALSHA", "sha", "2", "k1", "k2", "k1"}).str,
              "CROSSSLOT Keys in request don't hash to the same slot");
    EXPECT_FALSE(redis.exists("k1"));
    EXPECT_EQ(lua.evalsha({"EVALSHA", "sha", "2", "{o}:a", "{o}:b", "{o}:b"}), Reply::nil());
    EXPECT_EQ(at_or(redis, "{o}:a"), "1");
    const Reply r = lua.evalsha({"EVALSHA", "sha", "1", "{o}:a", "{o}:c"});
    ASSERT_TRUE(r.is_error()) << r;
    EXPECT_NE(r.str.find("'{o}:c', which is not among its KEYS"), std::string::npos) << r.str;
    // The slots Redis Cluster computes (CLUSTER KEYSLOT).
    EXPECT_EQ(spendcap_test::key_slot("foo"), 12182u);
    EXPECT_EQ(spendcap_test::key_slot("{user1000}.following"), spendcap_test::key_slot("{user1000}.followers"));
    EXPECT_EQ(spendcap_test::key_slot("sc:{acme}:events"), spendcap_test::key_slot("acme"));
    EXPECT_EQ(spendcap_test::key_slot("a{}b"), spendcap_test::crc16("a{}b") % 16384);  // an empty tag is no tag
}

TEST(FakeRedisLua, PcallReturnsTheErrorAndCallRaisesItWithItsCode) {
    FakeRedis redis;
    LuaRunner lua(redis);
    redis.set("s", "abc");
    // pcall: the error comes back as a table, the script goes on.
    Reply r = lua.run(R"lua(
local e = redis.pcall('INCRBY', 's', '1')
local bad = redis.pcall('SET', 'x', {})
redis.call('SET', 'after', '1')
return {type(e), e['err'], bad['err']}
)lua",
                      {}, {});
    ASSERT_EQ(r.type, Reply::Type::array) << r;
    EXPECT_EQ(r.elements[0].str, "table");
    EXPECT_EQ(r.elements[1].str, "ERR value is not an integer or out of range");
    EXPECT_EQ(r.elements[2].str, "ERR Lua redis lib command arguments must be strings or integers");
    EXPECT_EQ(redis.get("after"), "1");
    // A returned error table is the reply, exactly.
    r = lua.run("return redis.pcall('INCRBY', 's', '1')", {}, {});
    ASSERT_TRUE(r.is_error());
    EXPECT_EQ(r.str, "ERR value is not an integer or out of range");
    r = lua.run("return redis.error_reply('MYCODE went wrong')", {}, {});
    EXPECT_EQ(r.str, "MYCODE went wrong");
    r = lua.run("return redis.error_reply('oops')", {}, {});
    EXPECT_EQ(r.str, "ERR oops");
    EXPECT_EQ(lua.run("return redis.status_reply('FINE')", {}, {}), Reply::status("FINE"));
    // call: Redis 7 keeps the code and says where.
    r = lua.run("redis.call('SET', 'y', '1')\nreturn redis.call('INCRBY', 's', '1')", {}, {}, "f_abc");
    ASSERT_TRUE(r.is_error());
    EXPECT_EQ(r.str, "ERR value is not an integer or out of range script: f_abc, on @user_script:2.");
    EXPECT_EQ(redis.get("y"), "1");  // not rolled back
    redis.command({"XADD", "st", "*", "f", "v"});
    r = lua.run("return redis.call('GET', 'st')", {}, {}, "f_abc");
    EXPECT_EQ(r.str, "WRONGTYPE Operation against a key holding the wrong kind of value script: f_abc, on "
                     "@user_script:1.");
    // A Lua error: ERR and the position.
    r = lua.run("\nerror('spend-cap: boom')", {}, {}, "f_abc");
    EXPECT_EQ(r.str, "ERR user_script:2: spend-cap: boom script: f_abc, on @user_script:2.");
    r = lua.run("return nope", {}, {}, "f_abc");
    EXPECT_EQ(r.str.rfind("ERR user_script:1: Script attempted to access nonexistent global variable 'nope'", 0),
              0u)
        << r.str;
    EXPECT_NE(r.str.find("on @user_script:1."), std::string::npos) << r.str;
}

TEST(FakeRedisLua, IncrbyRefusesAsRedisDoes) {
    FakeRedis redis;
    redis.set("big", "9223372036854775000");
    EXPECT_EQ(redis.command({"INCRBY", "big", "807"}).integer, 9223372036854775807LL);
    EXPECT_EQ(redis.command({"INCRBY", "big", "1"}).str, "ERR increment or decrement would overflow");
    redis.set("small", "-9223372036854775807");
    EXPECT_EQ(redis.command({"INCRBY", "small", "-1"}).integer, std::numeric_limits<long long>::min());
    EXPECT_EQ(redis.command({"INCRBY", "small", "-1"}).str, "ERR increment or decrement would overflow");
    EXPECT_EQ(redis.get("small"), "-9223372036854775808");
    for (const char *bad : {"abc", "", " 1", "1 ", "01", "+1", "1.0", "9223372036854775808"}) {
        redis.set("v", bad);
        EXPECT_EQ(redis.command({"INCRBY", "v", "1"}).str, "ERR value is not an integer or out of range") << bad;
        EXPECT_EQ(redis.get("v"), bad);
        EXPECT_EQ(redis.command({"INCRBY", "n", bad}).str, "ERR value is not an integer or out of range") << bad;
    }
    EXPECT_FALSE(redis.exists("n"));
    redis.command({"ZADD", "z", "1", "m"});
    EXPECT_EQ(redis.command({"INCRBY", "z", "1"}).str.substr(0, 9), "WRONGTYPE");
}

TEST(FakeRedisLua, TimeIsTheTestsClock) {
    FakeRedis redis;
    LuaRunner lua(redis);
    redis.now = 1795000000;
    redis.micros = 123456;
    EXPECT_EQ(redis.now_ms(), 1795000000123LL);
    const Reply r = lua.run("local t = redis.call('TIME') return {t[1], t[2], #t}", {}, {});
    ASSERT_EQ(r.type, Reply::Type::array) << r;
    EXPECT_EQ(r.elements[0].str, "1795000000");
    EXPECT_EQ(r.elements[1].str, "123456");
    EXPECT_EQ(r.elements[2].integer, 2);
    redis.set_now_ms(1795000001999LL);
    EXPECT_EQ(redis.now, 1795000001);
    EXPECT_EQ(redis.micros, 999000);
    // PX counts from the millisecond.
    redis.command({"SET", "p", "v", "PX", "1"});
    EXPECT_EQ(redis.pexpire_at("p"), 1795000002000LL);
    redis.set_now_ms(1795000002000LL);
    EXPECT_TRUE(redis.exists("p"));
    redis.set_now_ms(1795000002001LL);
    EXPECT_FALSE(redis.exists("p"));
    // An EXPIREAT that is not in the future deletes at once.
    redis.set("e", "1");
    EXPECT_EQ(redis.command({"EXPIREAT", "e", "1795000002"}).integer, 1);
    EXPECT_FALSE(redis.exists("e"));
}

TEST(FakeRedisLua, SortedSets) {
    FakeRedis redis;
    using Members = std::vector<std::pair<std::string, double>>;
    auto range = [&](std::vector<std::string> args) {
        args.insert(args.begin(), {"ZRANGEBYSCORE", "z"});
        const Reply r = redis.command(args);
        std::vector<std::string> out;
        if (r.is_error()) return std::vector<std::string>{"-" + r.str};
        for (const Reply &e : r.elements) out.push_back(e.str);
        return out;
    };
    using Strings = std::vector<std::string>;
    EXPECT_EQ(range({"-inf", "+inf"}), Strings{});  // a missing key is empty
    EXPECT_EQ(redis.command({"ZADD", "z", "3", "c", "1", "a", "2", "b"}).integer, 3);
    EXPECT_EQ(redis.command({"ZADD", "z", "1", "b2"}).integer, 1);
    EXPECT_EQ(redis.command({"ZADD", "z", "5", "a"}).integer, 0);  // an update is not an addition
    EXPECT_EQ(redis.command({"ZADD", "z", "CH", "1", "a"}).integer, 1);
    EXPECT_EQ(redis.zset("z"), (Members{{"a", 1}, {"b2", 1}, {"b", 2}, {"c", 3}}));  // ties by member
    EXPECT_EQ(range({"-inf", "+inf"}), (Strings{"a", "b2", "b", "c"}));
    EXPECT_EQ(range({"-inf", "inf"}), (Strings{"a", "b2", "b", "c"}));
    EXPECT_EQ(range({"1", "2"}), (Strings{"a", "b2", "b"}));
    EXPECT_EQ(range({"(1", "2"}), (Strings{"b"}));
    EXPECT_EQ(range({"1", "(2"}), (Strings{"a", "b2"}));
    EXPECT_EQ(range({"2.5", "1e9"}), (Strings{"c"}));
    EXPECT_EQ(range({"3", "1"}), Strings{});
    EXPECT_EQ(range({"-inf", "+inf", "LIMIT", "1", "2"}), (Strings{"b2", "b"}));
    EXPECT_EQ(range({"-inf", "+inf", "LIMIT", "0", "-1"}), (Strings{"a", "b2", "b", "c"}));
    EXPECT_EQ(range({"-inf", "+inf", "LIMIT", "0", "0"}), Strings{});
    EXPECT_EQ(range({"-inf", "+inf", "LIMIT", "-1", "5"}), Strings{});
    EXPECT_EQ(range({"-inf", "+inf", "LIMIT", "9", "5"}), Strings{});
    EXPECT_EQ(range({"-inf", "2", "WITHSCORES", "LIMIT", "2", "1"}), (Strings{"b", "2"}));
    EXPECT_EQ(range({"x", "2"}), (Strings{"-ERR min or max is not a float"}));
    EXPECT_EQ(range({"1", "nan"}), (Strings{"-ERR min or max is not a float"}));
    EXPECT_EQ(range({"1", "2", "LIMIT", "0", "x"}), (Strings{"-ERR value is not an integer or out of range"}));
    EXPECT_EQ(range({"1", "2", "LIMIT", "0"}), (Strings{"-ERR syntax error"}));
    // Scores as Redis parses them.
    for (const char *bad : {"x", "", " 1", "1 ", "nan", "1e999", "1,5"})
        EXPECT_EQ(redis.command({"ZADD", "z", bad, "m"}).str, "ERR value is not a valid float") << bad;
    EXPECT_EQ(redis.command({"ZADD", "z", "1", "m", "x", "n"}).str, "ERR value is not a valid float");
    EXPECT_FALSE(redis.command({"ZSCORE", "z", "m"}).is_error());
    EXPECT_EQ(redis.command({"ZSCORE", "z", "m"}).type, Reply::Type::nil);  // nothing of a refused ZADD
    EXPECT_EQ(redis.command({"ZADD", "z", "-inf", "lo", "+inf", "hi", "1795000900000", "t"}).integer, 3);
    EXPECT_EQ(redis.command({"ZSCORE", "z", "t"}).str, "1795000900000");
    EXPECT_EQ(redis.command({"ZSCORE", "z", "lo"}).str, "-inf");
    EXPECT_EQ(range({"-inf", "-inf"}), (Strings{"lo"}));
    EXPECT_EQ(redis.command({"ZADD", "z", "1"}).str, "ERR wrong number of arguments for 'zadd' command");
    EXPECT_EQ(redis.command({"ZADD", "z", "CH", "1"}).str, "ERR syntax error");
    EXPECT_EQ(redis.command({"ZADD", "z", "1", "a", "2"}).str, "ERR syntax error");
    EXPECT_EQ(redis.command({"ZADD", "z", "NX", "XX", "1", "a"}).str.substr(0, 7), "ERR XX ");
    EXPECT_EQ(redis.command({"ZADD", "z", "NX", "9", "a"}).integer, 0);
    EXPECT_EQ(redis.command({"ZADD", "z", "XX", "9", "new"}).integer, 0);
    EXPECT_EQ(redis.command({"ZADD", "z", "GT", "CH", "0", "a", "9", "b"}).integer, 1);
    EXPECT_EQ(redis.command({"ZSCORE", "z", "a"}).str, "1");
    EXPECT_EQ(redis.command({"ZSCORE", "z", "b"}).str, "9");
    EXPECT_EQ(redis.command({"ZADD", "xx-only", "XX", "1", "a"}).integer, 0);
    EXPECT_FALSE(redis.exists("xx-only"));
    // ZREM; an emptied set is gone.
    EXPECT_EQ(redis.command({"ZCARD", "z"}).integer, 7);
    EXPECT_EQ(redis.command({"ZREM", "z", "a", "zz", "b"}).integer, 2);
    EXPECT_EQ(redis.command({"ZREM", "missing", "a"}).integer, 0);
    EXPECT_FALSE(redis.exists("missing"));
    EXPECT_EQ(redis.command({"ZREM", "z", "b2", "c", "lo", "hi", "t"}).integer, 5);
    EXPECT_FALSE(redis.exists("z"));
    // WRONGTYPE both ways.
    redis.set("s", "1");
    EXPECT_EQ(redis.command({"ZADD", "s", "1", "m"}).str.substr(0, 9), "WRONGTYPE");
    EXPECT_EQ(redis.command({"ZREM", "s", "m"}).str.substr(0, 9), "WRONGTYPE");
    EXPECT_EQ(redis.command({"ZRANGEBYSCORE", "s", "-inf", "+inf"}).str.substr(0, 9), "WRONGTYPE");
    redis.command({"ZADD", "z2", "1", "m"});
    EXPECT_EQ(redis.command({"GET", "z2"}).str.substr(0, 9), "WRONGTYPE");
    EXPECT_EQ(redis.command({"XADD", "z2", "*", "f", "v"}).str.substr(0, 9), "WRONGTYPE");
    EXPECT_EQ(redis.command({"EXISTS", "z2"}).integer, 1);
    EXPECT_EQ(redis.command({"SET", "z2", "x"}).str, "OK");  // SET replaces any type
    EXPECT_EQ(redis.get("z2"), "x");
}

TEST(FakeRedisLua, SortedSetsFromLua) {
    FakeRedis redis;
    LuaRunner lua(redis);
    // Numbers go as %.17g: a millisecond timestamp stays exact.
    const Reply r = lua.run(R"lua(
redis.call('ZADD', 'z', 1795000000000 + 900000, 'r1')
redis.call('ZADD', 'z', 1795000000000 + 100, 'r2')
return redis.call('ZRANGEBYSCORE', 'z', '-inf', 1795000000000 + 900000, 'LIMIT', 0, 1)
)lua",
                            {}, {});
    ASSERT_EQ(r.type, Reply::Type::array) << r;
    ASSERT_EQ(r.elements.size(), 1u);
    EXPECT_EQ(r.elements[0].str, "r2");
    EXPECT_EQ(redis.log[0], (std::vector<std::string>{"ZADD", "z", "1795000900000", "r1"}));
    EXPECT_EQ(redis.log[2],
              (std::vector<std::string>{"ZRANGEBYSCORE", "z", "-inf", "1795000900000", "LIMIT", "0", "1"}));
}

TEST(FakeRedisLua, OomRefusesTheFirstWriteOfAScriptOnly) {
    FakeRedis redis;
    LuaRunner lua(redis);
    redis.set("a", "1");
    redis.oom = true;
    const std::string oom = "OOM command not allowed when used memory > 'maxmemory'.";
    // Outside a script: every command that may grow memory, reads and
    // shrinking writes go through.
    EXPECT_EQ(redis.command({"SET", "b", "1"}).str, oom);
    EXPECT_EQ(redis.command({"INCRBY", "a", "1"}).str, oom);
    EXPECT_EQ(redis.command({"ZADD", "z", "1", "m"}).str, oom);
    EXPECT_EQ(redis.command({"XADD", "s", "*", "f", "v"}).str, oom);
    EXPECT_EQ(redis.command({"GET", "a"}).str, "1");
    EXPECT_EQ(redis.command({"EXPIREAT", "a", "99999999999"}).integer, 1);
    // A script's first write: refused (pcall sees it, call raises it with its code).
    Reply r = lua.run("local e = redis.pcall('INCRBY', 'a', '1') return e", {}, {});
    EXPECT_EQ(r.str, oom);
    r = lua.run("redis.call('GET', 'a')\nredis.call('SET', 'b', '1')\nreturn 1", {}, {}, "f_x");
    EXPECT_EQ(r.str, oom + " script: f_x, on @user_script:2.");
    EXPECT_FALSE(redis.exists("b"));
    EXPECT_EQ(redis.get("a"), "1");
    // After a write (DEL, ZREM and EXPIREAT are writes Redis never refuses
    // for memory), the script may go on writing.
    r = lua.run("redis.call('DEL', 'nothing')\nredis.call('SET', 'b', '1')\nreturn redis.call('INCRBY', 'a', '1')",
                {}, {});
    EXPECT_EQ(r.integer, 2) << r;
    EXPECT_EQ(redis.get("b"), "1");
    // A refused first write does not count as one: the next is refused too.
    r = lua.run("redis.pcall('SET', 'c', '1')\nreturn redis.pcall('SET', 'c', '2')", {}, {});
    EXPECT_EQ(r.str, oom);
    EXPECT_FALSE(redis.exists("c"));
    // Each script starts clean.
    EXPECT_EQ(lua.run("return redis.pcall('SET', 'c', '1')", {}, {}).str, oom);
    redis.oom = false;
    EXPECT_EQ(lua.run("return redis.call('SET', 'c', '1')", {}, {}), Reply::status("OK"));
}

// ---------------------------------------------------------------------------
// The scripts' integer-string comparison: their numbers library, as it is.

// A helper library of the scripts, read from its file (scripts/lib/NAME.lua).
std::string lua_library(const std::string &name) {
    std::ifstream in(std::string(SPEND_CAP_SCRIPTS_DIR) + "/lib/" + name + ".lua");
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
}

TEST(LuaLe, ComparesIntegerStringsExactlyAtAnySize) {
    const std::string source = lua_library("prelude") + lua_library("numbers");
    ASSERT_NE(source.find("local function le(a, b)"), std::string::npos) << "the scripts' `le` helper was not found";
    // The scripts that compare amounts carry it.
    EXPECT_NE(scripts::reserve().text.find(lua_library("numbers")), std::string::npos);
    EXPECT_NE(scripts::settle().text.find(lua_library("numbers")), std::string::npos);
    FakeRedis redis;
    LuaRunner lua(redis);
    const std::vector<long long> values = {
        0, 1, 9, 10, 99, 100, 123, -1, -9, -10, -123,
        9007199254740992LL, 9007199254740993LL, -9007199254740993LL,  // 2^53 and 2^53 + 1
        8999999999999999999LL, 9000000000000000000LL, 9000000000000000001LL,
        -8999999999999999999LL, -9000000000000000000LL,
        std::numeric_limits<long long>::max(), std::numeric_limits<long long>::max() - 1,
        std::numeric_limits<long long>::min(), std::numeric_limits<long long>::min() + 1,
    };
    const std::string script = source + "\nreturn le(ARGV[1], ARGV[2]) and 1 or 0\n";
    for (long long a : values) {
        for (long long b : values) {
            const Reply r = lua.run(script, {}, {std::to_string(a), std::to_string(b)});
            ASSERT_EQ(r.type, Reply::Type::integer) << r;
            EXPECT_EQ(r.integer, a <= b ? 1 : 0) << a << " <= " << b;
        }
    }
}

// ---------------------------------------------------------------------------
// Reservation: writes, expiries, the reply.

TEST_F(LuaScripts, AnAllowedReservationWritesEveryCheckedCounterOnceAndNoOther) {
    use(policy_yaml("{ daily_usd: 2, monthly_usd: 10, daily_requests: 5, rpm: 7 }"));
    const Ledger l = ledger();
    const std::string rpm = P + "rate:key:k1:rpm:2026-11-18T11:06";
    const std::vector<std::string> capped = {kKeyDaily, kKeyMonthly, P + "reqs:key:k1:d:2026-11-18", rpm};
    std::size_t n_checked = 0;
    for (const Counter &c : l.counters) n_checked += checked(l, c) ? 1 : 0;
    ASSERT_EQ(n_checked, capped.size());
    const std::vector<long long> reply = reserve_ints(l, 300, 40);
    // One "after" per counter sent, and only the checked ones are sent.
    ASSERT_EQ(sent_counters(l).size(), capped.size());
    ASSERT_EQ(reply.size(), capped.size() + 4);
    EXPECT_EQ(std::vector<long long>(reply.begin(), reply.begin() + 4), (std::vector<long long>{1, 0, 0, 0}));
    for (std::size_t i = 0; i < l.counters.size(); ++i) {
        const Counter &c = l.counters[i];
        const bool is_capped = std::find(capped.begin(), capped.end(), c.key) != capped.end();
        EXPECT_EQ(checked(l, c), is_capped) << c.key;
        if (is_capped) {
            // Checked: the estimate, written once, with its expiry.
            const long long expected = c.kind == CounterKind::spend ? 300 : 1;
            EXPECT_EQ(after_of(l, reply, i), expected) << c.key;
            EXPECT_EQ(at(c.key), std::to_string(expected)) << c.key;
            EXPECT_EQ(redis.expire_at(c.key), c.expire_at) << c.key;
            EXPECT_EQ(incrbys(c.key), 1u) << c.key;
        } else {
            // Not checked: not sent, so not in the reply, and not written at all.
            EXPECT_EQ(sent_position(l, i), 0) << c.key;
            EXPECT_FALSE(redis.exists(c.key)) << c.key;
            EXPECT_EQ(incrbys(c.key), 0u) << c.key;
        }
    }
    EXPECT_EQ(redis.expire_at(rpm), kMinuteExpire);
    EXPECT_FALSE(redis.exists(kKeyLife));
    // The reservation record: the hash of its batch (a batch of one: the
    // request's own id), the request's field saying how to give every
    // checked counter back, kept a day past its deadline, which is in the
    // org's sorted set of deadlines.
    EXPECT_TRUE(has(batch_record("req-1")));
    EXPECT_EQ(record("req-1"), (std::map<std::string, std::string>{
                                   {"req-1", "-300 spend:key:k1:d:2026-11-18\n-300 spend:key:k1:m:2026-11\n"
                                             "-1 reqs:key:k1:d:2026-11-18\n-1 rate:key:k1:rpm:2026-11-18T11:06\n"}}));
    EXPECT_EQ(record("req-1", "req-1"), record_of(l, 300, 40));
    EXPECT_EQ(deadline_of("req-1"), static_cast<double>(kNow * 1000 + kDefaultReservationTtlMs));
    EXPECT_EQ(deadlines(), (std::vector<std::pair<std::string, double>>{
                               {"req-1", static_cast<double>(kNow * 1000 + kDefaultReservationTtlMs)}}));
    EXPECT_TRUE(events().empty());

    const ReserveOutcome o = decode_reserve_reply(l, reply);
    ASSERT_EQ(o.kind, ReserveOutcome::Kind::allowed) << o.error;
    EXPECT_FALSE(o.refused_by.has_value());
    EXPECT_EQ(o.tightest_index, std::optional<std::size_t>(0));  // daily: 2 USD - 300 nanos left
    EXPECT_EQ(o.tightest_remaining, 2 * kUsd - 300);

    // A second request adds to the checked ones, and still not to the others.
    const std::size_t mark = redis.log.size();
    const std::vector<long long> second = reserve_ints(l, 5, 1, "req-2");
    ASSERT_EQ(second.size(), capped.size() + 4);
    ASSERT_EQ(l.counters[1].key, kKeyMonthly);
    EXPECT_EQ(after_of(l, second, 1), 305);
    ASSERT_EQ(l.counters[3].key, P + "reqs:key:k1:d:2026-11-18");
    EXPECT_EQ(after_of(l, second, 3), 2);  // the key's daily requests
    for (const Counter &c : l.counters) EXPECT_EQ(incrbys(c.key, mark), checked(l, c) ? 1u : 0u) << c.key;
    EXPECT_FALSE(redis.exists(kKeyLife));
    EXPECT_FALSE(redis.exists(kOrgMonthly));
}

TEST_F(LuaScripts, AnExpiryIsSetOnlyOnANewCounter) {
    use(policy_yaml("{ daily_usd: 100, monthly_usd: 10 }"));
    const Ledger l = ledger();
    const std::string reqs = P + "reqs:key:k1:m:2026-11";         // uncapped: written at settlement
    const std::string tokens = P + "tokens:key:k1:d:2026-11-18";  // uncapped, and already there
    redis.set(kKeyMonthly, "7");
    redis.command({"EXPIREAT", kKeyMonthly, "1900000000"});
    redis.set(tokens, "5");
    redis.command({"EXPIREAT", tokens, "1900000000"});
    reserve_ints(l, 3, 2);
    EXPECT_EQ(at(kKeyMonthly), "10");
    EXPECT_EQ(redis.expire_at(kKeyMonthly), 1900000000);  // left alone
    EXPECT_EQ(at(kKeyDaily), "3");
    EXPECT_EQ(redis.expire_at(kKeyDaily), kDayExpire);    // new: set
    EXPECT_FALSE(redis.exists(reqs));                     // not checked: not created
    EXPECT_EQ(at(tokens), "5");
    // The settlement creates the unchecked ones with their expiry, and leaves
    // an existing one's alone.
    EXPECT_EQ(settle(l, {3, 2}, {2, 1}, "req-1").integer, 1);
    EXPECT_EQ(at(reqs), "1");
    EXPECT_EQ(redis.expire_at(reqs), kMonthExpire);
    EXPECT_EQ(at(tokens), "6");
    EXPECT_EQ(redis.expire_at(tokens), 1900000000);
    EXPECT_EQ(at(kKeyDaily), "2");
    EXPECT_EQ(redis.expire_at(kKeyDaily), kDayExpire);
    EXPECT_EQ(at(kKeyMonthly), "9");
    EXPECT_EQ(redis.expire_at(kKeyMonthly), 1900000000);
}

TEST_F(LuaScripts, ARefusalWritesNothingButTheReachedEvent) {
    use(policy_yaml("{ daily_usd: 100, monthly_usd: 10 }"));
    const Ledger l = ledger();
    redis.set(kKeyMonthly, "9500000000");
    const auto before = redis.data();
    const std::vector<long long> reply = reserve_ints(l, kUsd);
    EXPECT_EQ(reply, (std::vector<long long>{0, 2, 9'500'000'000, 0}));
    EXPECT_EQ(without(P + "markers:"), before);
    const ReserveOutcome o = decode_reserve_reply(l, reply);
    ASSERT_EQ(o.kind, ReserveOutcome::Kind::blocked) << o.error;
    EXPECT_EQ(o.refused_by, std::optional<std::size_t>(1));
    EXPECT_EQ(label_of(l, o), "key:monthly");
    // The cap takes exactly up to it.
    EXPECT_EQ(reserve_ints(l, 500'000'000, 0, "req-2")[0], 1);
    EXPECT_EQ(at(kKeyMonthly), "10000000000");
}

TEST_F(LuaScripts, ACounterThatIsNotAnIntegerIsAnError) {
    use(policy_yaml("{ monthly_usd: 10 }"));
    const Ledger l = ledger();
    for (const char *bad : {"abc", "1.5", "", " 1"}) {
        redis.set(kKeyMonthly, bad);
        const Reply r = reserve(l, 1);
        ASSERT_TRUE(r.is_error()) << bad;
        EXPECT_NE(r.str.find("does not hold an integer"), std::string::npos) << r.str;
    }
    EXPECT_FALSE(redis.exists(kKeyDaily));
}

// ---------------------------------------------------------------------------
// Warning events: a cost counter crossing ceil(cap * fraction).

TEST_F(LuaScripts, AWarningFiresWhenAReservationCrossesTheThreshold) {
    use(policy_yaml("{ monthly_usd: 10 }"));
    const Ledger l = ledger();
    reserve_ints(l, 3 * kUsd, 0, "req-1");
    EXPECT_TRUE(events().empty());
    reserve_ints(l, 2 * kUsd, 0, "req-2");
    EXPECT_EQ(events(), (std::vector<Event>{
                            warning("key", "k1", "monthly", "2026-11", "0.5", "5000000000", "10000000000")}));
    const Marker marker = warned_marker("key:k1:m:2026-11:10000000000:0.5");
    EXPECT_TRUE(has(marker));
    EXPECT_EQ(expire_at(marker), kMonthExpire);  // expires with its counter
    EXPECT_EQ(redis.trims[kEvents], "MAXLEN ~ 10000");
}

TEST_F(LuaScripts, NoWarningWhileTheCounterStaysBelow) {
    use(policy_yaml("{ monthly_usd: 10 }"));
    const Ledger l = ledger();
    reserve_ints(l, 4'999'999'999, 0, "req-1");
    EXPECT_TRUE(events().empty());
    EXPECT_EQ(at(kKeyMonthly), "4999999999");
    reserve_ints(l, 1, 0, "req-2");  // exactly at the threshold counts
    EXPECT_EQ(events().size(), 1u);
}

TEST_F(LuaScripts, NoWarningWhenTheCounterStartsAtOrAboveTheThreshold) {
    use(policy_yaml("{ monthly_usd: 10 }"));
    const Ledger l = ledger();
    redis.set(kKeyMonthly, "5000000000");
    reserve_ints(l, kUsd, 0, "req-1");
    redis.set(kKeyMonthly, "7000000000");
    reserve_ints(l, kUsd, 0, "req-2");
    EXPECT_TRUE(events().empty());
    EXPECT_FALSE(has(warned_marker("key:k1:m:2026-11:10000000000:0.5")));
}

TEST_F(LuaScripts, AWarningFiresOnceEvenWhenTheCounterFallsBackAndCrossesAgain) {
    use(policy_yaml("{ monthly_usd: 10 }"));
    const Ledger l = ledger();
    reserve_ints(l, 6 * kUsd, 0, "req-1");
    ASSERT_EQ(events().size(), 1u);
    EXPECT_EQ(settle(l, {6 * kUsd, 0}, {0, 0}, "req-1").integer, 1);  // released
    EXPECT_EQ(at(kKeyMonthly), "0");
    reserve_ints(l, 6 * kUsd, 0, "req-2");
    EXPECT_EQ(at(kKeyMonthly), "6000000000");
    EXPECT_EQ(events().size(), 1u);
}

TEST_F(LuaScripts, EachFractionFiresOnItsOwn) {
    use(policy_yaml("{ monthly_usd: 10 }", "warn_at: [0.8, 0.5]\n"));
    const Ledger l = ledger();
    reserve_ints(l, 5 * kUsd, 0, "req-1");
    reserve_ints(l, 3 * kUsd, 0, "req-2");
    EXPECT_EQ(events(), (std::vector<Event>{
                            warning("key", "k1", "monthly", "2026-11", "0.5", "5000000000", "10000000000"),
                            warning("key", "k1", "monthly", "2026-11", "0.8", "8000000000", "10000000000")}));
}

TEST_F(LuaScripts, OneBigReservationFiresEveryFractionItCrossesOnce) {
    use(policy_yaml("{ monthly_usd: 10 }", "warn_at: [0.5, 0.8, 0.95]\n"));
    const Ledger l = ledger();
    redis.set(kKeyMonthly, "1000000000");
    reserve_ints(l, 8'600'000'000, 0, "req-1");
    const std::vector<Event> expected = {
        warning("key", "k1", "monthly", "2026-11", "0.5", "9600000000", "10000000000"),
        warning("key", "k1", "monthly", "2026-11", "0.8", "9600000000", "10000000000"),
        warning("key", "k1", "monthly", "2026-11", "0.95", "9600000000", "10000000000"),
    };
    EXPECT_EQ(events(), expected);
    reserve_ints(l, 100'000'000, 0, "req-2");
    EXPECT_EQ(events(), expected);
}

TEST_F(LuaScripts, EachPeriodWarnsOnItsOwn) {
    use(policy_yaml("{ daily_usd: 10 }"));
    reserve_ints(ledger(), 6 * kUsd, 0, "req-1");
    EXPECT_EQ(expire_at(warned_marker("key:k1:d:2026-11-18:10000000000:0.5")), kDayExpire);
    redis.now = kNow + 86400;
    reserve_ints(ledger("", kNow + 86400), 6 * kUsd, 0, "req-2");
    EXPECT_EQ(events(), (std::vector<Event>{
                            warning("key", "k1", "daily", "2026-11-18", "0.5", "6000000000", "10000000000"),
                            warning("key", "k1", "daily", "2026-11-19", "0.5", "6000000000", "10000000000")}));
    EXPECT_EQ(expire_at(warned_marker("key:k1:d:2026-11-19:10000000000:0.5")), kNextDayExpire);
}

TEST_F(LuaScripts, EachCapAmountWarnsOnItsOwn) {
    use(policy_yaml("{ monthly_usd: 10 }"));
    reserve_ints(ledger(), 6 * kUsd, 0, "req-1");
    use(policy_yaml("{ monthly_usd: 20 }"));  // the cap was raised
    reserve_ints(ledger(), 5 * kUsd, 0, "req-2");
    reserve_ints(ledger(), kUsd, 0, "req-3");
    EXPECT_EQ(events(), (std::vector<Event>{
                            warning("key", "k1", "monthly", "2026-11", "0.5", "6000000000", "10000000000"),
                            warning("key", "k1", "monthly", "2026-11", "0.5", "11000000000", "20000000000")}));
}

TEST_F(LuaScripts, EveryCappedCounterWarnsInCheckOrder) {
    use(policy_yaml("{ daily_usd: 10, monthly_usd: 10, lifetime_usd: 10 }", "warn_at: [0.5]\n", "",
                    "{ monthly_usd: 10 }"));
    reserve_ints(ledger(), 6 * kUsd);
    EXPECT_EQ(events(), (std::vector<Event>{
                            warning("key", "k1", "daily", "2026-11-18", "0.5", "6000000000", "10000000000"),
                            warning("key", "k1", "monthly", "2026-11", "0.5", "6000000000", "10000000000"),
                            warning("key", "k1", "lifetime", "", "0.5", "6000000000", "10000000000"),
                            warning("project", "p", "monthly", "2026-11", "0.5", "6000000000", "10000000000")}));
    // A lifetime marker never expires.
    const Marker life_marker = warned_marker("key:k1:life:10000000000:0.5");
    EXPECT_TRUE(has(life_marker));
    EXPECT_EQ(expire_at(life_marker), 0);
}

TEST_F(LuaScripts, TheThresholdIsTheCeilingOfCapTimesFraction) {
    use(policy_yaml("{ monthly_usd: 0.000000003 }"));  // 3 nanos: threshold ceil(1.5) = 2
    const Ledger l = ledger();
    reserve_ints(l, 1, 0, "req-1");
    EXPECT_TRUE(events().empty());
    reserve_ints(l, 1, 0, "req-2");
    EXPECT_EQ(events(), (std::vector<Event>{warning("key", "k1", "monthly", "2026-11", "0.5", "2", "3")}));
}

TEST_F(LuaScripts, ASettlementThatRaisesTheCounterCanCross) {
    use(policy_yaml("{ monthly_usd: 10 }"));
    const Ledger l = ledger();
    reserve_ints(l, 4 * kUsd, 0, "req-1");
    EXPECT_TRUE(events().empty());
    EXPECT_EQ(settle(l, {4 * kUsd, 0}, {6 * kUsd, 0}, "req-1").integer, 1);
    EXPECT_EQ(at(kKeyMonthly), "6000000000");
    EXPECT_EQ(events(), (std::vector<Event>{
                            warning("key", "k1", "monthly", "2026-11", "0.5", "6000000000", "10000000000")}));
}

// SPEC section 2b: at 6 of 10 USD on 2026-11-18T11:06:40Z, 17 days 11:06:40
// into November, the pace reaches the cap on 2026-11-30T02:31:07Z, before
// the reset: one forecast event, and one only, however many settlements follow.
TEST_F(LuaScripts, AForecastBeforeTheResetIsToldOncePerCapAndPeriod) {
    use(policy_yaml("{ monthly_usd: 10 }"));
    const Ledger l = ledger();
    reserve_ints(l, 4 * kUsd, 0, "req-1");
    EXPECT_TRUE(forecasts().empty());
    EXPECT_EQ(settle(l, {4 * kUsd, 0}, {6 * kUsd, 0}, "req-1").integer, 1);
    const std::vector<Event> expected = {
        {"type", "spend_cap_forecast_exhaustion", "scope", "key", "id", "k1", "window", "monthly", "period",
         "2026-11", "spent", "6000000000", "cap", "10000000000", "forecast_exhausted_at", "2026-11-30T02:31:07Z",
         "reset_at", "2026-12-01T00:00:00Z"}};
    EXPECT_EQ(forecasts(), expected);
    reserve_ints(l, kUsd, 0, "req-2");
    EXPECT_EQ(settle(l, {kUsd, 0}, {kUsd, 0}, "req-2").integer, 1);
    EXPECT_EQ(forecasts(), expected);
}

// 1 of 10 USD seventeen days in: the pace reaches the cap in December, after the reset.
TEST_F(LuaScripts, NoForecastWhenThePaceReachesTheCapAfterTheReset) {
    use(policy_yaml("{ monthly_usd: 10 }"));
    const Ledger l = ledger();
    reserve_ints(l, kUsd, 0, "req-1");
    EXPECT_EQ(settle(l, {kUsd, 0}, {kUsd, 0}, "req-1").integer, 1);
    EXPECT_TRUE(forecasts().empty());
}

TEST_F(LuaScripts, AnUnreservedSettlementCanCross) {
    use(policy_yaml("{ monthly_usd: 10 }"));
    const Ledger l = ledger();
    redis.set(kKeyMonthly, "4000000000");
    // A fail-open request: its reserve never answered.
    EXPECT_EQ(settle(l, {9 * kUsd, 0}, {2 * kUsd, 0}, "req-x", std::nullopt, false).integer, 1);
    EXPECT_EQ(at(kKeyMonthly), "6000000000");
    EXPECT_EQ(events(), (std::vector<Event>{
                            warning("key", "k1", "monthly", "2026-11", "0.5", "6000000000", "10000000000")}));
}

TEST_F(LuaScripts, ThresholdsNearTheInt64LimitAreExact) {
    use(policy_yaml("{ monthly_usd: 9000000000 }"));  // 9e18 nanos: threshold 4.5e18
    const Ledger l = ledger();
    redis.set(kKeyMonthly, "4499999999999999000");
    reserve_ints(l, 999, 0, "req-1");  // 4499999999999999999: a double would say 4.5e18
    EXPECT_EQ(at(kKeyMonthly), "4499999999999999999");
    EXPECT_TRUE(events().empty());
    reserve_ints(l, 1, 0, "req-2");
    EXPECT_EQ(events(), (std::vector<Event>{warning("key", "k1", "monthly", "2026-11", "0.5",
                                                    "4500000000000000000", "9000000000000000000")}));
}

// A settlement's rise is judged on the exact values before and after it,
// past 2^53 too (where INCRBY's reply, a Lua number, is not exact).
TEST_F(LuaScripts, ASettlementCrossesAThresholdNearTheInt64LimitExactly) {
    use(policy_yaml("{ monthly_usd: 9000000000 }"));  // threshold 4.5e18
    const Ledger l = ledger();
    redis.set(kKeyMonthly, "4499999999999998000");
    ASSERT_EQ(reserve_ints(l, 1000, 0, "req-1")[0], 1);  // 4499999999999999000
    EXPECT_EQ(settle(l, {1000, 0}, {1999, 0}, "req-1", std::nullopt).integer, 1);  // +999
    EXPECT_EQ(at(kKeyMonthly), "4499999999999999999");  // a double would say 4.5e18
    EXPECT_TRUE(events().empty());
    ASSERT_EQ(reserve_ints(l, 0, 0, "req-2")[0], 1);
    EXPECT_EQ(settle(l, {0, 0}, {2, 0}, "req-2", std::nullopt).integer, 1);  // +2: crosses
    EXPECT_EQ(at(kKeyMonthly), "4500000000000000001");
    EXPECT_EQ(events(), (std::vector<Event>{warning("key", "k1", "monthly", "2026-11", "0.5",
                                                    "4500000000000000001", "9000000000000000000")}));
}

// `spent` is the counter's exact value: past 10^15 the script keeps it as an
// integer string, never as a rounded Lua number.
TEST_F(LuaScripts, TheWarningsSpentIsTheExactCounterValue) {
    use(policy_yaml("{ monthly_usd: 9000000000 }"));
    const Ledger l = ledger();
    redis.set(kKeyMonthly, "4499999999999999999");
    reserve_ints(l, 2);
    EXPECT_EQ(at(kKeyMonthly), "4500000000000000001");
    EXPECT_EQ(events(), (std::vector<Event>{warning("key", "k1", "monthly", "2026-11", "0.5",
                                                    "4500000000000000001", "9000000000000000000")}));
}

// ---------------------------------------------------------------------------
// spend_cap_reached

TEST_F(LuaScripts, TheFirstRefusalByACostCapSaysTheCapIsReached) {
    use(policy_yaml("{ monthly_usd: 10 }"));
    const Ledger l = ledger();
    redis.set(kKeyMonthly, "9500000000");
    EXPECT_EQ(reserve_ints(l, kUsd, 0, "req-1")[0], 0);
    EXPECT_EQ(reserve_ints(l, kUsd, 0, "req-2")[0], 0);
    EXPECT_EQ(events(), (std::vector<Event>{reached("key", "k1", "monthly", "2026-11", "9500000000", "10000000000")}));
    const Marker marker = reached_marker("key:k1:m:2026-11:10000000000");
    EXPECT_TRUE(has(marker));
    EXPECT_EQ(expire_at(marker), kMonthExpire);
    // A new period, a new event.
    redis.now = kNow + 30 * 86400;  // 2026-12-18
    const Ledger december = ledger("", kNow + 30 * 86400);
    redis.set(P + "spend:key:k1:m:2026-12", "9500000000");
    EXPECT_EQ(reserve_ints(december, kUsd, 0, "req-3")[0], 0);
    EXPECT_EQ(events().size(), 2u);
    EXPECT_EQ(events()[1], reached("key", "k1", "monthly", "2026-12", "9500000000", "10000000000"));
}

TEST_F(LuaScripts, ARequestLargerThanTheWholeCapDoesNotReachIt) {
    use(policy_yaml("{ monthly_usd: 10 }"));
    const Ledger l = ledger();
    redis.set(kKeyMonthly, "5000000000");
    const auto before = redis.data();
    ASSERT_EQ(l.counters[1].key, kKeyMonthly);
    const std::vector<long long> reply = reserve_ints(l, 11 * kUsd, 0, "req-1");
    EXPECT_EQ(reply, (std::vector<long long>{0, sent_position(l, 1), 5'000'000'000, 0}));
    EXPECT_EQ(label_of(l, decode_reserve_reply(l, reply)), "key:monthly");
    EXPECT_TRUE(events().empty());
    EXPECT_EQ(redis.data(), before);  // not even a marker
    // An ordinary refusal afterwards still reports it.
    EXPECT_EQ(reserve_ints(l, 6 * kUsd, 0, "req-2")[0], 0);
    EXPECT_EQ(events(), (std::vector<Event>{reached("key", "k1", "monthly", "2026-11", "5000000000", "10000000000")}));
}

TEST_F(LuaScripts, OtherCapsDoNotReportAReachedSpendCap) {
    use(policy_yaml("{ daily_requests: 0, monthly_usd: 10 }"));
    const Ledger l = ledger();
    const auto before = redis.data();
    const std::vector<long long> reply = reserve_ints(l, kUsd, 5);
    ASSERT_EQ(l.counters[3].key, P + "reqs:key:k1:d:2026-11-18");
    EXPECT_EQ(reply, (std::vector<long long>{0, sent_position(l, 3), 0, 0}));
    EXPECT_TRUE(events().empty());
    EXPECT_EQ(redis.data(), before);
    EXPECT_EQ(label_of(l, decode_reserve_reply(l, reply)), "key:daily_requests");
}

// ---------------------------------------------------------------------------
// Request, token and rate caps, the check order.

TEST_F(LuaScripts, RequestCapsCountRequests) {
    use(policy_yaml("{ daily_requests: 2 }"));
    const Ledger l = ledger();
    EXPECT_EQ(reserve_ints(l, 1, 1, "req-1")[0], 1);
    EXPECT_EQ(reserve_ints(l, 1, 1, "req-2")[0], 1);
    const std::vector<long long> third = reserve_ints(l, 1, 1, "req-3");
    ASSERT_EQ(l.counters[3].key, P + "reqs:key:k1:d:2026-11-18");
    EXPECT_EQ(third, (std::vector<long long>{0, sent_position(l, 3), 2, 0}));
    EXPECT_EQ(label_of(l, decode_reserve_reply(l, third)), "key:daily_requests");
    EXPECT_EQ(at(P + "reqs:key:k1:d:2026-11-18"), "2");
    EXPECT_FALSE(has(batch_record("req-3")));
    // An uncapped request counter is counted at settlement, not before.
    const std::string org_reqs = P + "reqs:org:acme:m:2026-11";
    EXPECT_FALSE(redis.exists(org_reqs));
    // Settling does not change a reserved request count, and adds the
    // request to the others once.
    EXPECT_EQ(settle(l, {1, 1}, {0, 0}, "req-1").integer, 1);
    EXPECT_EQ(at(P + "reqs:key:k1:d:2026-11-18"), "2");
    EXPECT_EQ(at(org_reqs), "1");
    EXPECT_EQ(settle(l, {1, 1}, {0, 0}, "req-2").integer, 1);
    EXPECT_EQ(at(P + "reqs:key:k1:d:2026-11-18"), "2");
    EXPECT_EQ(at(org_reqs), "2");
    EXPECT_EQ(settle(l, {1, 1}, {0, 0}, "req-2").integer, 0);
    EXPECT_EQ(at(org_reqs), "2");
}

TEST_F(LuaScripts, TokenCapsCountTokensAndSettleToTheRealCount) {
    use(policy_yaml("", "", "", "{ monthly_tokens: 1000 }"));
    const Ledger l = ledger();
    const std::string tokens = P + "tokens:project:p:m:2026-11";
    EXPECT_EQ(reserve_ints(l, 1, 600, "req-1")[0], 1);
    EXPECT_EQ(at(tokens), "600");
    const std::vector<long long> refused = reserve_ints(l, 1, 600, "req-2");
    ASSERT_EQ(l.counters[13].key, tokens);
    EXPECT_EQ(refused, (std::vector<long long>{0, sent_position(l, 13), 600, 0}));
    EXPECT_EQ(label_of(l, decode_reserve_reply(l, refused)), "project:monthly_tokens");
    EXPECT_EQ(settle(l, {1, 600}, {1, 250}, "req-1").integer, 1);
    EXPECT_EQ(at(tokens), "250");
    EXPECT_EQ(reserve_ints(l, 1, 750, "req-3")[0], 1);  // exactly up to the cap
}

TEST_F(LuaScripts, TheFirstFailureInCheckOrderWins) {
    use(policy_yaml("{ daily_usd: 10, rpm: 0 }", "customers:\n  default_limits: { monthly_usd: 0 }\n",
                    "    limits: { daily_requests: 0 }\n    prepaid: true\n", "{ monthly_tokens: 0 }"));
    Ledger l = ledger("c1");
    // key 0-6, project 7-13, org 14-20, customer 21-27, balance 28, key rpm 29, held 30
    ASSERT_EQ(l.counters.size(), 31u);
    const std::vector<std::pair<std::size_t, std::string>> order = {
        {13, "project:monthly_tokens"}, {17, "org:daily_requests"}, {22, "customer:monthly"},
        {28, "org:balance"}, {29, "key:rpm"}};
    for (const auto &[index, label] : order) {
        const std::vector<long long> reply = reserve_ints(l, kUsd, 10);
        ASSERT_GE(reply.size(), 4u);
        EXPECT_EQ(reply[0], 0) << label;
        EXPECT_EQ(reply[1], sent_position(l, index)) << label;  // its place among the counters sent
        EXPECT_EQ(decode_reserve_reply(l, reply).refused_by, std::optional<std::size_t>(index)) << label;
        EXPECT_EQ(label_of(l, decode_reserve_reply(l, reply)), label);
        if (index == 28) {
            redis.set(kBalance, "1000000000");  // fund it rather than uncap it
        } else {
            l.counters[index].cap.reset();
        }
    }
    EXPECT_EQ(reserve_ints(l, kUsd, 10)[0], 1);
    EXPECT_TRUE(events().empty());  // the customer cap was below the estimate: 'S'
}

TEST_F(LuaScripts, RequestsPerMinuteCountOverUtcMinutes) {
    use(policy_yaml("{ rpm: 2 }"));
    const Ledger l = ledger();
    const std::string rate = P + "rate:key:k1:rpm:2026-11-18T11:06";
    EXPECT_EQ(reserve_ints(l, 1, 1, "req-1")[0], 1);
    EXPECT_EQ(reserve_ints(l, 1, 1, "req-2")[0], 1);
    EXPECT_EQ(redis.expire_at(rate), kMinuteExpire);
    const std::vector<long long> refused = reserve_ints(l, 1, 1, "req-3");
    ASSERT_EQ(refused.size(), 4u);
    EXPECT_EQ(refused[0], 0);
    const ReserveOutcome o = decode_reserve_reply(l, refused);
    ASSERT_TRUE(o.refused_by.has_value());
    EXPECT_EQ(l.counters[*o.refused_by].key, rate);
    const CapRef cap = cap_ref(l, *o.refused_by);
    EXPECT_EQ(blocked_by_label(cap), "key:rpm");
    EXPECT_EQ(cap.reset_at, 1795000020);
    EXPECT_EQ(cap.retry_after, 20);
    // The next minute starts afresh.
    redis.now = kNow + 20;
    EXPECT_EQ(reserve_ints(ledger("", kNow + 20), 1, 1, "req-4")[0], 1);
    EXPECT_EQ(at(P + "rate:key:k1:rpm:2026-11-18T11:07"), "1");
    EXPECT_EQ(at(rate), "2");
}

TEST_F(LuaScripts, TokensPerMinuteOfACustomer) {
    use(policy_yaml("", "customers:\n  default_limits: { tpm: 500 }\n"));
    const Ledger l = ledger("cust_1");
    EXPECT_EQ(reserve_ints(l, 1, 300, "req-1")[0], 1);
    const std::vector<long long> refused = reserve_ints(l, 1, 300, "req-2");
    EXPECT_EQ(label_of(l, decode_reserve_reply(l, refused)), "customer:tpm");
    EXPECT_EQ(at(P + "rate:customer:cust_1:tpm:2026-11-18T11:06"), "300");
    // Another customer has a counter of its own.
    EXPECT_EQ(reserve_ints(ledger("cust_2"), 1, 300, "req-3")[0], 1);
}

TEST_F(LuaScripts, CustomerCountersAndEvents) {
    use(policy_yaml("", "warn_at: [0.5]\ncustomers:\n  default_limits: { monthly_usd: 1 }\n"
                        "  overrides:\n    cust_42: { monthly_usd: 5 }\n"));
    const Ledger l = ledger("cust_42");
    const std::string reqs = P + "reqs:customer:cust_42:d:2026-11-18";  // uncapped
    EXPECT_EQ(reserve_ints(l, 3 * kUsd, 0, "req-1")[0], 1);
    EXPECT_EQ(at(P + "spend:customer:cust_42:m:2026-11"), "3000000000");
    EXPECT_FALSE(redis.exists(reqs));  // counted at settlement
    EXPECT_EQ(reserve_ints(l, 3 * kUsd, 0, "req-2")[0], 0);
    EXPECT_EQ(events(), (std::vector<Event>{
                            warning("customer", "cust_42", "monthly", "2026-11", "0.5", "3000000000", "5000000000"),
                            reached("customer", "cust_42", "monthly", "2026-11", "3000000000", "5000000000")}));
    // Without a customer nothing customer-scoped is touched.
    const Ledger none = ledger();
    EXPECT_EQ(reserve_ints(none, 3 * kUsd, 0, "req-3")[0], 1);
    EXPECT_EQ(settle(none, {3 * kUsd, 0}, {2 * kUsd, 0}, "req-3").integer, 1);
    EXPECT_EQ(at(P + "spend:customer:cust_42:m:2026-11"), "3000000000");
    EXPECT_FALSE(redis.exists(reqs));
    // req-1's settlement counts its request for the customer, once.
    EXPECT_EQ(settle(l, {3 * kUsd, 0}, {3 * kUsd, 0}, "req-1").integer, 1);
    EXPECT_EQ(at(P + "spend:customer:cust_42:m:2026-11"), "3000000000");
    EXPECT_EQ(at(P + "spend:customer:cust_42:d:2026-11-18"), "3000000000");
    EXPECT_EQ(at(reqs), "1");
    EXPECT_EQ(events().size(), 2u);
}

// ---------------------------------------------------------------------------
// Prepaid balance and low_balance (kPrepaid: script_test_support.h).

TEST_F(LuaScripts, TheBalanceIsDrawnAndSettledToTheRealCost) {
    use(policy_yaml("", "", kPrepaid));
    const Ledger l = ledger();
    // Nothing funded: refused.
    std::vector<long long> reply = reserve_ints(l, 4 * kUsd, 0, "req-0");
    ASSERT_EQ(l.counters[21].key, kBalance);  // the balance follows the 21 scope counters
    EXPECT_EQ(reply, (std::vector<long long>{0, sent_position(l, 21), 0, 0}));
    EXPECT_EQ(label_of(l, decode_reserve_reply(l, reply)), "org:balance");
    EXPECT_FALSE(redis.exists(kBalance));
    EXPECT_FALSE(redis.exists(kHeld));

    redis.set(kBalance, "4000000000");  // exactly the estimate: allowed
    reply = reserve_ints(l, 4 * kUsd, 0, "req-1");
    ASSERT_EQ(reply[0], 1);
    EXPECT_EQ(at(kBalance), "0");
    EXPECT_EQ(at(kHeld), "4000000000");
    EXPECT_EQ(redis.expire_at(kBalance), 0);
    EXPECT_EQ(redis.expire_at(kHeld), 0);
    EXPECT_EQ(settle(l, {4 * kUsd, 0}, {kUsd, 0}, "req-1").integer, 1);
    EXPECT_EQ(at(kBalance), "3000000000");  // estimate - cost comes back
    EXPECT_EQ(at(kHeld), "0");
    // 3 USD left, 4 USD asked: refused, nothing drawn.
    reply = reserve_ints(l, 4 * kUsd, 0, "req-2");
    EXPECT_EQ(reply, (std::vector<long long>{0, sent_position(l, 21), 3'000'000'000, 0}));
    EXPECT_EQ(label_of(l, decode_reserve_reply(l, reply)), "org:balance");
    EXPECT_EQ(at(kBalance), "3000000000");
    EXPECT_EQ(at(kHeld), "0");
}

TEST_F(LuaScripts, LowBalanceFiresOncePerFall) {
    use(policy_yaml("", "", kPrepaid));
    const Ledger l = ledger();
    redis.set(kBalance, "10000000000");
    int n = 0;
    auto spend = [&](Nanos cost) {
        const std::string rid = "req-" + std::to_string(++n);
        EXPECT_EQ(reserve_ints(l, cost, 0, rid)[0], 1) << rid;
        const std::size_t after_reserve = events().size();
        EXPECT_EQ(settle(l, {cost, 0}, {cost, 0}, rid).integer, 1);
        return after_reserve;
    };
    spend(4 * kUsd);  // 6 USD left: above 5
    EXPECT_TRUE(events().empty());
    EXPECT_EQ(spend(2 * kUsd), 0u);  // 4 USD: below, after the settlement only
    EXPECT_EQ(events(), (std::vector<Event>{low_balance("4000000000", "5000000000")}));
    spend(kUsd);  // still low: no second event
    EXPECT_EQ(events().size(), 1u);
    redis.command({"INCRBY", kBalance, "10000000000"});  // a top-up: 13 USD
    spend(kUsd);  // 12 USD, seen at or above the threshold
    EXPECT_EQ(events().size(), 1u);
    spend(8 * kUsd);  // 4 USD again
    EXPECT_EQ(events(), (std::vector<Event>{low_balance("4000000000", "5000000000"),
                                            low_balance("4000000000", "5000000000")}));
}

TEST_F(LuaScripts, LowBalanceCountsWhatIsHeldAsStillThere) {
    use(policy_yaml("", "", kPrepaid));
    const Ledger l = ledger();
    redis.set(kBalance, "10000000000");
    ASSERT_EQ(reserve_ints(l, 6 * kUsd, 0, "req-a")[0], 1);  // held, not settled
    ASSERT_EQ(reserve_ints(l, kUsd, 0, "req-b")[0], 1);
    EXPECT_EQ(settle(l, {kUsd, 0}, {kUsd, 0}, "req-b").integer, 1);
    EXPECT_EQ(at(kBalance), "3000000000");
    EXPECT_EQ(at(kHeld), "6000000000");
    EXPECT_TRUE(events().empty());  // real balance 9 USD
    EXPECT_EQ(settle(l, {6 * kUsd, 0}, {5 * kUsd, 0}, "req-a").integer, 1);
    EXPECT_EQ(events(), (std::vector<Event>{low_balance("4000000000", "5000000000")}));
}

TEST_F(LuaScripts, LowBalanceAtTheThresholdIsNotLow) {
    use(policy_yaml("", "", kPrepaid));
    const Ledger l = ledger();
    redis.set(kBalance, "6000000000");
    ASSERT_EQ(reserve_ints(l, kUsd, 0, "req-1")[0], 1);
    EXPECT_EQ(settle(l, {kUsd, 0}, {kUsd, 0}, "req-1").integer, 1);
    EXPECT_TRUE(events().empty());
    ASSERT_EQ(reserve_ints(l, 1, 0, "req-2")[0], 1);
    EXPECT_EQ(settle(l, {1, 0}, {1, 0}, "req-2").integer, 1);
    EXPECT_EQ(events(), (std::vector<Event>{low_balance("4999999999", "5000000000")}));
}

// balance + held and the comparison are exact integer strings: a threshold
// past 2^53 nanos (9,007,199 USD) is not compared rounded.
TEST_F(LuaScripts, LowBalanceIsExactPastTwoToThe53) {
    use(policy_yaml("", "", "    prepaid: true\n    low_balance_usd: 9007199.254740993\n"));
    const Ledger l = ledger();
    redis.set(kBalance, "9007199254740993");  // 2^53 + 1
    ASSERT_EQ(reserve_ints(l, 1, 0, "req-1")[0], 1);
    EXPECT_EQ(settle(l, {1, 0}, {1, 0}, "req-1").integer, 1);  // real balance 2^53: below
    EXPECT_EQ(events(), (std::vector<Event>{low_balance("9007199254740992", "9007199254740993")}));
}

// ---------------------------------------------------------------------------
// A paid plan's ceilings (kPaidPlan, paid_org: script_test_support.h).

TEST_F(LuaScripts, TheLastQualifyingRowDecidesTheCeiling) {
    use(policy_yaml("", kPaidPlan, paid_org("2026-10-19T11:06:40Z")));  // 30 days old
    const Ledger l = ledger();
    ASSERT_EQ(l.ceiling_counter, std::optional<std::size_t>(15));
    ASSERT_EQ(l.ceilings.size(), 2u);  // the 90-day row is not sent
    ASSERT_GT(sent_position(l, 15), 0);  // the uncapped ceiling counter is sent all the same
    const std::vector<std::pair<const char *, long long>> cases = {
        {nullptr, 1},  // missing cleared = 0
        {"99999999999", 1},
        {"100000000000", 2},
        {"10000000000000", 2},  // row 3's cleared holds, its age does not
    };
    int n = 0;
    for (const auto &[cleared, row] : cases) {
        if (cleared) redis.set(kCleared, cleared);
        const std::vector<long long> reply = reserve_ints(l, kUsd, 0, "req-" + std::to_string(++n));
        ASSERT_EQ(reply.size(), sent_counters(l).size() + 4) << (cleared ? cleared : "missing");
        EXPECT_EQ(reply[3], row) << (cleared ? cleared : "missing");
        const ReserveOutcome o = decode_reserve_reply(l, reply);
        ASSERT_EQ(o.kind, ReserveOutcome::Kind::allowed) << o.error;
        EXPECT_EQ(o.ceiling_cap, row == 1 ? 100 * kUsd : 1000 * kUsd);
        EXPECT_EQ(o.tightest_index, std::optional<std::size_t>(15));
        EXPECT_EQ(o.tightest_cap, row == 1 ? 100 * kUsd : 1000 * kUsd);
        EXPECT_EQ(o.tightest_remaining, o.tightest_cap - n * kUsd);
    }
    // An older org has all three rows.
    const std::string kOld = "2026-08-20T11:06:40Z";  // 90 days
    use(policy_yaml("", kPaidPlan, paid_org(kOld)));
    const Ledger old = ledger();
    ASSERT_EQ(old.ceilings.size(), 3u);
    redis.set(kCleared, "5000000000000");
    const std::vector<long long> reply = reserve_ints(old, kUsd, 0, "req-old");
    ASSERT_GE(reply.size(), 4u);
    EXPECT_EQ(reply[3], 3);
    EXPECT_EQ(decode_reserve_reply(old, reply).ceiling_cap, 25000 * kUsd);
}

TEST_F(LuaScripts, ALaterRowMayLowerTheCeiling) {
    use(policy_yaml("", kPaidPlan, paid_org("2026-10-19T11:06:40Z")));
    Ledger l = ledger();
    l.ceilings.push_back(CeilingRow{50 * kUsd, 0, 200 * kUsd});
    redis.set(kCleared, "100000000000");
    redis.set(kOrgMonthly, "199500000000");
    const std::vector<long long> reply = reserve_ints(l, kUsd);
    ASSERT_EQ(l.counters[15].key, kOrgMonthly);
    EXPECT_EQ(reply, (std::vector<long long>{0, sent_position(l, 15), 199'500'000'000, 3}));
    const ReserveOutcome o = decode_reserve_reply(l, reply);
    ASSERT_EQ(o.kind, ReserveOutcome::Kind::blocked) << o.error;
    EXPECT_EQ(o.refused_by, std::optional<std::size_t>(15));
    EXPECT_EQ(o.ceiling_cap, 200 * kUsd);
    EXPECT_EQ(label_of(l, o), "org:monthly");
    EXPECT_EQ(events(), (std::vector<Event>{reached("org", "acme", "monthly", "2026-11", "199500000000",
                                                    "200000000000")}));
}

TEST_F(LuaScripts, TheCeilingRefusesAtItsCapAndWarnsBelowIt) {
    use(policy_yaml("", kPaidPlan, paid_org("2026-10-19T11:06:40Z")));
    const Ledger l = ledger();
    // Row 1: 100 USD. 60 crosses half of it.
    EXPECT_EQ(reserve_ints(l, 60 * kUsd, 0, "req-1")[0], 1);
    EXPECT_EQ(events(), (std::vector<Event>{
                            warning("org", "acme", "monthly", "2026-11", "0.5", "60000000000", "100000000000")}));
    // 50 more would pass 100: refused, reached at 100.
    ASSERT_EQ(l.counters[15].key, kOrgMonthly);
    const std::vector<long long> refused = reserve_ints(l, 50 * kUsd, 0, "req-2");
    EXPECT_EQ(refused, (std::vector<long long>{0, sent_position(l, 15), 60'000'000'000, 1}));
    EXPECT_EQ(label_of(l, decode_reserve_reply(l, refused)), "org:monthly");
    EXPECT_EQ(events().size(), 2u);
    EXPECT_EQ(events()[1], reached("org", "acme", "monthly", "2026-11", "60000000000", "100000000000"));
    // Cleared spend lifts it to row 2's 1000: allowed, and half of 1000 is a new warning.
    redis.set(kCleared, "100000000000");
    EXPECT_EQ(reserve_ints(l, 450 * kUsd, 0, "req-3")[3], 2);
    EXPECT_EQ(events().size(), 3u);
    EXPECT_EQ(events()[2],
              warning("org", "acme", "monthly", "2026-11", "0.5", "510000000000", "1000000000000"));
    // A request larger than the whole ceiling is refused without reaching it.
    EXPECT_EQ(reserve_ints(l, 1001 * kUsd, 0, "req-4")[0], 0);
    EXPECT_EQ(events().size(), 3u);
}

TEST_F(LuaScripts, ASettlementWarnsAgainstTheCeilingTheReservationSaw) {
    use(policy_yaml("", kPaidPlan, paid_org("2026-10-19T11:06:40Z")));
    const Ledger l = ledger();
    const ReserveOutcome o = reserved(l, 40 * kUsd);
    ASSERT_EQ(o.kind, ReserveOutcome::Kind::allowed) << o.error;
    ASSERT_EQ(o.ceiling_cap, 100 * kUsd);
    EXPECT_TRUE(events().empty());
    EXPECT_EQ(settle(l, {40 * kUsd, 0}, {55 * kUsd, 0}, "req-1", o.ceiling_cap).integer, 1);
    EXPECT_EQ(events(), (std::vector<Event>{
                            warning("org", "acme", "monthly", "2026-11", "0.5", "55000000000", "100000000000")}));
}

TEST_F(LuaScripts, ClearedMustBeAnInteger) {
    use(policy_yaml("", kPaidPlan, paid_org("2026-10-19T11:06:40Z")));
    redis.set(kCleared, "12.5");
    const Reply r = reserve(ledger(), kUsd);
    ASSERT_TRUE(r.is_error());
    EXPECT_NE(r.str.find("does not hold an integer"), std::string::npos) << r.str;
}

TEST_F(LuaScripts, AFutureCreatedAtIsABrandNewAccount) {
    use(policy_yaml("", kPaidPlan, paid_org("2027-01-01T00:00:00Z")));  // clock skew
    const Ledger l = ledger();
    ASSERT_EQ(l.ceilings.size(), 1u);
    redis.set(kCleared, "10000000000000");
    redis.set(kOrgMonthly, "99500000000");
    ASSERT_EQ(l.counters[15].key, kOrgMonthly);
    const std::vector<long long> refused = reserve_ints(l, kUsd);
    EXPECT_EQ(refused, (std::vector<long long>{0, sent_position(l, 15), 99'500'000'000, 1}));
    EXPECT_EQ(label_of(l, decode_reserve_reply(l, refused)), "org:monthly");
    EXPECT_EQ(reserve_ints(l, kUsd / 2, 0, "req-2")[0], 1);  // exactly up to row 1's 100
}

TEST_F(LuaScripts, ANegativeClearedCountsAsNone) {
    use(policy_yaml("", kPaidPlan, paid_org("2026-10-19T11:06:40Z")));
    Ledger l = ledger();
    // A hand-made first row asking for some cleared spend: a refund must not
    // leave the org without a ceiling, nor below the rows of cleared 0.
    l.ceilings.insert(l.ceilings.begin() + 1, CeilingRow{-10, 0, 5 * kUsd});
    redis.set(kCleared, "-20");
    std::vector<long long> reply = reserve_ints(l, kUsd, 0, "req-1");
    ASSERT_GE(reply.size(), 4u);
    EXPECT_EQ(reply[3], 2);  // -10 <= 0: the refund is read as 0
    EXPECT_EQ(decode_reserve_reply(l, reply).ceiling_cap, 5 * kUsd);
    redis.set(kCleared, "-99999999999999999");
    reply = reserve_ints(l, kUsd, 0, "req-2");
    ASSERT_GE(reply.size(), 4u);
    EXPECT_EQ(reply[3], 2);
}

// `le` compares by length first, so 50 nanos written as "0000000000050"
// would read as more than 100 USD (row 2's ceiling for an org with no
// cleared spend): int_at refuses leading zeros, as INCRBY would.
TEST_F(LuaScripts, ANonCanonicalClearedIsNotMisread) {
    use(policy_yaml("", kPaidPlan, paid_org("2026-10-19T11:06:40Z")));
    redis.set(kCleared, "0000000000050");
    const Reply r = reserve(ledger(), kUsd);
    if (!r.is_error()) {  // refusing the value (as INCRBY would) or reading it as 50 both do
        const auto ints = r.integers();
        ASSERT_TRUE(ints && ints->size() >= 4) << r;
        EXPECT_EQ((*ints)[3], 1);
    }
}

// ---------------------------------------------------------------------------
// key_expired

TEST_F(LuaScripts, AnExpiredKeyIsReportedOnce) {
    const std::string sha = sha1_hex(scripts::key_expired().text);
    lua.add_script(sha, scripts::key_expired().text);
    use(policy_yaml("") + "    expires_at: 2026-11-01T00:00:00Z\n");
    const Key &key = *policy->find_key(kHash);
    const std::vector<std::string> argv = key_expired_command("acme", key, kNow);
    const std::string marker = P + "expired:k1:1793491200";
    EXPECT_EQ(argv, (std::vector<std::string>{"EVALSHA", sha, "2", marker, kEvents, "k1", "2026-11-01T00:00:00Z",
                                              std::to_string(kNow + 400 * 86400)}));
    EXPECT_EQ(lua.evalsha(argv).integer, 1);
    EXPECT_EQ(lua.evalsha(argv).integer, 1);
    EXPECT_EQ(events(), (std::vector<Event>{{"type", "key_expired", "id", "k1", "expires_at", "2026-11-01T00:00:00Z"}}));
    EXPECT_EQ(expire_at(marker), kNow + 400 * 86400);
    // A key without expires_at has nothing to report.
    use(policy_yaml(""));
    EXPECT_TRUE(key_expired_command("acme", *policy->find_key(kHash), kNow).empty());
}

// ---------------------------------------------------------------------------
// Dry run.

TEST_F(LuaScripts, ADryRunReservesEveryCheckedCounterAndNamesTheCapThatWouldHaveRefused) {
    use(policy_yaml("{ monthly_usd: 10, rpm: 0 }", "warn_at: [0.5]\n", "    prepaid: true\n",
                    "{ monthly_tokens: 5 }"));
    const Ledger l = ledger();
    const std::string project_tokens = P + "tokens:project:p:m:2026-11";  // capped below the estimate
    const std::string org_daily = P + "spend:org:acme:d:2026-11-18";      // uncapped
    const std::string org_tokens = P + "tokens:org:acme:m:2026-11";       // uncapped
    ASSERT_EQ(l.counters[13].key, project_tokens);
    redis.set(kKeyMonthly, "9500000000");
    ASSERT_EQ(l.counters[1].key, kKeyMonthly);
    ASSERT_EQ(l.counters[14].key, org_daily);
    const std::vector<long long> reply = reserve_ints(l, kUsd, 7, "req-1", true);
    ASSERT_EQ(reply.size(), sent_counters(l).size() + 4);
    EXPECT_EQ(std::vector<long long>(reply.begin(), reply.begin() + 4),
              (std::vector<long long>{1, sent_position(l, 1), 9'500'000'000, 0}));
    // Every checked counter is counted, past the caps that would refuse.
    EXPECT_EQ(at(kKeyMonthly), "10500000000");
    EXPECT_EQ(at(project_tokens), "7");                          // past monthly_tokens 5
    EXPECT_EQ(after_of(l, reply, 13), 7);
    EXPECT_EQ(at(P + "rate:key:k1:rpm:2026-11-18T11:06"), "1");  // past rpm 0
    EXPECT_EQ(at(kBalance), "-1000000000");                      // past an empty balance
    EXPECT_EQ(at(kHeld), "1000000000");
    // The unchecked ones wait for the settlement.
    EXPECT_FALSE(redis.exists(org_daily));
    EXPECT_FALSE(redis.exists(org_tokens));
    EXPECT_FALSE(redis.exists(kKeyLife));
    EXPECT_EQ(sent_position(l, 14), 0);  // the org's daily spend: not even sent, so neither read nor written
    EXPECT_EQ(record("req-1", "req-1"), record_of(l, kUsd, 7));
    EXPECT_EQ(record("req-1", "req-1"), "-1000000000 spend:key:k1:m:2026-11\n-7 tokens:project:p:m:2026-11\n"
                                        "1000000000 balance\n-1 rate:key:k1:rpm:2026-11-18T11:06\n"
                                        "-1000000000 balance:held\n");
    const ReserveOutcome o = decode_reserve_reply(l, reply);
    ASSERT_EQ(o.kind, ReserveOutcome::Kind::allowed) << o.error;
    EXPECT_EQ(o.refused_by, std::optional<std::size_t>(1));
    EXPECT_EQ(o.tightest_index, std::optional<std::size_t>(1));
    EXPECT_EQ(o.tightest_remaining, 0);
    // The cap would have refused: reached, as for a refusal.
    EXPECT_EQ(events(), (std::vector<Event>{reached("key", "k1", "monthly", "2026-11", "9500000000", "10000000000")}));
    // And it settles as an allowed request: the checked counters go from the
    // estimate to the real amounts, the others get the real amounts.
    EXPECT_EQ(settle(l, {kUsd, 7}, {kUsd / 2, 3}, "req-1").integer, 1);
    EXPECT_EQ(at(kKeyMonthly), "10000000000");
    EXPECT_EQ(at(project_tokens), "3");
    EXPECT_EQ(at(org_daily), "500000000");
    EXPECT_EQ(at(org_tokens), "3");
    EXPECT_EQ(at(kKeyLife), "500000000");
    EXPECT_EQ(at(P + "rate:key:k1:rpm:2026-11-18T11:06"), "1");
    EXPECT_EQ(at(kBalance), "-500000000");
    EXPECT_EQ(at(kHeld), "0");
}

TEST_F(LuaScripts, ADryRunThatNothingRefusesNamesNoCounter) {
    use(policy_yaml("{ monthly_usd: 10 }"));
    const std::vector<long long> reply = reserve_ints(ledger(), kUsd, 0, "req-1", true);
    ASSERT_GE(reply.size(), 4u);
    EXPECT_EQ(reply[0], 1);
    EXPECT_EQ(reply[1], 0);
}

// ---------------------------------------------------------------------------
// Settlement.

TEST_F(LuaScripts, ASettlementReplacesTheEstimateByTheRealAmounts) {
    use(policy_yaml("{ daily_usd: 10, tpm: 1000 }", "", kPrepaid));
    const Ledger l = ledger();
    redis.set(kBalance, "50000000000");
    ASSERT_EQ(reserve_ints(l, 3 * kUsd, 400, "req-1")[0], 1);
    EXPECT_EQ(settle(l, {3 * kUsd, 400}, {kUsd, 120}, "req-1").integer, 1);
    for (const Counter &c : l.counters) {
        std::string expected;
        switch (c.kind) {
        case CounterKind::spend: expected = "1000000000"; break;
        case CounterKind::requests:
        case CounterKind::rpm: expected = "1"; break;
        case CounterKind::tokens:
        case CounterKind::tpm: expected = "120"; break;
        case CounterKind::balance: expected = "49000000000"; break;
        case CounterKind::held: expected = "0"; break;
        }
        EXPECT_EQ(at(c.key), expected) << c.key;
    }
    // Its record (the batch's last field) and deadline are gone; an answered
    // request needs no marker; the org counts one settlement.
    EXPECT_FALSE(has(batch_record("req-1")));
    EXPECT_TRUE(deadlines().empty());
    EXPECT_FALSE(has(settled_marker("req-1")));
    EXPECT_EQ(settlements(), "1");
    EXPECT_EQ(redis.expire_at(P + "settlements"), 0);
}

TEST_F(LuaScripts, ASecondSettlementChangesNothing) {
    use(policy_yaml("{ daily_usd: 10 }", "warn_at: [0.5]\n", kPrepaid));
    const Ledger l = ledger();
    redis.set(kBalance, "50000000000");
    ASSERT_EQ(reserve_ints(l, 3 * kUsd, 400, "req-1")[0], 1);
    EXPECT_EQ(settle(l, {3 * kUsd, 400}, {kUsd, 120}, "req-1").integer, 1);
    const auto before = redis.data();
    EXPECT_EQ(settle(l, {3 * kUsd, 400}, {kUsd, 120}, "req-1").integer, 0);
    EXPECT_EQ(settle(l, {3 * kUsd, 400}, {9 * kUsd, 900}, "req-1").integer, 0);
    EXPECT_EQ(settle(l, {3 * kUsd, 400}, {0, 0, 0}, "req-1").integer, 0);
    EXPECT_EQ(redis.data(), before);
    EXPECT_EQ(settlements(), "1");
}

TEST_F(LuaScripts, AnUnreservedSettlementAddsTheRealAmounts) {
    use(policy_yaml("{ rpm: 100, tpm: 1000 }", "", kPrepaid));
    const Ledger l = ledger();
    redis.set(kBalance, "50000000000");
    // Counted: a fail-open request that reached the upstream (its reserve
    // never answered).
    EXPECT_EQ(settle(l, {3 * kUsd, 400}, {kUsd, 120}, "req-1", std::nullopt, false).integer, 1);
    for (const Counter &c : l.counters) {
        std::string expected;
        switch (c.kind) {
        case CounterKind::spend: expected = "1000000000"; break;
        case CounterKind::requests: expected = "1"; break;
        case CounterKind::tokens: expected = "120"; break;
        case CounterKind::rpm:
        case CounterKind::tpm: expected = "(nil)"; break;  // its minute is not known to be live
        case CounterKind::balance: expected = "49000000000"; break;
        case CounterKind::held: expected = "(nil)"; break;  // nothing was held
        }
        EXPECT_EQ(at(c.key), expected) << c.key;
        if (c.kind == CounterKind::spend || c.kind == CounterKind::requests || c.kind == CounterKind::tokens) {
            EXPECT_EQ(redis.expire_at(c.key), c.expire_at) << c.key;
        }
    }
    // Marked settled, and its reserve's batch (its own id) turned away for a day.
    EXPECT_EQ(at(settled_marker("req-1")), "1");
    EXPECT_EQ(expire_at(settled_marker("req-1")), kNow + 86400);
    EXPECT_EQ(at(gone_marker("req-1")), "1");
    EXPECT_EQ(expire_at(gone_marker("req-1")), kNow + 86400);
    // Resent: nothing.
    const auto once = redis.data();
    EXPECT_EQ(settle(l, {3 * kUsd, 400}, {kUsd, 120}, "req-1", std::nullopt, false).integer, 0);
    EXPECT_EQ(redis.data(), once);
    // A second one adds as much again: each counts exactly once.
    EXPECT_EQ(settle(l, {3 * kUsd, 400}, {kUsd, 120}, "req-2", std::nullopt, false).integer, 1);
    EXPECT_EQ(at(P + "reqs:key:k1:d:2026-11-18"), "2");
    EXPECT_EQ(at(P + "reqs:org:acme:m:2026-11"), "2");
    EXPECT_EQ(at(kKeyDaily), "2000000000");
    EXPECT_EQ(at(P + "tokens:key:k1:m:2026-11"), "240");
    EXPECT_EQ(at(kBalance), "48000000000");
    EXPECT_FALSE(redis.exists(kHeld));
    EXPECT_FALSE(redis.exists(keys::deadlines("acme")));
    EXPECT_EQ(settlements(), "2");
}

TEST_F(LuaScripts, RateCountersAreNotRecreatedOnceTheirMinuteHasGone) {
    use(policy_yaml("{ rpm: 100, tpm: 1000 }"));
    const Ledger l = ledger();
    const std::string rpm = P + "rate:key:k1:rpm:2026-11-18T11:06";
    const std::string tpm = P + "rate:key:k1:tpm:2026-11-18T11:06";
    ASSERT_EQ(reserve_ints(l, 1, 300, "req-1")[0], 1);
    ASSERT_EQ(reserve_ints(l, 1, 300, "req-2")[0], 1);
    // Within its life: tpm settles to the real count, rpm stays.
    EXPECT_EQ(settle(l, {1, 300}, {1, 100}, "req-1").integer, 1);
    EXPECT_EQ(at(tpm), "400");
    EXPECT_EQ(at(rpm), "2");
    // After it expired: left alone.
    redis.now = kMinuteExpire + 1;
    ASSERT_FALSE(redis.exists(tpm));
    EXPECT_EQ(settle(l, {1, 300}, {1, 900}, "req-2").integer, 1);
    EXPECT_FALSE(redis.exists(tpm));
    EXPECT_FALSE(redis.exists(rpm));
    EXPECT_EQ(at(P + "tokens:key:k1:d:2026-11-18"), "1000");  // the daily tokens do settle
}

TEST_F(LuaScripts, ARateCounterGoneEarlyIsNotRecreated) {
    use(policy_yaml("{ tpm: 1000 }"));
    const Ledger l = ledger();
    const std::string tpm = P + "rate:key:k1:tpm:2026-11-18T11:06";
    ASSERT_EQ(reserve_ints(l, 1, 300, "req-1")[0], 1);
    ASSERT_EQ(reserve_ints(l, 1, 300, "req-2")[0], 1);
    redis.command({"DEL", tpm});  // evicted within its minute
    EXPECT_EQ(settle(l, {1, 300}, {1, 900}, "req-1").integer, 1);
    EXPECT_FALSE(redis.exists(tpm));
    EXPECT_EQ(settle(l, {1, 300}, {1, 100}, "req-2").integer, 1);
    EXPECT_FALSE(redis.exists(tpm));  // nor as a negative count
}

TEST_F(LuaScripts, CapsNearTheInt64LimitCompareExactly) {
    use(policy_yaml("{ monthly_usd: 9000000000 }", ""));  // 9e18 nanos
    const Ledger l = ledger();
    redis.set(kKeyMonthly, "8999999999999999000");
    // 9000000000000000001: a double comparison would let it through.
    EXPECT_EQ(reserve_ints(l, 1001, 0, "req-1")[0], 0);
    EXPECT_EQ(at(kKeyMonthly), "8999999999999999000");
    const std::vector<long long> reply = reserve_ints(l, 1000, 0, "req-2");
    ASSERT_GE(reply.size(), 4u);
    EXPECT_EQ(reply[0], 1);
    EXPECT_EQ(at(kKeyMonthly), "9000000000000000000");
    EXPECT_EQ(reserve_ints(l, 1, 0, "req-3")[0], 0);
    // Negative counters (released below zero) compare right too.
    redis.set(kKeyMonthly, "-5");
    use(policy_yaml("{ monthly_usd: 0.000000002 }", ""));
    EXPECT_EQ(reserve_ints(ledger(), 7, 0, "req-4")[0], 1);  // -5 + 7 = 2 <= 2
    EXPECT_EQ(reserve_ints(ledger(), 1, 0, "req-5")[0], 0);
}


// ---------------------------------------------------------------------------
// Reservation deadlines: a reservation whose request never settles is given
// back; a settlement after that counts the real amounts once.

TEST_F(LuaScripts, AReservationPastItsDeadlineIsGivenBackByTheNextReserveOnce) {
    use(policy_yaml("{ daily_usd: 10, rpm: 100, tpm: 100000 }", "", kPrepaid));
    const Ledger l = ledger();
    ASSERT_TRUE(l.balance && l.held);
    const std::string rpm = P + "rate:key:k1:rpm:2026-11-18T11:06";
    const std::string tpm = P + "rate:key:k1:tpm:2026-11-18T11:06";
    preset(l);
    const std::int64_t t0 = kNow * 1000;

    // 8 of the key's 10 USD a day, for a second.
    ASSERT_EQ(reserve_ints(l, 8 * kUsd, 300, "req-1", false, 1000)[0], 1);
    expect_counters(l, [&](const Counter &c) { return plus(preset_value(c), reserved_in(l, c, 8 * kUsd, 300)); },
                    "reserved");
    EXPECT_EQ(at(kKeyMonthly), "1000000000");  // unchecked: as preset while in flight
    EXPECT_EQ(record("req-1"), (std::map<std::string, std::string>{
                                   {"req-1", "-8000000000 spend:key:k1:d:2026-11-18\n8000000000 balance\n"
                                             "-1 rate:key:k1:rpm:2026-11-18T11:06\n"
                                             "-300 rate:key:k1:tpm:2026-11-18T11:06\n-8000000000 balance:held\n"}}));
    EXPECT_EQ(deadlines(), (Deadlines{{"req-1", static_cast<double>(t0 + 1000)}}));
    EXPECT_EQ(deadline_of("req-1"), static_cast<double>(t0 + 1000));
    redis.command({"DEL", rpm});  // its minute went (or it was evicted)

    // Not yet due: nothing given back.
    redis.set_now_ms(t0 + 999);
    EXPECT_EQ(sweep(8).integer, 0);
    EXPECT_TRUE(has(batch_record("req-1")));
    EXPECT_EQ(at(kKeyDaily), "9000000000");

    // Due: the next reserve of the org gives it back before its checks, so
    // 8 more USD fit (1 + 8 + 8 would not).
    redis.set_now_ms(t0 + 1000);
    const std::vector<long long> second = reserve_ints(l, 8 * kUsd, 300, "req-2");
    ASSERT_GE(second.size(), 4u);
    EXPECT_EQ(second[0], 1);
    auto after_second = [&](const Counter &c) {
        if (c.key == rpm) return std::string("1");  // not recreated at -1 by the release
        return plus(preset_value(c), reserved_in(l, c, 8 * kUsd, 300));
    };
    expect_counters(l, after_second, "after the release");
    EXPECT_EQ(at(kKeyMonthly), "1000000000");  // the release never touched it either
    EXPECT_EQ(at(kBalance), "42000000000");
    EXPECT_EQ(at(kHeld), "9000000000");
    EXPECT_EQ(at(tpm), "350");
    EXPECT_FALSE(has(batch_record("req-1")));
    EXPECT_EQ(deadlines(), (Deadlines{{"req-2", static_cast<double>(t0 + 1000 + kDefaultReservationTtlMs)}}));
    EXPECT_TRUE(events().empty());
    // req-1 is known to have been given back, for a day.
    EXPECT_EQ(at(released_marker("req-1")), "1");
    EXPECT_EQ(expire_at(released_marker("req-1")), kNow + 1 + 86400);

    // Once: neither a sweep nor another reserve gives it back again.
    const auto released = redis.data();
    EXPECT_EQ(sweep(8).integer, 0);
    EXPECT_EQ(redis.data(), released);
    EXPECT_EQ(reserve_ints(l, 11 * kUsd, 0, "req-3"), (std::vector<long long>{0, 1, 9'000'000'000, 0}));
    EXPECT_EQ(redis.data(), released);

    // Its settlement comes late: no reservation any more, so the real
    // amounts are added, once (rates and the hold are not).
    EXPECT_EQ(settle(l, {8 * kUsd, 300}, {2 * kUsd, 100}, "req-1").integer, 1);
    expect_counters(l,
                    [&](const Counter &c) {
                        switch (c.kind) {
                        case CounterKind::spend: return plus(after_second(c), 2 * kUsd);
                        case CounterKind::requests: return plus(after_second(c), 1);
                        case CounterKind::tokens: return plus(after_second(c), 100);
                        case CounterKind::balance: return plus(after_second(c), -2 * kUsd);
                        default: return after_second(c);
                        }
                    },
                    "after the late settlement");
    EXPECT_FALSE(has(released_marker("req-1")));  // counted: the marker has done its work
    const auto late = redis.data();
    EXPECT_EQ(settle(l, {8 * kUsd, 300}, {2 * kUsd, 100}, "req-1").integer, 0);
    EXPECT_EQ(redis.data(), late);

    // And req-2 settles as usual: each request counted once at its real cost.
    EXPECT_EQ(settle(l, {8 * kUsd, 300}, {kUsd, 50}, "req-2").integer, 1);
    expect_counters(l,
                    [&](const Counter &c) {
                        if (c.key == rpm) return std::string("1");
                        switch (c.kind) {
                        case CounterKind::spend: return plus(preset_value(c), 3 * kUsd);
                        case CounterKind::requests: return plus(preset_value(c), 2);
                        case CounterKind::tokens: return plus(preset_value(c), 150);
                        case CounterKind::tpm: return plus(preset_value(c), 50);  // req-1's minute is not known
                        case CounterKind::balance: return plus(preset_value(c), -3 * kUsd);
                        default: return preset_value(c);
                        }
                    },
                    "at the end");
    EXPECT_FALSE(redis.exists(keys::deadlines("acme")));
    EXPECT_EQ(settlements(), "2");
}

TEST_F(LuaScripts, TheSweepGivesBackAtMostMostAndOnlyWhatIsDue) {
    use(policy_yaml("{ daily_usd: 100, daily_tokens: 1000 }", "", kPrepaid));
    const Ledger l = ledger();
    preset(l);
    const auto before = redis.data();
    const std::int64_t t0 = kNow * 1000;
    ASSERT_EQ(reserve_ints(l, 1 * kUsd, 10, "req-a", false, 1000)[0], 1);
    ASSERT_EQ(reserve_ints(l, 2 * kUsd, 20, "req-b", false, 2000)[0], 1);
    ASSERT_EQ(reserve_ints(l, 4 * kUsd, 40, "req-c", false, 5000)[0], 1);
    EXPECT_EQ(deadlines(), (Deadlines{{"req-a", static_cast<double>(t0 + 1000)},
                                      {"req-b", static_cast<double>(t0 + 2000)},
                                      {"req-c", static_cast<double>(t0 + 5000)}}));
    const std::string tokens = P + "tokens:key:k1:d:2026-11-18";
    EXPECT_EQ(at(kKeyDaily), "8000000000");
    EXPECT_EQ(at(tokens), "140");

    redis.set_now_ms(t0 + 2500);  // a and b are due, c is not
    EXPECT_EQ(sweep(5, "other").integer, 0);  // another org's sweep touches nothing here
    EXPECT_EQ(sweep(1).integer, 1);           // at most one: the earliest deadline
    EXPECT_EQ(deadlines(), (Deadlines{{"req-b", static_cast<double>(t0 + 2000)},
                                      {"req-c", static_cast<double>(t0 + 5000)}}));
    EXPECT_FALSE(has(batch_record("req-a")));
    EXPECT_EQ(at(kKeyDaily), "7000000000");
    EXPECT_EQ(at(tokens), "130");
    EXPECT_EQ(at(kBalance), "44000000000");
    EXPECT_EQ(at(kHeld), "7000000000");
    EXPECT_EQ(sweep(5).integer, 1);
    EXPECT_EQ(deadlines(), (Deadlines{{"req-c", static_cast<double>(t0 + 5000)}}));
    EXPECT_EQ(at(kKeyDaily), "5000000000");
    EXPECT_EQ(sweep(5).integer, 0);
    EXPECT_TRUE(has(batch_record("req-c")));

    redis.set_now_ms(t0 + 4999);
    EXPECT_EQ(sweep(5).integer, 0);
    EXPECT_EQ(at(kKeyDaily), "5000000000");
    redis.set_now_ms(t0 + 5000);  // the deadline itself is due
    EXPECT_EQ(sweep(5).integer, 1);
    // Every counter, balance and hold as before; no record, no set; each
    // request given back is marked so for a day.
    EXPECT_EQ(without(keys::released("acme")), before);
    for (const char *rid : {"req-a", "req-b", "req-c"}) {
        EXPECT_EQ(at(released_marker(rid)), "1") << rid;
        EXPECT_GT(expire_at(released_marker(rid)), kNow + 86400 - 1) << rid;
        EXPECT_LE(expire_at(released_marker(rid)), kNow + 5 + 86400) << rid;
    }
}

TEST_F(LuaScripts, AReserveGivesBackExpiredOnesOnlyWhenARequestWouldBeRefusedAtMostEightAndTheSweepTheRest) {
    use(policy_yaml("{ daily_usd: 100 }", ""));
    const Ledger l = ledger();
    for (int i = 0; i < 10; ++i)  // deadlines in this order, none due yet
        ASSERT_EQ(reserve_ints(l, kUsd, 0, "old-" + std::to_string(i), false, 1 + i)[0], 1);
    EXPECT_EQ(at(kKeyDaily), "10000000000");
    redis.set_now_ms(kNow * 1000 + 100);
    // Nothing refused: the expired ones stay for the periodic sweep.
    ASSERT_EQ(reserve_ints(l, kUsd, 0, "new")[0], 1);
    EXPECT_EQ(at(kKeyDaily), "11000000000");
    EXPECT_EQ(deadlines().size(), 11u);
    // 11 + 95 > 100: refused, so 8 expired ones go back (11 - 8 = 3), and
    // decided again it fits (3 + 95 = 98), with no spend_cap_reached told.
    ASSERT_EQ(reserve_ints(l, 95 * kUsd, 0, "big")[0], 1);
    EXPECT_EQ(at(kKeyDaily), "98000000000");
    EXPECT_TRUE(events().empty());
    const Deadlines left = deadlines();
    ASSERT_EQ(left.size(), 4u);
    EXPECT_EQ(left[0].first, "old-8");
    EXPECT_EQ(left[1].first, "old-9");
    EXPECT_EQ(left[2].first, "big");  // the same deadline as "new": member order
    EXPECT_EQ(left[3].first, "new");
    for (int i = 0; i < 8; ++i) EXPECT_EQ(at(released_marker("old-" + std::to_string(i))), "1") << i;
    // Refused even then (98 - 2 + 5 > 100): the two left go back, and it is
    // still refused, told once.
    EXPECT_EQ(reserve_ints(l, 5 * kUsd, 0, "over")[0], 0);
    EXPECT_EQ(at(kKeyDaily), "96000000000");
    EXPECT_EQ(deadlines().size(), 2u);
    EXPECT_EQ(events().size(), 1u);
    EXPECT_EQ(sweep(8).integer, 0);
}

TEST_F(LuaScripts, DeadlinesAreRedisTimeInMilliseconds) {
    use(policy_yaml("{ daily_usd: 100 }", ""));
    const Ledger l = ledger();
    redis.micros = 500'000;  // TIME: kNow s 500000 us
    ASSERT_EQ(reserve_ints(l, kUsd, 0, "req-1", false, 1000)[0], 1);
    const std::int64_t deadline = kNow * 1000 + 500 + 1000;
    EXPECT_EQ(deadlines(), (Deadlines{{"req-1", static_cast<double>(deadline)}}));
    EXPECT_EQ(deadline_of("req-1"), static_cast<double>(deadline));
    redis.now = kNow + 1;
    redis.micros = 499'999;  // 1 ms short
    EXPECT_EQ(sweep(8).integer, 0);
    redis.micros = 500'000;
    EXPECT_EQ(sweep(8).integer, 1);
    EXPECT_EQ(at(kKeyDaily), "0");
    // A ttl of 0 means the least there is (1 ms), the most 12 hours.
    ASSERT_EQ(reserve_ints(l, kUsd, 0, "req-2", false, 0)[0], 1);
    ASSERT_EQ(reserve_ints(l, kUsd, 0, "req-3", false, std::numeric_limits<std::int64_t>::max())[0], 1);
    EXPECT_EQ(deadlines(), (Deadlines{{"req-2", static_cast<double>(deadline + 1)},
                                      {"req-3", static_cast<double>(deadline + kMaxReservationTtlMs)}}));
}

TEST_F(LuaScripts, ASettlementBeforeTheDeadlineEndsTheReservation) {
    use(policy_yaml("{ daily_usd: 10, tpm: 1000 }", "", kPrepaid));
    const Ledger l = ledger();
    redis.set(kBalance, "50000000000");
    ASSERT_EQ(reserve_ints(l, 3 * kUsd, 400, "req-1", false, 1000)[0], 1);
    ASSERT_EQ(deadlines().size(), 1u);
    redis.set_now_ms(kNow * 1000 + 999);
    EXPECT_EQ(settle(l, {3 * kUsd, 400}, {kUsd, 120}, "req-1").integer, 1);
    EXPECT_FALSE(has(batch_record("req-1")));
    EXPECT_FALSE(redis.exists(keys::deadlines("acme")));  // its deadline is gone with it
    EXPECT_EQ(at(kKeyDaily), "1000000000");
    EXPECT_EQ(at(kBalance), "49000000000");
    EXPECT_EQ(at(kHeld), "0");
    // Past the deadline nothing is given back: not by a sweep, nor by a reserve.
    redis.set_now_ms(kNow * 1000 + 5000);
    const auto settled = redis.data();
    EXPECT_EQ(sweep(8).integer, 0);
    EXPECT_EQ(redis.data(), settled);
    ASSERT_EQ(reserve_ints(l, kUsd, 10, "req-2")[0], 1);
    EXPECT_EQ(at(kKeyDaily), "2000000000");
    EXPECT_EQ(at(kBalance), "48000000000");
    EXPECT_EQ(at(kHeld), "1000000000");
    EXPECT_EQ(at(P + "rate:key:k1:tpm:2026-11-18T11:06"), "130");
}

TEST_F(LuaScripts, ALateReserveAfterItsSettlementChangesNothing) {
    use(policy_yaml("{ daily_usd: 10, rpm: 100 }", "warn_at: [0.5]\n", kPrepaid));
    const Ledger l = ledger();
    redis.set(kBalance, "50000000000");
    // Another request's reservation is due: a late reserve does not even give it back.
    ASSERT_EQ(reserve_ints(l, kUsd, 0, "req-0", false, 1)[0], 1);
    // req-1's reserve was not answered (it timed out before it reached
    // Redis): its settlement counts the real cost and leaves a tombstone for
    // its reserve's batch (its own id), for a day.
    EXPECT_EQ(settle(l, {2 * kUsd, 5}, {kUsd, 3}, "req-1", std::nullopt, false).integer, 1);
    EXPECT_EQ(at(gone_marker("req-1")), "1");
    EXPECT_EQ(expire_at(gone_marker("req-1")), kNow + 86400);
    EXPECT_EQ(at(kKeyDaily), "2000000000");  // req-0's 1 + req-1's real 1
    redis.set_now_ms(kNow * 1000 + 10);
    const auto before = redis.data();
    for (const Nanos cost : {2 * kUsd, 6 * kUsd, 20 * kUsd}) {  // fits, crosses a warning, refused
        const Reply raw = reserve(l, cost, 5, "req-1");
        EXPECT_TRUE(is_tombstone_reply(raw)) << raw;  // {2}, not nested
        const std::vector<long long> reply = reserve_ints(l, cost, 5, "req-1");
        EXPECT_EQ(reply, (std::vector<long long>{2})) << cost;
        EXPECT_EQ(redis.data(), before) << cost;
        const ReserveOutcome o = decode_reserve_reply(l, reply);
        EXPECT_EQ(o.kind, ReserveOutcome::Kind::error);
        EXPECT_EQ(o.error, "reserve script found the request already settled");
        EXPECT_FALSE(o.refused_by.has_value());
    }
    EXPECT_TRUE(has(batch_record("req-0")));  // due, and left for a reserve that runs
    // A request refused before the provider settles without a reservation;
    // its reserve, arriving after, is turned away the same way.
    EXPECT_EQ(settle(l, {2 * kUsd, 5}, {0, 0, 0}, "req-9", std::nullopt, false).integer, 1);
    const auto marked = redis.data();
    EXPECT_EQ(reserve_ints(l, 2 * kUsd, 5, "req-9"), (std::vector<long long>{2}));
    EXPECT_EQ(redis.data(), marked);
    EXPECT_FALSE(has(batch_record("req-9")));
    // An answered request's settlement leaves no tombstone: its reserve has
    // landed, there is nothing late to turn away.
    ASSERT_EQ(reserve_ints(l, kUsd, 1, "req-5")[0], 1);
    EXPECT_EQ(settle(l, {kUsd, 1}, {kUsd, 1}, "req-5").integer, 1);
    EXPECT_FALSE(has(gone_marker("req-5")));
    EXPECT_FALSE(has(settled_marker("req-5")));
}

// ---------------------------------------------------------------------------
// A request refused before the provider (real.requests = 0) counts nowhere.

TEST_F(LuaScripts, ARefusedRequestGivesBackEverythingItReserved) {
    use(policy_yaml("{ daily_usd: 10, daily_requests: 50, daily_tokens: 5000, rpm: 100, tpm: 100000 }",
                    "customers:\n  default_limits: { daily_usd: 10 }\n", kPrepaid));
    const Ledger l = ledger();
    ASSERT_EQ(l.counters.size(), 25u);  // 21 scope counters, balance, rpm, tpm, held
    preset(l);
    const auto before = redis.data();
    const std::size_t mark = redis.log.size();
    ASSERT_EQ(reserve_ints(l, 3 * kUsd, 400, "req-1")[0], 1);
    EXPECT_EQ(at(kKeyDaily), "4000000000");
    EXPECT_EQ(at(P + "rate:key:k1:rpm:2026-11-18T11:06"), "3");
    EXPECT_EQ(at(kKeyMonthly), "1000000000");  // unchecked: untouched
    EXPECT_EQ(settle(l, {3 * kUsd, 400}, {0, 0, 0}, "req-1").integer, 1);
    // Spend, requests, tokens, rpm, tpm, balance, held: exactly as before;
    // only the org's count of settlements moved.
    EXPECT_EQ(without(P + "settlements"), before);
    EXPECT_EQ(settlements(), "1");
    // The unchecked counters were not even written (by the reserve or the settlement).
    for (const Counter &c : l.counters) EXPECT_EQ(incrbys(c.key, mark) > 0, checked(l, c)) << c.key;
    EXPECT_TRUE(events().empty());
    EXPECT_FALSE(has(settled_marker("req-1")));  // answered: its record's end is the proof
    EXPECT_FALSE(has(batch_record("req-1")));
    EXPECT_FALSE(redis.exists(keys::deadlines("acme")));
    EXPECT_EQ(settle(l, {3 * kUsd, 400}, {0, 0, 0}, "req-1").integer, 0);
    EXPECT_EQ(without(P + "settlements"), before);
    EXPECT_EQ(settlements(), "1");

    // A checked counter it created holds 0 afterwards (a missing counter is
    // 0 too); an unchecked one is never created.
    const Ledger fresh = ledger("c1");
    const std::string customer_daily = P + "spend:customer:c1:d:2026-11-18";
    ASSERT_EQ(reserve_ints(fresh, kUsd, 40, "req-2")[0], 1);
    EXPECT_EQ(at(customer_daily), "1000000000");
    EXPECT_EQ(settle(fresh, {kUsd, 40}, {0, 0, 0}, "req-2").integer, 1);
    for (const Counter &c : fresh.counters) {
        if (c.scope != Scope::customer) EXPECT_EQ(at(c.key), preset_value(c)) << c.key;
        else if (c.key == customer_daily) EXPECT_EQ(at(c.key), "0") << c.key;
        else EXPECT_FALSE(redis.exists(c.key)) << c.key;
    }
}

TEST_F(LuaScripts, ARefusedRequestWithoutAReservationOnlyMarksItSettled) {
    use(policy_yaml("{ daily_usd: 10, rpm: 100, tpm: 100000 }", "warn_at: [0.5]\n", kPrepaid));
    const Ledger l = ledger();
    // Nothing in Redis: nothing is created but the marker, the tombstone of
    // its reserve's batch and the count of settlements. (The balance is
    // funded: an empty one is below low_balance_usd.)
    redis.set(kBalance, "50000000000");
    EXPECT_EQ(settle(l, {3 * kUsd, 400}, {0, 0, 0}, "req-0", std::nullopt, false).integer, 1);
    EXPECT_EQ(redis.data().size(), 4u);
    EXPECT_EQ(at(settled_marker("req-0")), "1");
    EXPECT_EQ(at(gone_marker("req-0")), "1");
    EXPECT_EQ(settlements(), "1");
    EXPECT_EQ(at(kBalance), "50000000000");
    // Counters in use stay exactly as they are.
    preset(l);
    const std::vector<std::string> marks = {keys::settled("acme"), keys::gone("acme"), P + "settlements"};
    const auto before = without(marks);
    EXPECT_EQ(settle(l, {3 * kUsd, 400}, {0, 0, 0}, "req-1", std::nullopt, false).integer, 1);
    EXPECT_EQ(without(marks), before);
    EXPECT_TRUE(events().empty());
    EXPECT_TRUE(has(settled_marker("req-1")));
    EXPECT_TRUE(has(gone_marker("req-1")));
    EXPECT_EQ(settlements(), "2");
    EXPECT_FALSE(redis.exists(keys::deadlines("acme")));
    // Answered, a request with no field in its record at a resend is one
    // already settled: nothing at all changes.
    sent_settlements.insert("req-2");
    const auto all = redis.data();
    EXPECT_EQ(settle(l, {3 * kUsd, 400}, {0, 0, 0}, "req-2").integer, 0);
    EXPECT_EQ(settle(l, {3 * kUsd, 400}, {kUsd, 10}, "req-2").integer, 0);
    EXPECT_EQ(redis.data(), all);
}

// A failover can lose the reservations of its last moments (Redis
// replicates after it answers): the request's first settlement finds no
// reservation, no release and no earlier settlement, and counts the real
// cost, once; a resend after it changes nothing.
TEST_F(LuaScripts, AReservationLostInAFailoverIsCountedAtItsRealCostOnce) {
    use(policy_yaml("{ daily_usd: 10 }", "", ""));
    const Ledger l = ledger();
    ASSERT_EQ(reserve_ints(l, 3 * kUsd, 400, "req-1")[0], 1);
    // The master answered the reserve and died; its replica, promoted, never had it.
    FakeRedis promoted_redis;
    promoted_redis.now = kNow;
    LuaRunner promoted{promoted_redis};
    load_scripts(promoted);
    const std::vector<std::string> argv = settle_command(l, {3 * kUsd, 400}, {kUsd, 120}, "req-1", std::nullopt);
    EXPECT_EQ(promoted.evalsha(argv).integer, 1);
    const std::string daily = P + "spend:key:k1:d:2026-11-18";
    const auto &data = promoted_redis.data();
    ASSERT_TRUE(data.count(daily));
    EXPECT_EQ(data.at(daily).str, "1000000000");  // its real cost, not less
    EXPECT_TRUE(data.at(keys::settled("acme")).zset.count("req-1"));
    const auto once = promoted_redis.data();
    EXPECT_EQ(promoted.evalsha(resent(argv)).integer, 0);  // a resend: nothing more
    EXPECT_EQ(promoted.evalsha(argv).integer, 0);          // even one that says it is the first
    EXPECT_EQ(promoted_redis.data(), once);
}

// ---------------------------------------------------------------------------
// Counters no check reads (no cap, not the plan's ceiling, not the balance or
// its hold) are left alone by the reservation and get the real amounts once,
// at settlement.

TEST_F(LuaScripts, UncheckedCountersAreUntouchedInFlightAndHoldTheRealAmountsAfterTheSettlement) {
    use(policy_yaml("{ daily_usd: 10, monthly_requests: 100, daily_tokens: 5000, tpm: 100000 }", "",
                    kPrepaid, "{ monthly_usd: 50 }"));
    const Ledger l = ledger();
    const std::string tpm = P + "rate:key:k1:tpm:2026-11-18T11:06";
    std::size_t n_unchecked = 0;
    for (const Counter &c : l.counters) n_unchecked += checked(l, c) ? 0 : 1;
    ASSERT_EQ(n_unchecked, 21u - 4);  // all but the key's 3 caps and the project's monthly spend
    preset(l);
    const auto was = redis.data();
    const Nanos est = 3 * kUsd, real = kUsd;
    const std::int64_t est_tokens = 400, real_tokens = 120;

    const std::vector<long long> reply = reserve_ints(l, est, est_tokens, "req-1");
    ASSERT_EQ(reply.size(), l.counters.size() - n_unchecked + 4);  // an "after" per checked counter only
    ASSERT_EQ(reply[0], 1);
    // In flight: the checked counters hold the estimate, the others only what
    // was settled before (as preset), not even re-written.
    expect_counters(l, [&](const Counter &c) { return plus(preset_value(c), reserved_in(l, c, est, est_tokens)); },
                    "in flight");
    for (std::size_t i = 0; i < l.counters.size(); ++i) {
        const Counter &c = l.counters[i];
        if (checked(l, c)) continue;
        EXPECT_EQ(redis.data().at(c.key), was.at(c.key)) << c.key;
        EXPECT_EQ(sent_position(l, i), 0) << c.key;  // not sent
    }

    // Settled: every spend, request and token counter holds exactly the real
    // amounts on top of what it had; the checked ones went estimate -> real.
    const std::size_t mark = redis.log.size();
    EXPECT_EQ(settle(l, {est, est_tokens}, {real, real_tokens}, "req-1").integer, 1);
    expect_counters(l,
                    [&](const Counter &c) {
                        switch (c.kind) {
                        case CounterKind::spend: return plus(preset_value(c), real);
                        case CounterKind::requests: return plus(preset_value(c), 1);
                        case CounterKind::tokens:
                        case CounterKind::tpm: return plus(preset_value(c), real_tokens);
                        case CounterKind::balance: return plus(preset_value(c), -real);
                        default: return preset_value(c);  // held; no rpm here
                        }
                    },
                    "settled");
    for (const Counter &c : l.counters)
        if (!checked(l, c)) EXPECT_EQ(incrbys(c.key, mark), 1u) << c.key;  // once, by the settlement
    EXPECT_EQ(at(tpm), plus(preset_value(l.counters[l.counters.size() - 2]), real_tokens));

    // From nothing: an unchecked counter is absent in flight and then holds
    // exactly the real amount; the customer scope has no caps at all.
    const Ledger with_customer = ledger("c1");
    ASSERT_EQ(reserve_ints(with_customer, est, est_tokens, "req-2")[0], 1);
    for (const Counter &c : with_customer.counters)
        if (c.scope == Scope::customer) EXPECT_FALSE(redis.exists(c.key)) << c.key << " in flight";
    EXPECT_EQ(settle(with_customer, {est, est_tokens}, {real, real_tokens}, "req-2").integer, 1);
    for (const Counter &c : with_customer.counters) {
        if (c.scope != Scope::customer) continue;
        const std::string expected = c.kind == CounterKind::spend      ? std::to_string(real)
                                     : c.kind == CounterKind::requests ? "1"
                                                                       : std::to_string(real_tokens);
        EXPECT_EQ(at(c.key), expected) << c.key;
        EXPECT_EQ(redis.expire_at(c.key), c.expire_at) << c.key;
    }
    EXPECT_EQ(at(P + "spend:customer:c1:m:2026-11"), "1000000000");
    EXPECT_EQ(at(P + "reqs:customer:c1:d:2026-11-18"), "1");
    EXPECT_EQ(at(P + "tokens:customer:c1:m:2026-11"), "120");
    // A settlement resent changes nothing.
    const auto settled = redis.data();
    EXPECT_EQ(settle(with_customer, {est, est_tokens}, {real, real_tokens}, "req-2").integer, 0);
    EXPECT_EQ(redis.data(), settled);
}

TEST_F(LuaScripts, ARefusedRequestAfterItsReserveNeverTouchesUncheckedCounters) {
    use(policy_yaml("{ daily_usd: 10, daily_requests: 50, rpm: 100 }", "", kPrepaid, "{ monthly_tokens: 9000 }"));
    const Ledger l = ledger("c1");
    // Only the checked counters have values; every other is absent.
    for (const Counter &c : l.counters)
        if (checked(l, c)) redis.set(c.key, preset_value(c));
    const auto before = redis.data();
    const std::size_t mark = redis.log.size();
    ASSERT_EQ(reserve_ints(l, 3 * kUsd, 400, "req-1")[0], 1);
    EXPECT_EQ(at(kKeyDaily), "4000000000");
    EXPECT_EQ(at(P + "tokens:project:p:m:2026-11"), "470");
    EXPECT_EQ(settle(l, {3 * kUsd, 400}, {0, 0, 0}, "req-1").integer, 1);
    // The checked ones are back to before, the others were never created.
    EXPECT_EQ(without(P + "settlements"), before);
    EXPECT_EQ(settlements(), "1");
    for (const Counter &c : l.counters) {
        if (checked(l, c)) {
            EXPECT_EQ(at(c.key), preset_value(c)) << c.key;
        } else {
            EXPECT_FALSE(redis.exists(c.key)) << c.key;
            EXPECT_EQ(incrbys(c.key, mark), 0u) << c.key;
        }
    }
    EXPECT_TRUE(events().empty());
}

TEST_F(LuaScripts, AReservationReleasedAtItsDeadlineLeavesUncheckedCountersUntouchedAndTheLateSettlementCountsOnce) {
    use(policy_yaml("{ daily_usd: 10, daily_tokens: 5000, rpm: 100, tpm: 100000 }", "", kPrepaid));
    const Ledger l = ledger();
    preset(l);
    const auto before = redis.data();
    const std::int64_t t0 = kNow * 1000;
    ASSERT_EQ(reserve_ints(l, 4 * kUsd, 300, "req-1", false, 1000)[0], 1);
    EXPECT_EQ(at(kKeyMonthly), "1000000000");  // unchecked: untouched in flight
    EXPECT_EQ(at(kKeyDaily), "5000000000");

    // At its deadline it is given back: the checked counters as before, the
    // unchecked ones never written.
    redis.set_now_ms(t0 + 1000);
    const std::size_t mark = redis.log.size();
    EXPECT_EQ(sweep(8).integer, 1);
    EXPECT_EQ(without(keys::released("acme")), before);
    EXPECT_EQ(at(released_marker("req-1")), "1");  // for its late settlement
    EXPECT_EQ(expire_at(released_marker("req-1")), kNow + 1 + 86400);
    for (const Counter &c : l.counters) EXPECT_EQ(incrbys(c.key, mark), checked(l, c) ? 1u : 0u) << c.key;

    // The settlement comes late: the real amounts go to every spend, request
    // and token counter and the balance, once each (the rates' minute and the
    // hold are not known to hold anything of it).
    const std::size_t late = redis.log.size();
    EXPECT_EQ(settle(l, {4 * kUsd, 300}, {kUsd, 100}, "req-1").integer, 1);
    expect_counters(l,
                    [&](const Counter &c) {
                        switch (c.kind) {
                        case CounterKind::spend: return plus(preset_value(c), kUsd);
                        case CounterKind::requests: return plus(preset_value(c), 1);
                        case CounterKind::tokens: return plus(preset_value(c), 100);
                        case CounterKind::balance: return plus(preset_value(c), -kUsd);
                        default: return preset_value(c);
                        }
                    },
                    "after the late settlement");
    for (const Counter &c : l.counters) {
        const bool rate_or_hold = c.kind == CounterKind::rpm || c.kind == CounterKind::tpm ||
                                  c.kind == CounterKind::held;
        EXPECT_EQ(incrbys(c.key, late), rate_or_hold ? 0u : 1u) << c.key;
    }
    EXPECT_FALSE(has(released_marker("req-1")));
    EXPECT_EQ(settlements(), "1");
    const auto settled = redis.data();
    EXPECT_EQ(settle(l, {4 * kUsd, 300}, {kUsd, 100}, "req-1").integer, 0);
    EXPECT_EQ(sweep(8).integer, 0);
    EXPECT_EQ(redis.data(), settled);
}

TEST_F(LuaScripts, TheReleaseRecordListsExactlyTheCheckedCounters) {
    // Only the key's monthly_usd: one line.
    use(policy_yaml("{ monthly_usd: 10 }"));
    ASSERT_EQ(reserve_ints(ledger(), 700, 30, "req-1")[0], 1);
    EXPECT_EQ(record("req-1", "req-1"), "-700 spend:key:k1:m:2026-11\n");
    std::size_t present = 0;
    for (const Counter &c : ledger().counters) present += redis.exists(c.key) ? 1 : 0;
    EXPECT_EQ(present, 1u);
    // Project and org lines only where they have caps.
    use(policy_yaml("{ monthly_usd: 10 }", "", "    limits: { daily_requests: 10 }\n", "{ monthly_usd: 50 }"));
    ASSERT_EQ(reserve_ints(ledger(), 700, 30, "req-2")[0], 1);
    EXPECT_EQ(record("req-2", "req-2"), "-700 spend:key:k1:m:2026-11\n-700 spend:project:p:m:2026-11\n"
                                        "-1 reqs:org:acme:d:2026-11-18\n");
    // A paid plan's ceiling is read, so its counter is reserved too.
    use(policy_yaml("{ monthly_usd: 10 }", kPaidPlan, paid_org("2026-10-19T11:06:40Z")));
    ASSERT_EQ(reserve_ints(ledger(), 700, 30, "req-3")[0], 1);
    EXPECT_EQ(record("req-3", "req-3"), "-700 spend:key:k1:m:2026-11\n-700 spend:org:acme:m:2026-11\n");
    // Given back, each reservation takes exactly what it added.
    redis.set_now_ms(kNow * 1000 + kDefaultReservationTtlMs);
    EXPECT_EQ(sweep(8).integer, 3);
    EXPECT_EQ(at(kKeyMonthly), "0");
    EXPECT_EQ(at(P + "spend:project:p:m:2026-11"), "0");
    EXPECT_EQ(at(P + "reqs:org:acme:d:2026-11-18"), "0");
    EXPECT_EQ(at(kOrgMonthly), "0");
    EXPECT_FALSE(redis.exists(kKeyDaily));
    EXPECT_FALSE(redis.exists(P + "tokens:key:k1:m:2026-11"));
}

// ---------------------------------------------------------------------------
// All or nothing: a write Redis refuses leaves every key as it was.

TEST_F(LuaScripts, AReserveThatCannotAddLeavesEverythingAsItWas) {
    use(policy_yaml("{ daily_usd: 100, monthly_usd: 100 }", "", kPrepaid));
    const Ledger l = ledger();
    // The hold: checked (written by every reservation) but never read by a
    // check, and the last counter added, after the key's and the balance.
    ASSERT_EQ(l.held, std::optional<std::size_t>(l.counters.size() - 1));
    ASSERT_EQ(l.counters.back().key, kHeld);
    // An unchecked counter is not written by a reserve, so one that could not
    // take any more does not stop it (its settlement would: see below).
    const std::string org_life = P + "spend:org:acme:life";
    ASSERT_FALSE(checked(l, l.counters[16]));
    ASSERT_EQ(l.counters[16].key, org_life);
    redis.set(org_life, "9223372036854775807");
    redis.set(kBalance, "50000000000");
    redis.set(kKeyDaily, "5");
    const std::vector<long long> other = reserve_ints(l, kUsd, 3, "req-0");  // another request, reserved
    ASSERT_GE(other.size(), 4u);
    ASSERT_EQ(other[0], 1);
    redis.command({"DEL", kKeyMonthly});  // and a counter req-1 creates
    // An overflow is found by the INCRBY: the counters added before the hold
    // are taken back. A hold that is no integer (or no string) is found when
    // the script reads every counter it checks, before its first write.
    struct Case {
        const char *what;
        std::string error;   // the reply starts with it
        std::size_t writes;  // INCRBYs of each counter before the hold
    };
    for (const Case &c : {Case{"overflow", "ERR increment or decrement would overflow", 2},
                          Case{"abc", "ERR user_script:", 0},
                          Case{"stream", "WRONGTYPE Operation against a key holding the wrong kind of value", 0}}) {
        redis.command({"DEL", kHeld});
        if (std::string(c.what) == "overflow") redis.set(kHeld, "9223372036854775000");
        if (std::string(c.what) == "abc") redis.set(kHeld, "abc");
        if (std::string(c.what) == "stream") redis.command({"XADD", kHeld, "*", "f", "v"});
        const auto before = redis.data();
        const std::size_t mark = redis.log.size();
        const Reply r = reserve(l, 1000, 7, "req-1");
        ASSERT_TRUE(r.is_error()) << c.what << ": " << r;
        EXPECT_EQ(r.str.rfind(c.error, 0), 0u) << c.what << ": " << r.str;
        if (std::string(c.what) == "overflow") EXPECT_EQ(r.str, c.error);
        if (std::string(c.what) == "abc")
            EXPECT_NE(r.str.find("spend-cap: sc:{acme}:balance:held does not hold an integer"), std::string::npos)
                << r.str;
        EXPECT_EQ(classify_redis_error(r.str).kind, RedisErrorKind::permanent) << c.what;
        for (const std::string &key : {kKeyDaily, kKeyMonthly, kBalance})
            EXPECT_EQ(incrbys(key, mark), c.writes) << c.what << " " << key;
        EXPECT_EQ(redis.data(), before) << c.what;  // no counter, record, deadline or expiry left behind
        EXPECT_FALSE(has(batch_record("req-1"))) << c.what;
        EXPECT_EQ(deadlines().size(), 1u) << c.what;
        EXPECT_EQ(at(kKeyDaily), "1000000005") << c.what;
        EXPECT_EQ(at(kBalance), "49000000000") << c.what;
        EXPECT_FALSE(redis.exists(kKeyMonthly)) << c.what;  // created, then deleted (or never)
        EXPECT_EQ(incrbys(org_life, mark), 0u) << c.what;
    }
    // Room again: the same reserve goes through.
    redis.set(kHeld, "9223372036854774000");
    ASSERT_EQ(reserve_ints(l, 1000, 7, "req-1")[0], 1);
    EXPECT_EQ(at(kHeld), "9223372036854775000");
    EXPECT_EQ(at(kKeyDaily), "1000001005");
    EXPECT_EQ(at(kBalance), "48999999000");
    EXPECT_EQ(at(kKeyMonthly), "1000");
    EXPECT_EQ(redis.expire_at(kKeyMonthly), kMonthExpire);
    EXPECT_EQ(at(org_life), "9223372036854775807");
}

TEST_F(LuaScripts, ASettlementThatCannotAddLeavesEverythingAsItWas) {
    use(policy_yaml("{ daily_usd: 100 }", "", std::string(kPrepaid) + "    limits: { daily_usd: 1000 }\n"));
    const Ledger l = ledger();
    const std::string org_life = P + "spend:org:acme:life";  // unchecked: written at settlement only
    const std::string org_daily = P + "spend:org:acme:d:2026-11-18";  // capped, after the key's
    ASSERT_EQ(l.counters[16].key, org_life);
    ASSERT_EQ(l.counters[14].key, org_daily);
    ASSERT_FALSE(checked(l, l.counters[16]));
    ASSERT_TRUE(checked(l, l.counters[14]));
    redis.set(kBalance, "50000000000");
    redis.set(org_life, "9223372036854775000");
    ASSERT_EQ(reserve_ints(l, 200, 0, "req-1")[0], 1);
    EXPECT_EQ(at(org_life), "9223372036854775000");  // untouched while in flight
    EXPECT_EQ(at(kKeyDaily), "200");
    EXPECT_EQ(at(org_daily), "200");
    auto before = redis.data();
    // Its real 900 would pass INT64_MAX: the key's and the org's daily
    // counters, changed before it, are taken back.
    Reply r = settle(l, {200, 0}, {900, 0}, "req-1");
    ASSERT_TRUE(r.is_error()) << r;
    EXPECT_EQ(r.str, "ERR increment or decrement would overflow");
    EXPECT_EQ(redis.data(), before);  // still reserved, not counted settled
    EXPECT_EQ(record("req-1", "req-1"), record_of(l, 200, 0));
    EXPECT_FALSE(redis.exists(P + "settlements"));
    EXPECT_EQ(deadlines().size(), 1u);
    EXPECT_FALSE(has(settled_marker("req-1")));
    EXPECT_EQ(settle(l, {200, 0}, {100, 0}, "req-1").integer, 1);
    EXPECT_EQ(at(org_life), "9223372036854775100");  // the real cost, once
    EXPECT_EQ(at(kKeyDaily), "100");
    EXPECT_EQ(at(org_daily), "100");
    EXPECT_EQ(at(kBalance), "49999999900");
    // Unreserved (its reserve never answered): the same.
    before = redis.data();
    r = settle(l, {500, 0}, {1000, 0}, "req-2", std::nullopt, false);
    ASSERT_TRUE(r.is_error()) << r;
    EXPECT_EQ(r.str, "ERR increment or decrement would overflow");
    EXPECT_EQ(redis.data(), before);
    redis.set(org_life, "abc");
    before = redis.data();
    r = settle(l, {500, 0}, {5, 0}, "req-2", std::nullopt, false);
    ASSERT_TRUE(r.is_error()) << r;
    EXPECT_EQ(r.str, "ERR value is not an integer or out of range");
    EXPECT_EQ(redis.data(), before);
    // A capped counter that cannot take the real cost (past its cap after
    // requests let through while Redis was away): the same.
    redis.set(org_life, "0");
    redis.set(org_daily, "9223372036854775000");
    before = redis.data();
    r = settle(l, {500, 0}, {1000, 0}, "req-2", std::nullopt, false);
    ASSERT_TRUE(r.is_error()) << r;
    EXPECT_EQ(r.str, "ERR increment or decrement would overflow");
    EXPECT_EQ(redis.data(), before);
    EXPECT_EQ(at(kKeyDaily), "100");
    EXPECT_FALSE(has(settled_marker("req-2")));
    EXPECT_FALSE(has(gone_marker("req-2")));
    EXPECT_EQ(settlements(), "1");  // req-1's only: the count is all or nothing with the counters
}

TEST_F(LuaScripts, UnderOomNothingIsWrittenAndTheSettlementLandsLater) {
    use(policy_yaml("{ daily_usd: 10, rpm: 100 }", "warn_at: [0.5]\n", kPrepaid));
    const Ledger l = ledger();
    redis.set(kBalance, "50000000000");
    ASSERT_EQ(reserve_ints(l, 3 * kUsd, 0, "req-1")[0], 1);
    redis.oom = true;
    const std::string oom = "OOM command not allowed when used memory > 'maxmemory'.";
    const auto before = redis.data();
    // Reserve: refused at its first write (the record).
    Reply r = reserve(l, kUsd, 0, "req-2");
    ASSERT_TRUE(r.is_error()) << r;
    EXPECT_EQ(r.str.rfind(oom, 0), 0u) << r.str;
    EXPECT_EQ(classify_redis_error(r.str).kind, RedisErrorKind::transient);
    EXPECT_EQ(redis.data(), before);
    // A refusal that would report a reached cap: refused at that marker
    // (or, were the marker's write allowed to fail, a plain refusal without
    // the event); nothing written either way.
    r = reserve(l, 8 * kUsd, 0, "req-3");
    if (r.is_error()) {
        EXPECT_EQ(r.str.rfind(oom, 0), 0u) << r.str;
    } else {
        EXPECT_EQ(parts_of(r), (std::vector<std::vector<long long>>{{0, 1, 3'000'000'000, 0}})) << r;
    }
    EXPECT_EQ(redis.data(), before);
    // Settle: refused at its first INCRBY, answered with Redis's own error.
    const std::vector<std::string> argv = settle_command(l, {3 * kUsd, 0}, {kUsd, 0}, "req-1", std::nullopt);
    r = lua.evalsha(argv);
    ASSERT_TRUE(r.is_error()) << r;
    EXPECT_EQ(r.str, oom);
    EXPECT_EQ(classify_redis_error(r.str).kind, RedisErrorKind::transient);
    EXPECT_EQ(redis.data(), before);
    // A settlement with nothing to add (its reserve never answered) is
    // refused at its first write, the count of settlements.
    r = settle(l, {kUsd, 0}, {0, 0, 0}, "req-4", std::nullopt, false);
    ASSERT_TRUE(r.is_error()) << r;
    EXPECT_EQ(r.str.rfind(oom, 0), 0u) << r.str;
    EXPECT_EQ(redis.data(), before);
    // Memory back: the same settlement lands, once.
    redis.oom = false;
    EXPECT_EQ(lua.evalsha(argv).integer, 1);  // (the OOM's send did nothing: still a first send)
    EXPECT_EQ(lua.evalsha(resent(argv)).integer, 0);
    EXPECT_EQ(at(kKeyDaily), "1000000000");
    EXPECT_EQ(at(kBalance), "49000000000");
    EXPECT_EQ(at(kHeld), "0");
    EXPECT_FALSE(redis.exists(keys::deadlines("acme")));
    EXPECT_EQ(settlements(), "1");
}

// Redis refuses only a script's first write. Giving a reservation back
// starts with one it never refuses (ZREM), so under maxmemory a reservation
// past its deadline still goes back whole; the reserve sent again after it
// is refused whole, as any reserve is then. Nothing is left half-done.
TEST_F(LuaScripts, UnderOomAReservationPastItsDeadlineStillGoesBackWhole) {
    use(policy_yaml("{ daily_usd: 10 }", ""));
    const Ledger l = ledger();
    ASSERT_EQ(reserve_ints(l, 6 * kUsd, 0, "req-0", false, 1)[0], 1);
    redis.set_now_ms(kNow * 1000 + 1);
    redis.oom = true;
    const Reply reply = reserve(l, 6 * kUsd, 0, "req-1");
    EXPECT_EQ(given_back_first, 1);
    ASSERT_TRUE(reply.is_error()) << reply;
    EXPECT_EQ(reply.str.rfind("OOM", 0), 0u) << reply.str;
    EXPECT_EQ(at(kKeyDaily), "0");
    EXPECT_FALSE(has(batch_record("req-0")));
    EXPECT_TRUE(has(released_marker("req-0")));
    EXPECT_FALSE(has(batch_record("req-1")));
    EXPECT_TRUE(deadlines().empty());
    redis.oom = false;
    EXPECT_EQ(reserve_ints(l, 6 * kUsd, 0, "req-1")[0], 1);
    EXPECT_EQ(at(kKeyDaily), "6000000000");
}


// ---------------------------------------------------------------------------
// The org's config version (records.h): the reserve script decides only
// against caps read at the version sc:{ORG}:config holds, else {3}.

TEST_F(LuaScripts, ReserveAtAnotherConfigVersionIsStaleAndWritesNothing) {
    use(policy_yaml("{ daily_usd: 10 }"));
    Ledger l = ledger();
    EXPECT_EQ(l.config_version, "");
    redis.set(P + "config", "5");
    const auto before = redis.data();
    const std::size_t logged = redis.log.size();
    const Reply stale = Reply::array({Reply::of_integer(3)});
    Reply r = reserve(l, kUsd);
    EXPECT_EQ(r, stale);
    EXPECT_EQ(decode_reserve_reply(l, {3}).kind, ReserveOutcome::Kind::stale);
    EXPECT_EQ(redis.data(), before);  // no counter, no record, no deadline
    EXPECT_FALSE(redis.exists(kKeyDaily));
    EXPECT_FALSE(has(batch_record("req-1")));
    EXPECT_TRUE(deadlines().empty());
    EXPECT_TRUE(events().empty());
    for (std::size_t i = logged; i < redis.log.size(); ++i)
        EXPECT_TRUE(redis.log[i][0] == "EXISTS" || redis.log[i][0] == "TIME" || redis.log[i][0] == "MGET"
                    || redis.log[i][0] == "ZSCORE")
            << redis.log[i][0];
    // A request the caps would refuse: still {3}, no spend_cap_reached.
    EXPECT_EQ(reserve(l, 11 * kUsd, 0, "req-2"), stale);
    EXPECT_TRUE(events().empty());
    EXPECT_EQ(redis.data(), before);
    // Another version than Redis's: stale too.
    l.config_version = "6";
    EXPECT_EQ(reserve(l, kUsd, 0, "req-3"), stale);
    EXPECT_EQ(redis.data(), before);

    // At Redis's version: reserved as usual.
    l.config_version = "5";
    const std::vector<long long> ok = reserve_ints(l, kUsd, 0, "req-4");
    ASSERT_FALSE(ok.empty());
    EXPECT_EQ(ok[0], 1);
    EXPECT_EQ(at(kKeyDaily), "1000000000");
    EXPECT_EQ(record("req-4", "req-4"), record_of(l, kUsd, 0));
    EXPECT_EQ(deadlines().size(), 1u);
    EXPECT_EQ(at(P + "config"), "5");  // the reserve never writes the version
}

TEST_F(LuaScripts, ReserveWithAVersionRedisNoLongerHoldsIsStale) {
    use(policy_yaml("{ daily_usd: 10 }"));
    Ledger l = ledger();
    l.config_version = "5";  // read at 5, but sc:{acme}:config is gone (a flushed Redis)
    const auto before = redis.data();
    EXPECT_EQ(reserve(l, kUsd), Reply::array({Reply::of_integer(3)}));
    EXPECT_EQ(redis.data(), before);
    l.config_version = "";
    EXPECT_EQ(reserve_ints(l, kUsd)[0], 1);
}

TEST_F(LuaScripts, BatchAtAnotherConfigVersionIsStaleForEveryRequest) {
    use(policy_yaml("{ daily_usd: 10 }"));
    Ledger l = ledger();
    l.config_version = "4";
    const auto shared = std::make_shared<const Ledger>(l);
    redis.set(P + "config", "5");
    const auto before = redis.data();
    const std::vector<ReserveItem> items{{shared, Amounts{kUsd, 0}, "req-a", false},
                                         {shared, Amounts{kUsd, 0}, "req-b", false}};
    const Reply r = reserve_batch(items, "req-a");
    EXPECT_EQ(r, Reply::array({Reply::of_integer(3)}));
    EXPECT_TRUE(split_reserve_reply({3}, 2).stale);
    EXPECT_EQ(redis.data(), before);
    redis.set(P + "config", "4");
    const Reply ok = reserve_batch(items, "req-a");
    ASSERT_EQ(parts_of(ok).size(), 2u) << ok;
    EXPECT_EQ(at(kKeyDaily), "2000000000");
}

// ---------------------------------------------------------------------------
// The management API's scripts (admin/ops_*.cpp), taken from the Commands its
// Operations send, run against the in-memory Redis as they are.


Fields fields_of(const Reply &r) {
    Fields out;
    EXPECT_EQ(r.type, Reply::Type::array) << r;
    for (std::size_t i = 0; i + 1 < r.elements.size(); i += 2) out.emplace_back(r.elements[i].str, r.elements[i + 1].str);
    return out;
}

class LuaScriptsAdmin : public ScriptTest {
protected:
    LuaScriptsAdmin() {
        lua.add_script(scripts::org_records().sha1, scripts::org_records().text);
        lua.add_script(scripts::hgetall().sha1, scripts::hgetall().text);
    }

    std::unique_ptr<admin::Operation> make(const char *method, const char *path, std::string body = "",
                                           const char *query = "", std::int64_t now = kNow) {
        admin::Routed routed = admin::route(method, path, query);
        EXPECT_TRUE(routed.route) << path << ": " << routed.error.message;
        return std::make_unique<admin::Operation>(*policy, routed.route.value_or(admin::Route{}), std::move(body),
                                                  now * 1000);
    }
    // One command as Redis runs it (its script behind the shim).
    Reply run(const Command &c) {
        EXPECT_NE(c.script, nullptr);
        EXPECT_EQ(c.argv.at(1), sha1_hex(*c.script));
        lua.add_script(c.argv.at(1), *c.script);
        return lua.evalsha(c.argv);
    }
    // Runs the operation to its answer; the commands' replies.
    std::vector<Reply> drive(admin::Operation &op) {
        std::vector<Reply> replies;
        std::optional<Command> c = op.start();
        for (int i = 0; c && i < 12; ++i) {
            replies.push_back(run(*c));
            c = op.next(replies.back());
        }
        EXPECT_FALSE(c) << "the operation did not finish";
        return replies;
    }
    admin::Response call(const char *method, const char *path, std::string body = "", const char *query = "") {
        auto op = make(method, path, std::move(body), query);
        drive(*op);
        last_change = op->change();
        return op->response();
    }
    std::string last_change;
    // The audit events (without the reserve's spend_cap_* ones).
    std::vector<Event> audit_events() {
        std::vector<Event> out;
        for (const Event &e : events())
            if (e.size() < 2 || e[1].rfind("spend_cap_", 0) != 0) out.push_back(e);
        return out;
    }

    // What the request path reads, through the real read scripts.
    std::optional<KeyLookup> read_lookup(const std::string &sha) {
        const Reply r = lua.evalsha(key_lookup_command(sha).argv);
        return parse_key_lookup(fields_of(r));
    }
    OrgRecords read_records(const std::string &key_id, const std::string &project = "p",
                            const std::string &customer = "") {
        const Reply r = lua.evalsha(org_records_command("acme", key_id, project, customer).argv);
        OrgRecords records;
        EXPECT_EQ(r.type, Reply::Type::array) << r;
        EXPECT_EQ(r.elements.size(), 5u) << r;
        if (r.type != Reply::Type::array || r.elements.size() != 5) return records;
        EXPECT_EQ(r.elements[0].type, Reply::Type::string) << r;
        records.version = r.elements[0].str;
        records.key = fields_of(r.elements[1]);
        records.project = fields_of(r.elements[2]);
        records.org = fields_of(r.elements[3]);
        records.customer = fields_of(r.elements[4]);
        return records;
    }
    Resolution resolve_file(const std::string &presented, std::int64_t now = kNow) {
        return resolve_identity(*policy, presented, policy->find_key(kHash), std::nullopt, "", read_records("k1"),
                                now * 1000);
    }
    static std::string json_field(const std::string &body, const std::string &name) {
        // "name":"value" in a flat answer
        const std::string tag = "\"" + name + "\":\"";
        const std::size_t at = body.find(tag);
        if (at == std::string::npos) return "";
        const std::size_t end = body.find('"', at + tag.size());
        return body.substr(at + tag.size(), end - at - tag.size());
    }
};

TEST_F(LuaScriptsAdmin, OrgRecordsReadsTheVersionAndEveryRecord) {
    use(policy_yaml("{ daily_usd: 10 }"));
    OrgRecords r = read_records("k1", "p", "c1");
    EXPECT_EQ(r.version, "");
    EXPECT_TRUE(r.key.empty());
    EXPECT_TRUE(r.project.empty());
    EXPECT_TRUE(r.org.empty());
    EXPECT_TRUE(r.customer.empty());
    redis.set(P + "config", "9");
    redis.hset(P + "key:k1", "revoked", "1");
    redis.hset(P + "project:p", "limits", "{}");
    redis.hset(P + "org", "prepaid", "1");
    redis.hset(P + "customer:c1", "limits", R"({"rpm":2})");
    r = read_records("k1", "p", "c1");
    EXPECT_EQ(r.version, "9");
    EXPECT_EQ(r.key, (Fields{{"revoked", "1"}}));
    EXPECT_EQ(r.project, (Fields{{"limits", "{}"}}));
    EXPECT_EQ(r.org, (Fields{{"prepaid", "1"}}));
    EXPECT_EQ(r.customer, (Fields{{"limits", R"({"rpm":2})"}}));
    // Without a customer: an empty fifth element.
    r = read_records("k1", "p", "");
    EXPECT_TRUE(r.customer.empty());
    EXPECT_EQ(r.key, (Fields{{"revoked", "1"}}));
}

TEST_F(LuaScriptsAdmin, ListsAndDailyUsageReadWhatTheCallsWrote) {
    use(policy_yaml("{ daily_usd: 10 }"));
    EXPECT_EQ(call("PUT", "/orgs/newco", R"({"limits":{"daily_usd":"1"}})").status, 201);
    EXPECT_EQ(call("PUT", "/projects/np", R"({"org":"newco"})").status, 201);
    EXPECT_EQ(call("PUT", "/projects/ap", R"({"org":"acme"})").status, 201);
    EXPECT_EQ(call("PUT", "/orgs/acme/cleared", R"({"cleared_usd":"2"})").status, 200);

    admin::Response orgs = call("GET", "/orgs");
    EXPECT_EQ(orgs.status, 200) << orgs.body;
    EXPECT_EQ(orgs.body.find(R"({"orgs":[{"id":"acme",)"), 0u) << orgs.body;
    EXPECT_NE(orgs.body.find(R"("cleared_nanousd":2000000000)"), std::string::npos) << orgs.body;
    EXPECT_NE(orgs.body.find(R"({"id":"newco",)"), std::string::npos) << orgs.body;
    EXPECT_EQ(orgs.body, R"({"orgs":[)" + call("GET", "/orgs/acme").body + "," + call("GET", "/orgs/newco").body +
                             "]}");

    admin::Response projects = call("GET", "/projects", "", "org=acme");
    EXPECT_EQ(projects.body, R"({"projects":[)" + call("GET", "/projects/ap").body + "," +
                                 call("GET", "/projects/p").body + "]}");
    EXPECT_EQ(call("GET", "/projects", "", "org=newco").body,
              R"({"projects":[{"id":"np","org":"newco","limits":{},"source":"api"}]})");

    // kNow's day and the one before, seeded; the day before that has nothing
    const std::string today = periods_at(kNow).day;
    const std::vector<std::string> days = admin::recent_days(today, 3);
    redis.set(P + "spend:project:p:d:" + days[1], "1500000000");
    redis.set(P + "reqs:project:p:d:" + days[1], "3");
    redis.set(P + "tokens:project:p:d:" + today, "42");
    admin::Response daily = call("GET", "/projects/p/usage/daily", "", "days=3&format=csv");
    EXPECT_EQ(daily.status, 200);
    EXPECT_EQ(daily.content_type, "text/csv; charset=utf-8");
    EXPECT_EQ(daily.body, "date,spent_usd,spent_nanousd,requests,tokens\n" + days[0] + ",0.00,0,0,0\n" + days[1] +
                              ",1.50,1500000000,3,0\n" + today + ",0.00,0,0,42\n");
}

TEST_F(LuaScriptsAdmin, ApplyAbsentOnAnExistingRecordChangesNothing) {
    use(policy_yaml("{ daily_usd: 10 }"));
    auto op = make("POST", "/keys", R"({"project":"p","id":"key_x"})");
    std::optional<Command> c = op->start();
    ASSERT_TRUE(c);
    const std::string lookup_key = c->argv.at(3);
    EXPECT_EQ(run(*c).integer, 1);  // the global steps, each in its slot: the secret's lookup
    EXPECT_EQ(redis.hash(lookup_key), (std::map<std::string, std::string>{
                                          {"id", "key_x"}, {"org", "acme"}, {"project", "p"}}));
    c = op->next(Reply::of_integer(1));
    ASSERT_TRUE(c);
    EXPECT_EQ(run(*c).integer, 1);  // and the id, free
    EXPECT_EQ(at("sc:keyid:key_x"), "acme");
    c = op->next(Reply::of_integer(1));
    ASSERT_TRUE(c);
    // Someone holds a record of that id in the org.
    redis.hset(P + "key:key_x", "source", "api");
    redis.set(P + "config", "3");
    const auto before = redis.data();
    const Reply r = run(*c);
    EXPECT_EQ(r, Reply::of_integer(0));
    EXPECT_EQ(redis.data(), before);  // no field, no version, no event, no set member
    EXPECT_TRUE(events().empty());
    // The operation gives the new secret's lookup back, then answers 409.
    c = op->next(r);
    ASSERT_TRUE(c);
    run(*c);
    EXPECT_FALSE(redis.exists(lookup_key));
    EXPECT_FALSE(op->next(Reply::of_integer(1)));
    EXPECT_EQ(op->response().status, 409);
    EXPECT_EQ(redis.hash(P + "key:key_x"), (std::map<std::string, std::string>{{"source", "api"}}));
}

TEST_F(LuaScriptsAdmin, CreatedKeyIsFoundByItsSecretAndCapped) {
    use(policy_yaml("{ daily_usd: 10 }"));
    const admin::Response created =
        call("POST", "/keys", R"({"project":"p","id":"key_x","limits":{"daily_usd":"2"}})");
    ASSERT_EQ(created.status, 201) << created.body;
    EXPECT_EQ(last_change, "key_created key_x");
    const std::string secret = json_field(created.body, "secret");
    ASSERT_EQ(secret.rfind("sk-sc-", 0), 0u) << created.body;
    const std::string sha = sha256_hex(secret);
    EXPECT_EQ(at("sc:keyid:key_x"), "acme");
    EXPECT_EQ(at(P + "config"), "1");
    EXPECT_EQ(redis.members(P + "keys").count("key_x"), 1u);  // the org's set of API keys
    const auto record = redis.hash(P + "key:key_x");
    EXPECT_EQ(record.at("source"), "api");
    EXPECT_EQ(record.at("sha256"), sha);
    EXPECT_EQ(record.at("project"), "p");
    EXPECT_EQ(record.at("revoked"), "0");
    EXPECT_EQ(record.at("created_at"), std::to_string(kNow));
    EXPECT_EQ(record.at("limits"), R"({"daily_usd":"2.00"})");
    EXPECT_EQ(events(), (std::vector<Event>{{"type", "key_created", "id", "key_x", "project", "p", "by", "api"}}));
    EXPECT_EQ(redis.trims[kEvents], "MAXLEN ~ 10000");

    // The request path: the lookup, the records, the identity, the ledger.
    const std::optional<KeyLookup> lookup = read_lookup(sha);
    ASSERT_TRUE(lookup);
    EXPECT_EQ(lookup->id, "key_x");
    EXPECT_EQ(lookup->org, "acme");
    const Resolution found =
        resolve_identity(*policy, sha, nullptr, lookup, "", read_records("key_x", lookup->project), kNow * 1000);
    ASSERT_EQ(found.problem, IdentityProblem::none) << found.reason;
    EXPECT_EQ(found.identity->version, "1");
    EXPECT_EQ(found.identity->key.limits.daily_usd, 2 * kUsd);
    const Ledger l = ledger_for(*policy, *found.identity, periods_at(kNow));
    EXPECT_EQ(l.config_version, "1");
    std::vector<long long> r = reserve_ints(l, 3 * kUsd, 0, "req-1");
    ASSERT_FALSE(r.empty());
    EXPECT_EQ(r[0], 0);  // over its own cap
    EXPECT_EQ(label_of(l, decode_reserve_reply(l, r)), "key:daily");
    r = reserve_ints(l, kUsd, 0, "req-2");
    ASSERT_FALSE(r.empty());
    EXPECT_EQ(r[0], 1);
    EXPECT_EQ(at(P + "spend:key:key_x:d:2026-11-18"), "1000000000");

    // The same id again: 409, nothing more written.
    const admin::Response again = call("POST", "/keys", R"({"project":"p","id":"key_x"})");
    EXPECT_EQ(again.status, 409);
    EXPECT_EQ(at(P + "config"), "1");
    EXPECT_EQ(audit_events().size(), 1u);
}

TEST_F(LuaScriptsAdmin, ApplyAnySetsAndDeletesFieldsBumpsTheVersionAndAppendsOneEvent) {
    use(policy_yaml("{ daily_usd: 10 }"));
    const Ledger before_change = ledger();  // the file's, version ""
    redis.set(P + "config", "4");
    redis.hset(P + "key:k1", "limits", R"({"rpm":1})");
    redis.hset(P + "key:k1", "source", "file");
    redis.hset(P + "key:k1", "name", "old");

    admin::Response r = call("DELETE", "/keys/k1/limits");
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(last_change, "key_limits_delete k1");
    EXPECT_EQ(redis.hash(P + "key:k1"), (std::map<std::string, std::string>{{"name", "old"}, {"source", "file"}}));
    EXPECT_EQ(at(P + "config"), "5");
    // the event names the limits now in force: the file's
    EXPECT_EQ(events(), (std::vector<Event>{{"type", "limits_changed", "scope", "key", "id", "k1", "limits",
                                             R"({"daily_usd":"10.00"})", "by", "api"}}));

    // Deleted again: nothing to delete, so no version bump, no event, nothing to log.
    last_change.clear();
    r = call("DELETE", "/keys/k1/limits");
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(last_change, "");
    EXPECT_EQ(at(P + "config"), "5");
    EXPECT_EQ(events().size(), 1u);

    r = call("PUT", "/keys/k1/limits", R"({"daily_usd":"0.5"})");
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(redis.hash(P + "key:k1"),
              (std::map<std::string, std::string>{
                  {"name", "old"}, {"source", "file"}, {"limits", R"({"daily_usd":"0.50"})"}}));
    EXPECT_EQ(at(P + "config"), "6");
    EXPECT_EQ(events().size(), 2u);
    EXPECT_EQ(events().back(), (Event{"type", "limits_changed", "scope", "key", "id", "k1", "limits",
                                      R"({"daily_usd":"0.50"})", "by", "api"}));

    // The worker's ledger from before is refused; read again, the new cap holds.
    EXPECT_EQ(reserve(before_change, kUsd), Reply::array({Reply::of_integer(3)}));
    EXPECT_FALSE(redis.exists(kKeyDaily));
    const Resolution found = resolve_file(kHash);
    ASSERT_EQ(found.problem, IdentityProblem::none) << found.reason;
    EXPECT_EQ(found.identity->version, "6");
    const Ledger l = ledger_for(*policy, *found.identity, periods_at(kNow));
    std::vector<long long> out = reserve_ints(l, kUsd, 0, "req-2");
    ASSERT_FALSE(out.empty());
    EXPECT_EQ(out[0], 0);
    EXPECT_EQ(label_of(l, decode_reserve_reply(l, out)), "key:daily");
    out = reserve_ints(l, kUsd / 4, 0, "req-3");
    ASSERT_FALSE(out.empty());
    EXPECT_EQ(out[0], 1);

    // A revocation: one more field, version, event; the key is refused.
    r = call("DELETE", "/keys/k1");
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_NE(r.body.find("\"revoked\":true"), std::string::npos) << r.body;
    EXPECT_EQ(redis.hash(P + "key:k1").at("revoked"), "1");
    EXPECT_EQ(at(P + "config"), "7");
    EXPECT_EQ(audit_events().size(), 3u);
    EXPECT_EQ(audit_events().back(), (Event{"type", "key_revoked", "id", "k1", "by", "api"}));
    EXPECT_EQ(reserve(l, kUsd / 4, 0, "req-4"), Reply::array({Reply::of_integer(3)}));
    EXPECT_EQ(resolve_file(kHash).problem, IdentityProblem::revoked);
}

TEST_F(LuaScriptsAdmin, ApplyExistsOnAMissingRecordChangesNothing) {
    use(policy_yaml("{ daily_usd: 10 }"));
    redis.set("sc:keyid:key_gone", "acme");  // indexed, but no record
    const auto before = redis.data();
    const admin::Response r = call("DELETE", "/keys/key_gone");
    EXPECT_EQ(r.status, 404) << r.body;
    EXPECT_EQ(redis.data(), before);
    EXPECT_TRUE(events().empty());
}

TEST_F(LuaScriptsAdmin, TopupCreditsOncePerIdempotencyKey) {
    use(policy_yaml("", "", kPrepaid));
    redis.set(kBalance, "5000");
    const std::string body = R"({"amount_usd":"0.000001","idempotency_key":"t-1"})";
    admin::Response r = call("POST", "/orgs/acme/topups", body);
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_NE(r.body.find("\"applied\":true"), std::string::npos) << r.body;
    EXPECT_NE(r.body.find("\"balance_nanousd\":6000"), std::string::npos) << r.body;
    EXPECT_EQ(last_change, "topup acme");
    EXPECT_EQ(at(kBalance), "6000");
    const std::string marker = P + "topup:" + sha256_hex("t-1");
    EXPECT_EQ(at(marker), "1000 6000 0");  // amount, balance (reservations drawn), held
    EXPECT_EQ(expire_at(marker), kNow + 34560000);
    EXPECT_EQ(events(), (std::vector<Event>{{"type", "topup", "amount_nanousd", "1000", "idempotency_key", "t-1",
                                             "balance_nanousd", "6000", "by", "api"}}));

    // The same key again: the first answer, applied false, nothing credited.
    r = call("POST", "/orgs/acme/topups", body);
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_NE(r.body.find("\"applied\":false"), std::string::npos) << r.body;
    EXPECT_NE(r.body.find("\"balance_nanousd\":6000"), std::string::npos) << r.body;
    EXPECT_EQ(last_change, "");
    EXPECT_EQ(at(kBalance), "6000");
    EXPECT_EQ(events().size(), 1u);

    // Another amount under that key: 409, nothing credited.
    r = call("POST", "/orgs/acme/topups", R"({"amount_usd":"1","idempotency_key":"t-1"})");
    EXPECT_EQ(r.status, 409) << r.body;
    EXPECT_EQ(at(kBalance), "6000");
    EXPECT_EQ(events().size(), 1u);

    // Another key: credited.
    r = call("POST", "/orgs/acme/topups", R"({"amount_usd":"0.000001","idempotency_key":"t-2"})");
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(at(kBalance), "7000");
    EXPECT_EQ(events().size(), 2u);
}

TEST_F(LuaScriptsAdmin, TopupThatWouldOverflowTheBalanceDoesNothing) {
    use(policy_yaml("", "", kPrepaid));
    redis.set(kBalance, "9223372036854775000");
    const admin::Response r =
        call("POST", "/orgs/acme/topups", R"({"amount_usd":"0.000001","idempotency_key":"big"})");
    // No retry can help: 400, naming why (SPEC section 7), not 503.
    EXPECT_EQ(r.status, 400) << r.body;
    EXPECT_NE(r.body.find("past the largest amount"), std::string::npos) << r.body;
    EXPECT_EQ(at(kBalance), "9223372036854775000");
    EXPECT_FALSE(redis.exists(P + "topup:" + sha256_hex("big")));
    EXPECT_TRUE(events().empty());
}

TEST_F(LuaScriptsAdmin, RotatedFileKeyTakesTheOldSecretOnlyWithinTheGrace) {
    use(policy_yaml("{ daily_usd: 10 }"));
    const admin::Response r = call("POST", "/keys/k1/rotate", R"({"grace_seconds":60})");
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(last_change, "key_rotated k1");
    const std::string secret = json_field(r.body, "secret");
    ASSERT_EQ(secret.rfind("sk-sc-", 0), 0u) << r.body;
    const std::string sha = sha256_hex(secret);
    EXPECT_EQ(redis.hash(P + "key:k1"),
              (std::map<std::string, std::string>{{"old_sha256", kHash},
                                                  {"old_until", std::to_string(kNow + 60)},
                                                  {"old_until_ms", std::to_string((kNow + 60) * 1000)},
                                                  {"sha256", sha},
                                                  {"source", "file"}}));
    EXPECT_EQ(at(P + "config"), "1");
    EXPECT_EQ(events(), (std::vector<Event>{{"type", "key_rotated", "id", "k1", "grace_seconds", "60", "by", "api"}}));
    const std::optional<KeyLookup> lookup = read_lookup(sha);
    ASSERT_TRUE(lookup);
    EXPECT_EQ(lookup->id, "k1");
    EXPECT_EQ(lookup->project, "p");

    // The file's secret: within the grace, then refused.
    EXPECT_EQ(resolve_file(kHash, kNow + 59).problem, IdentityProblem::none);
    EXPECT_EQ(resolve_file(kHash, kNow + 60).problem, IdentityProblem::unknown);
    // The new one, found through its lookup.
    const Resolution fresh = resolve_identity(*policy, sha, nullptr, lookup, "", read_records("k1"), (kNow + 3600) * 1000);
    EXPECT_EQ(fresh.problem, IdentityProblem::none) << fresh.reason;

    // A second rotation: the first new secret becomes the old one.
    const admin::Response second = call("POST", "/keys/k1/rotate", "");
    ASSERT_EQ(second.status, 200) << second.body;
    EXPECT_EQ(redis.hash(P + "key:k1").at("old_sha256"), sha);
    EXPECT_EQ(redis.hash(P + "key:k1").at("old_until"), std::to_string(kNow));
    EXPECT_EQ(at(P + "config"), "2");
}

// A rotated file key's new secret keeps the file's key limits (daily_usd 10
// here): the reserve refuses it past its cap. See
// RecordsTest.RotatedFileKeysNewSecretKeepsTheFilesLimits.
TEST_F(LuaScriptsAdmin, RotatedFileKeysNewSecretStaysCappedByTheFile) {
    use(policy_yaml("{ daily_usd: 10 }"));
    const admin::Response r = call("POST", "/keys/k1/rotate", "");
    ASSERT_EQ(r.status, 200) << r.body;
    const std::string sha = sha256_hex(json_field(r.body, "secret"));
    const std::optional<KeyLookup> lookup = read_lookup(sha);
    ASSERT_TRUE(lookup);
    const Resolution fresh = resolve_identity(*policy, sha, nullptr, lookup, "", read_records("k1"), kNow * 1000);
    ASSERT_EQ(fresh.problem, IdentityProblem::none) << fresh.reason;
    const Ledger l = ledger_for(*policy, *fresh.identity, periods_at(kNow));
    const std::vector<long long> out = reserve_ints(l, 11 * kUsd);
    ASSERT_FALSE(out.empty());
    EXPECT_EQ(out[0], 0) << "an 11 USD request passed the key's 10 USD daily cap";
}

}  // namespace
}  // namespace spendcap
