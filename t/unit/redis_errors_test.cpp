// classify_redis_error: whether an error reply to a command that must land
// means "send it again later", "load the script, then send it again" or
// "never".
#include "redis/errors.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace spendcap {
namespace {

struct Case {
    const char *message;
    RedisErrorKind kind;
    bool reconnect;
};

const char *kind_name(RedisErrorKind kind) {
    switch (kind) {
    case RedisErrorKind::transient: return "transient";
    case RedisErrorKind::script_missing: return "script_missing";
    case RedisErrorKind::permanent: return "permanent";
    }
    return "?";
}

void expect(const std::vector<Case> &cases) {
    for (const Case &c : cases) {
        const RedisErrorClass got = classify_redis_error(c.message);
        EXPECT_STREQ(kind_name(got.kind), kind_name(c.kind)) << '"' << c.message << '"';
        EXPECT_EQ(got.reconnect, c.reconnect) << '"' << c.message << '"';
    }
}

TEST(ClassifyRedisError, ServersThatCannotRunItNowAreTransient) {
    expect({
        {"LOADING Redis is loading the dataset in memory", RedisErrorKind::transient, false},
        {"BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
         RedisErrorKind::transient, false},
        {"OOM command not allowed when used memory > 'maxmemory'.", RedisErrorKind::transient, false},
        // Redis 7 keeps the code of an error raised inside a script.
        {"OOM command not allowed when used memory > 'maxmemory'. script: f_0123, on @user_script:210.",
         RedisErrorKind::transient, false},
        {"MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
         RedisErrorKind::transient, false},
        {"TRYAGAIN Multiple keys request during rehashing of slot", RedisErrorKind::transient, false},
        {"CLUSTERDOWN The cluster is down", RedisErrorKind::transient, false},
        {"MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.",
         RedisErrorKind::transient, false},
        {"NOREPLICAS Not enough good replicas to write.", RedisErrorKind::transient, false},
        {"LOADING", RedisErrorKind::transient, false},  // the code alone
    });
}

TEST(ClassifyRedisError, AStaleConnectionIsTransientAfterAReconnect) {
    expect({
        {"READONLY You can't write against a read only replica.", RedisErrorKind::transient, true},
        {"NOAUTH Authentication required.", RedisErrorKind::transient, true},
        {"ERR max number of clients reached", RedisErrorKind::transient, true},
    });
}

TEST(ClassifyRedisError, NoScriptMeansLoadIt) {
    expect({
        {"NOSCRIPT No matching script. Please use EVAL.", RedisErrorKind::script_missing, false},
        {"NOSCRIPT", RedisErrorKind::script_missing, false},
    });
}

TEST(ClassifyRedisError, EverythingElseIsPermanent) {
    expect({
        {"ERR Error running script (call to f_0123): @user_script:35: spend-cap: k does not hold an integer",
         RedisErrorKind::permanent, false},
        {"ERR user_script:35: spend-cap: k does not hold an integer script: f_0123, on @user_script:35.",
         RedisErrorKind::permanent, false},
        {"WRONGTYPE Operation against a key holding the wrong kind of value", RedisErrorKind::permanent, false},
        // a client of one Redis meeting a Cluster's slot of another node
        {"MOVED 3999 127.0.0.1:6381", RedisErrorKind::permanent, false},
        {"ASK 3999 127.0.0.1:6381", RedisErrorKind::permanent, false},
        {"ERR increment or decrement would overflow", RedisErrorKind::permanent, false},
        {"ERR value is not an integer or out of range", RedisErrorKind::permanent, false},
        {"ERR unknown command 'EVALSHA'", RedisErrorKind::permanent, false},
        {"", RedisErrorKind::permanent, false},
        {" ", RedisErrorKind::permanent, false},
        {"\x01\xff garbage", RedisErrorKind::permanent, false},
        {"garbage", RedisErrorKind::permanent, false},
        // A code is the whole first word, in capitals.
        {"LOADINGX dataset", RedisErrorKind::permanent, false},
        {"OOMKILLER", RedisErrorKind::permanent, false},
        {"BUSYKEY Target key name already exists.", RedisErrorKind::permanent, false},
        {"oom command not allowed", RedisErrorKind::permanent, false},
        {" OOM command not allowed", RedisErrorKind::permanent, false},
        {"NOSCRIPTS", RedisErrorKind::permanent, false},
        // "max number of clients" only as the whole ERR message's start.
        {"ERR max number of client", RedisErrorKind::permanent, false},
        {"ERR something: max number of clients reached", RedisErrorKind::permanent, false},
    });
}

TEST(ClassifyRedisError, NeverReadsPastTheMessage) {
    const std::string buffer = "OOM and more";
    EXPECT_EQ(classify_redis_error(std::string_view(buffer.data(), 3)).kind, RedisErrorKind::transient);
    EXPECT_EQ(classify_redis_error(std::string_view(buffer.data(), 2)).kind, RedisErrorKind::permanent);
    EXPECT_EQ(classify_redis_error(std::string_view()).kind, RedisErrorKind::permanent);
}

}  // namespace
}  // namespace spendcap

TEST(ClassifyRedisError, AClusterChangingShapeIsSaid) {
    for (const char *e : {"TRYAGAIN Multiple keys request during rehashing of slot", "CLUSTERDOWN The cluster is down",
                          "CLUSTERDOWN Hash slot not served"}) {
        EXPECT_TRUE(spendcap::classify_redis_error(e).cluster_changing) << e;
    }
    for (const char *e : {"LOADING x", "READONLY x", "MOVED 1 h:1", "ASK 1 h:1", "ERR x"}) {
        EXPECT_FALSE(spendcap::classify_redis_error(e).cluster_changing) << e;
    }
}
