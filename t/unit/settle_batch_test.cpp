// The settle script run on a batch of requests of one org
// (settle_batch_command), in the embedded Lua 5.1 against the in-memory
// Redis of fake_redis_lua.h: a batch ends exactly as its requests settled
// one by one, writes each counter once with the batch's sum, mixes reserved,
// released and never reserved requests, lands whole or not at all (a resend,
// a partly settled batch, an overflow, OOM), and warns when the batch's sum
// crosses a threshold.
#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <optional>
#include <set>
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

// The key's daily spend, requests and tokens, its rates, the project's
// monthly spend checked; every other counter only counted. Prepaid.
const std::string kCapped = "{ daily_usd: 10, daily_requests: 50, daily_tokens: 5000, rpm: 100, tpm: 100000 }";
const std::string kProjectCap = "{ monthly_usd: 50 }";
const std::string kRpm = P + "rate:key:k1:rpm:2026-11-18T11:06";
const std::string kTpm = P + "rate:key:k1:tpm:2026-11-18T11:06";
const std::string kPartly = "ERR spend-cap: a settlement batch found partly settled";

// A second Redis with the scripts loaded, to compare with the fixture's.
struct World {
    FakeRedis redis;
    LuaRunner lua{redis};
    World() {
        redis.now = kNow;
        ScriptTest::load_scripts(lua);
    }
};

// One request of a test: its id, what it reserved (or would have) and what
// it really used; whether Redis answered its reserve (false: a fail-open
// request, its reserve timed out or was never sent) and its reserve's batch
// ("" = its own id, as reserve_command makes it).
struct Req {
    std::string rid;
    Amounts estimate;
    Amounts real;
    bool answered = true;
    std::string batch = "";
};

// A fail-open request: its reserve never sent, so no batch.
Req fail_open_req(std::string rid, Amounts estimate, Amounts real) {
    return Req{std::move(rid), estimate, real, false, ""};
}

std::string batch_of(const Req &r) { return r.batch.empty() && r.answered ? r.rid : r.batch; }

SettleItem item_of(const Ledger &l, const Req &r, const std::optional<Nanos> &ceiling_cap = std::nullopt) {
    return SettleItem{std::make_shared<const Ledger>(l), r.estimate, r.real, r.rid, ceiling_cap, batch_of(r),
                      r.answered};
}

std::vector<SettleItem> items_of(const Ledger &l, const std::vector<Req> &reqs) {
    std::vector<SettleItem> items;
    for (const Req &r : reqs) items.push_back(item_of(l, r));
    return items;
}

// What a request's real amounts add to a spend, request, token or balance counter.
std::int64_t real_of(CounterKind kind, const Amounts &a) {
    switch (kind) {
    case CounterKind::spend: return a.cost;
    case CounterKind::requests: return a.requests;
    case CounterKind::tokens: return a.tokens;
    case CounterKind::balance: return -a.cost;
    default: return 0;
    }
}

bool is_rate(CounterKind kind) { return kind == CounterKind::rpm || kind == CounterKind::tpm; }

class SettleBatch : public ScriptTest {
protected:
    // The batch's argv, sent.
    Reply settle_batch(const std::vector<SettleItem> &items) {
        const std::vector<std::string> argv = settle_batch_command(items);
        EXPECT_FALSE(argv.empty());
        std::vector<std::string> rids;
        for (const SettleItem &item : items) rids.push_back(item.request_id);
        return send_settlement(argv, rids);
    }

    static bool reserve_in(LuaRunner &runner, const Ledger &l, const Req &r,
                           std::int64_t ttl_ms = kDefaultReservationTtlMs) {
        const Reply reply = runner.evalsha(reserve_command(l, r.estimate, r.rid, false, ttl_ms));
        const auto ints = part_of(reply);
        return parts_of(reply).size() == 1 && ints && !ints->empty() && (*ints)[0] == 1;
    }

    // Each request settled: no field in its batch's record (here every
    // batch's record is gone, and with it every deadline), no released
    // marker; a marker for a day only for one whose reserve was not answered.
    void expect_settled(const std::vector<Req> &reqs) {
        for (const Req &r : reqs) {
            if (r.answered) {
                EXPECT_FALSE(has(settled_marker(r.rid))) << r.rid;
            } else {
                EXPECT_EQ(at(settled_marker(r.rid)), "1") << r.rid;
                EXPECT_EQ(expire_at(settled_marker(r.rid)), kNow + 86400) << r.rid;
            }
            EXPECT_FALSE(has(released_marker(r.rid))) << r.rid;
            if (!batch_of(r).empty()) EXPECT_FALSE(redis.exists(P + "resv:" + batch_of(r))) << r.rid;
        }
        EXPECT_TRUE(deadlines().empty());
    }

    // None of them settled: no marker, and the reservations still recorded
    // (each request a batch of its own).
    void expect_unsettled(const std::vector<Req> &reqs) {
        for (const Req &r : reqs) {
            EXPECT_FALSE(has(settled_marker(r.rid))) << r.rid;
            EXPECT_TRUE(record(batch_of(r)).count(r.rid)) << r.rid;
        }
        EXPECT_EQ(deadlines().size(), reqs.size());
    }

    // Every key in `keys` INCRBY'd at most once since `mark`; the counters
    // whose value changed exactly once, the others not at all.
    void expect_each_written_once(const std::set<std::string> &keys, const std::map<std::string, FakeRedis::Value> &was,
                                  std::size_t mark) {
        const auto now = redis.data();
        for (const std::string &key : keys) {
            const auto a = was.find(key), b = now.find(key);
            const bool changed = (a == was.end()) != (b == now.end()) ||
                                 (a != was.end() && b != now.end() && a->second.str != b->second.str);
            EXPECT_EQ(incrbys(key, mark), changed ? 1u : 0u) << key;
        }
    }

    static std::set<std::string> keys_of(const std::vector<Ledger> &ledgers) {
        std::set<std::string> keys;
        for (const Ledger &l : ledgers)
            for (const Counter &c : l.counters) keys.insert(c.key);
        return keys;
    }
};

// ---------------------------------------------------------------------------
// A batch is its requests settled one by one, in one call, each counter written once.

TEST_F(SettleBatch, ThreeRequestsInOneBatchEndAsTheThreeSettledOneByOne) {
    use(policy_yaml(kCapped, "warn_at: [0.5]\n", kPrepaid, kProjectCap));
    const Ledger l = ledger();
    const std::vector<Req> reqs = {{"req-1", {2 * kUsd, 400}, {kUsd, 120}},
                                   {"req-2", {2 * kUsd, 300}, {kUsd / 2, 300}},
                                   {"req-3", {2 * kUsd, 100}, {3 * kUsd / 2, 150}}};  // more tokens than reserved
    World one_by_one;
    for (FakeRedis *r : {&redis, &one_by_one.redis}) {
        preset_into(*r, l);
        r->command({"DEL", P + "spend:key:k1:m:2026-11"});  // one unchecked counter the settlement creates
    }
    for (const Req &r : reqs) {
        ASSERT_TRUE(reserve_in(lua, l, r)) << r.rid;
        ASSERT_TRUE(reserve_in(one_by_one.lua, l, r)) << r.rid;
    }
    // The second reservation took the key's daily spend (1 + 4 USD) to half its cap.
    ASSERT_EQ(events(), (std::vector<Event>{warning("key", "k1", "daily", "2026-11-18", "0.5", "5000000000",
                                                    "10000000000")}));
    ASSERT_EQ(redis.data(), one_by_one.redis.data());

    // Early in the day, where no forecast is made: one by one, the
    // settlements see the others' reservations still held and could forecast
    // where the batch does not.
    redis.now = one_by_one.redis.now = kNow - 39000;
    const std::size_t mark_one = one_by_one.redis.log.size();
    for (const Req &r : reqs)
        EXPECT_EQ(one_by_one.lua.evalsha(settle_command(l, r.estimate, r.real, r.rid, std::nullopt)).integer, 1)
            << r.rid;
    const auto was = redis.data();
    const std::size_t mark = redis.log.size();
    const Reply reply = settle_batch(items_of(l, reqs));
    ASSERT_EQ(reply.type, Reply::Type::integer) << reply;
    EXPECT_EQ(reply.integer, 1);

    // Everything alike: counters (and the expiry of the one created), markers
    // and their expiry, records gone, the deadlines' set gone, the events.
    EXPECT_EQ(redis.data(), one_by_one.redis.data());
    EXPECT_EQ(events(), one_by_one.redis.events(kEvents));
    expect_settled(reqs);
    EXPECT_FALSE(redis.exists(keys::deadlines("acme")));
    EXPECT_EQ(settlements(), "3");
    expect_counters(l,
                    [&](const Counter &c) {
                        switch (c.kind) {
                        case CounterKind::spend:
                            return c.key == kKeyMonthly ? std::string("3000000000") : plus(preset_value(c), 3 * kUsd);
                        case CounterKind::requests:
                        case CounterKind::rpm: return plus(preset_value(c), 3);
                        case CounterKind::tokens:
                        case CounterKind::tpm: return plus(preset_value(c), 570);
                        case CounterKind::balance: return plus(preset_value(c), -3 * kUsd);
                        case CounterKind::held: return preset_value(c);
                        }
                        return std::string();
                    },
                    "after the batch");
    EXPECT_EQ(redis.expire_at(kKeyMonthly), kMonthExpire);

    // One INCRBY per counter the batch changed, none where the sum is 0 (a
    // checked request counter, the rpm: reserved 1, used 1, three times).
    expect_each_written_once(keys_of({l}), was, mark);
    for (const std::string &key : {kKeyDaily, kKeyMonthly, kTpm, kBalance, kHeld, P + "reqs:org:acme:m:2026-11"})
        EXPECT_EQ(incrbys(key, mark), 1u) << key;
    EXPECT_EQ(incrbys(kRpm, mark), 0u);
    EXPECT_EQ(incrbys(P + "reqs:key:k1:d:2026-11-18", mark), 0u);
    // One by one, the same counters were written once per request (the tpm
    // but for req-2, which used what it reserved).
    for (const std::string &key : {kKeyDaily, kKeyMonthly, kBalance, kHeld})
        EXPECT_EQ(incrbys_in(one_by_one.redis, key, mark_one), 3u) << key;
    EXPECT_EQ(incrbys_in(one_by_one.redis, kTpm, mark_one), 2u);
}

TEST_F(SettleBatch, ReservedReleasedAndNeverReservedRequestsEachCountOnceAtTheirRealCost) {
    use(policy_yaml(kCapped, "warn_at: [0.5]\n", kPrepaid, kProjectCap));
    const Ledger l = ledger();
    const Req reserved{"req-1", {3 * kUsd, 400}, {kUsd, 120}};
    const Req released{"req-2", {2 * kUsd, 300}, {kUsd / 2, 50}};
    const Req fail_open = fail_open_req("req-3", {kUsd, 100}, {kUsd / 4, 30});
    preset(l);
    ASSERT_TRUE(reserve_in(lua, l, reserved));
    ASSERT_TRUE(reserve_in(lua, l, released, 1));
    // req-2's deadline passes: the sweep gives its reservation back.
    redis.set_now_ms(kNow * 1000 + 1);
    ASSERT_EQ(sweep(8).integer, 1);
    ASSERT_FALSE(has(batch_record("req-2")));
    ASSERT_TRUE(has(batch_record("req-1")));
    ASSERT_EQ(at(released_marker("req-2")), "1");
    ASSERT_EQ(at(kKeyDaily), plus(preset_value(l.counters[0]), 3 * kUsd));
    ASSERT_EQ(at(kRpm), "3");
    ASSERT_EQ(at(kTpm), "450");

    const auto was = redis.data();
    const std::vector<Event> reserve_events = events();  // the reservations crossed half the daily cap
    const std::size_t mark = redis.log.size();
    EXPECT_EQ(settle_batch(items_of(l, {reserved, released, fail_open})).integer, 1);
    // Spend, requests, tokens and the balance hold the three real amounts;
    // the rates only req-1's (the others' minute is not known to hold them);
    // every hold has ended.
    expect_counters(l,
                    [&](const Counter &c) {
                        switch (c.kind) {
                        case CounterKind::spend: return plus(preset_value(c), kUsd + kUsd / 2 + kUsd / 4);
                        case CounterKind::requests: return plus(preset_value(c), 3);
                        case CounterKind::tokens: return plus(preset_value(c), 120 + 50 + 30);
                        case CounterKind::rpm: return plus(preset_value(c), 1);
                        case CounterKind::tpm: return plus(preset_value(c), 120);
                        case CounterKind::balance: return plus(preset_value(c), -(kUsd + kUsd / 2 + kUsd / 4));
                        case CounterKind::held: return preset_value(c);
                        }
                        return std::string();
                    },
                    "after the batch");
    expect_settled({reserved, released, fail_open});  // req-2's released marker gone too
    EXPECT_EQ(settlements(), "3");
    EXPECT_FALSE(has(gone_marker("req-3")));  // no reserve was sent: no batch to turn away
    // Each counter written once (the rpm not at all: its sum is 0).
    for (const Counter &c : l.counters)
        EXPECT_EQ(incrbys(c.key, mark), c.kind == CounterKind::rpm ? 0u : 1u) << c.key;
    expect_each_written_once(keys_of({l}), was, mark);
    EXPECT_EQ(events(), reserve_events);
}

TEST_F(SettleBatch, TwoKeysAndACustomerOfOneOrgShareTheProjectAndOrgCounters) {
    const std::string hash2(64, 'b');
    use(std::string("models:\n  m: { input: 1, output: 2 }\nwarn_at: [0.5]\n"
                    "customers:\n  default_limits: { daily_usd: 10 }\n"
                    "orgs:\n  acme:\n") + kPrepaid +
        "projects:\n  p:\n    org: acme\n    limits: { monthly_usd: 50 }\n"
        "keys:\n"
        "  - id: k1\n    sha256: " + kHash + "\n    project: p\n    limits: { daily_usd: 10 }\n"
        "  - id: k2\n    sha256: " + hash2 + "\n    project: p\n    limits: { monthly_usd: 20, rpm: 100 }\n");
    const Ledger k1_c1 = ledger_of_key(kHash, "c1");
    const Ledger k2 = ledger_of_key(hash2);
    const Ledger k2_c1 = ledger_of_key(hash2, "c1");
    const Req a{"req-a", {2 * kUsd, 100}, {kUsd, 40}};
    const Req b{"req-b", {3 * kUsd, 200}, {2 * kUsd, 60}};
    const Req c = fail_open_req("req-c", {kUsd, 50}, {kUsd / 2, 10});  // fail-open: never reserved
    redis.set(kBalance, "100000000000");
    ASSERT_TRUE(reserve_in(lua, k1_c1, a));
    ASSERT_TRUE(reserve_in(lua, k2, b));

    const std::vector<SettleItem> items = {item_of(k1_c1, a), item_of(k2, b), item_of(k2_c1, c)};
    const std::vector<std::string> argv = settle_batch_command(items);
    ASSERT_FALSE(argv.empty());
    // The counters of the three, each once.
    const std::set<std::string> keys = keys_of({k1_c1, k2, k2_c1});
    const std::size_t distinct = keys.size();
    ASSERT_LT(distinct, k1_c1.counters.size() + k2.counters.size() + k2_c1.counters.size());
    ASSERT_GT(argv.size(), 3 + std::stoul(argv[2]));
    const std::size_t numkeys = std::stoul(argv[2]), markers = std::stoul(argv[3 + numkeys + 2]);  // ARGV[3]: G
    EXPECT_GT(markers, 0u);
    // + events, deadlines, settlements, reservations, settled, released, gone, low_balance
    EXPECT_EQ(numkeys, distinct + 8 + markers);
    EXPECT_EQ(argv[3 + std::stoul(argv[2])], std::to_string(distinct));
    EXPECT_EQ(std::set<std::string>(argv.begin() + 3, argv.begin() + 3 + static_cast<std::ptrdiff_t>(distinct)), keys);

    const auto was = redis.data();
    const std::size_t mark = redis.log.size();
    EXPECT_EQ(lua.evalsha(argv).integer, 1);
    // Each counter: the real amounts of the requests whose ledger has it.
    for (const std::string &key : keys) {
        std::int64_t expected = 0;
        CounterKind kind = CounterKind::spend;
        const std::vector<std::pair<const Ledger *, const Req *>> all = {{&k1_c1, &a}, {&k2, &b}, {&k2_c1, &c}};
        for (const auto &[ledger, req] : all)
            for (const Counter &counter : ledger->counters)
                if (counter.key == key) {
                    kind = counter.kind;
                    expected += real_of(counter.kind, req->real);
                }
        if (kind == CounterKind::balance) expected += 100 * kUsd;
        if (kind == CounterKind::rpm) expected = 1;  // req-b's reservation; req-c's minute is not known
        EXPECT_EQ(at(key), std::to_string(expected)) << key;
    }
    EXPECT_EQ(at(P + "spend:key:k1:d:2026-11-18"), "1000000000");
    EXPECT_EQ(at(P + "spend:key:k2:m:2026-11"), "2500000000");
    EXPECT_EQ(at(P + "reqs:key:k2:d:2026-11-18"), "2");
    EXPECT_EQ(at(P + "spend:project:p:m:2026-11"), "3500000000");
    EXPECT_EQ(at(P + "spend:org:acme:life"), "3500000000");
    EXPECT_EQ(at(P + "tokens:org:acme:d:2026-11-18"), "110");
    EXPECT_EQ(at(P + "reqs:org:acme:m:2026-11"), "3");
    EXPECT_EQ(at(P + "spend:customer:c1:d:2026-11-18"), "1500000000");
    EXPECT_EQ(at(P + "reqs:customer:c1:m:2026-11"), "2");
    EXPECT_EQ(at(kBalance), "96500000000");
    EXPECT_EQ(at(kHeld), "0");
    EXPECT_EQ(at(P + "rate:key:k2:rpm:2026-11-18T11:06"), "1");
    expect_settled({a, b, c});
    // Shared or not, every counter written once.
    expect_each_written_once(keys, was, mark);
    for (const std::string &key : keys)
        if (key.find(":rate:") == std::string::npos) EXPECT_EQ(incrbys(key, mark), 1u) << key;
}

// ---------------------------------------------------------------------------
// A batch lands whole.

TEST_F(SettleBatch, AResendChangesNothingAndAPartlySettledBatchIsRefused) {
    use(policy_yaml(kCapped, "warn_at: [0.5]\n", kPrepaid, kProjectCap));
    const Ledger l = ledger();
    preset(l);
    const std::vector<Req> reqs = {{"req-1", {2 * kUsd, 400}, {kUsd, 120}},
                                   {"req-2", {kUsd, 300}, {kUsd / 2, 300}},
                                   {"req-3", {kUsd, 100}, {0, 0, 0}}};
    for (const Req &r : reqs) ASSERT_TRUE(reserve_in(lua, l, r)) << r.rid;
    const std::vector<std::string> argv = settle_batch_command(items_of(l, reqs));
    ASSERT_FALSE(argv.empty());
    EXPECT_EQ(send_settlement(argv, {"req-1", "req-2", "req-3"}).integer, 1);
    const auto settled = redis.data();
    std::size_t mark = redis.log.size();
    // The same argv again (its reply was lost), or other amounts for the same requests.
    Reply r = lua.evalsha(resent(argv));
    ASSERT_EQ(r.type, Reply::Type::integer) << r;
    EXPECT_EQ(r.integer, 0);
    std::vector<Req> other = reqs;
    for (Req &q : other) q.real = Amounts{9 * kUsd, 900};
    EXPECT_EQ(settle_batch(items_of(l, other)).integer, 0);
    EXPECT_EQ(redis.data(), settled);  // the count of settlements too
    EXPECT_EQ(settlements(), "3");
    for (const Counter &c : l.counters) EXPECT_EQ(incrbys(c.key, mark), 0u) << c.key;

    // req-4 settled on its own, then a batch with it and two that are not.
    const std::vector<Req> more = {{"req-4", {kUsd, 10}, {kUsd / 2, 5}},
                                   {"req-5", {kUsd, 10}, {kUsd / 2, 5}},
                                   {"req-6", {kUsd, 10}, {kUsd / 2, 5}}};
    for (const Req &q : more) ASSERT_TRUE(reserve_in(lua, l, q)) << q.rid;
    EXPECT_EQ(settle(l, more[0].estimate, more[0].real, "req-4").integer, 1);
    const auto before = redis.data();
    mark = redis.log.size();
    for (const std::vector<Req> &batch :
         {more, std::vector<Req>{more[1], more[0], more[2]}, std::vector<Req>{more[1], more[2], more[0]}}) {
        r = settle_batch(items_of(l, batch));
        ASSERT_TRUE(r.is_error()) << r;
        EXPECT_EQ(r.str, kPartly);
        EXPECT_EQ(classify_redis_error(r.str).kind, RedisErrorKind::permanent);  // resending cannot help
        EXPECT_EQ(redis.data(), before);
    }
    for (const Counter &c : l.counters) EXPECT_EQ(incrbys(c.key, mark), 0u) << c.key;
    expect_unsettled({more[1], more[2]});
    // Without req-4, the other two settle.
    EXPECT_EQ(settlements(), "4");
    EXPECT_EQ(settle_batch(items_of(l, {more[1], more[2]})).integer, 1);
    EXPECT_FALSE(redis.exists(keys::deadlines("acme")));
    EXPECT_EQ(settlements(), "6");
}

TEST_F(SettleBatch, AnOverflowOnOneCounterLeavesEveryKeyAsItWas) {
    use(policy_yaml(kCapped, "warn_at: [0.5]\n", kPrepaid, kProjectCap));
    const Ledger l = ledger();
    const std::string org_life = P + "spend:org:acme:life";  // unchecked, late in the batch's order
    ASSERT_FALSE(checked(l, l.counters[16]));
    ASSERT_EQ(l.counters[16].key, org_life);
    preset(l);
    // Room for any one request's 1000, not for the batch's 3000.
    redis.set(org_life, "9223372036854773807");
    const std::vector<Req> reqs = {{"req-1", {kUsd, 40}, {1000, 4}},
                                   {"req-2", {kUsd, 40}, {1000, 4}},
                                   {"req-3", {kUsd, 40}, {1000, 4}}};
    for (const Req &r : reqs) ASSERT_TRUE(reserve_in(lua, l, r)) << r.rid;
    const std::vector<std::string> argv = settle_batch_command(items_of(l, reqs));
    const auto before = redis.data();
    const std::size_t mark = redis.log.size();
    const Reply r = lua.evalsha(argv);
    ASSERT_TRUE(r.is_error()) << r;
    EXPECT_EQ(r.str, "ERR increment or decrement would overflow");
    EXPECT_EQ(redis.data(), before);  // counters, expiries, records, deadlines, no marker
    expect_unsettled(reqs);
    // The counters before it were added, then taken back.
    EXPECT_EQ(incrbys(kKeyDaily, mark), 2u);
    EXPECT_EQ(incrbys(P + "spend:project:p:m:2026-11", mark), 2u);
    // Room again: the same argv lands, once.
    redis.set(org_life, "5");
    EXPECT_EQ(lua.evalsha(argv).integer, 1);
    EXPECT_EQ(lua.evalsha(resent(argv)).integer, 0);
    EXPECT_EQ(at(org_life), "3005");
    EXPECT_EQ(at(kKeyDaily), plus(preset_value(l.counters[0]), 3000));
    expect_settled(reqs);
}

TEST_F(SettleBatch, UnderOomNothingIsWrittenAndTheSameBatchLandsLaterOnce) {
    use(policy_yaml(kCapped, "warn_at: [0.5]\n", kPrepaid, kProjectCap));
    const Ledger l = ledger();
    preset(l);
    const std::vector<Req> reqs = {{"req-1", {2 * kUsd, 400}, {kUsd, 120}},
                                   {"req-2", {2 * kUsd, 300}, {kUsd / 2, 300}},
                                   {"req-3", {kUsd, 100}, {kUsd / 4, 30}}};
    for (const Req &r : reqs) ASSERT_TRUE(reserve_in(lua, l, r)) << r.rid;
    const std::vector<std::string> argv = settle_batch_command(items_of(l, reqs));
    redis.oom = true;
    const auto before = redis.data();
    Reply r = lua.evalsha(argv);
    ASSERT_TRUE(r.is_error()) << r;
    EXPECT_EQ(r.str, FakeRedis::kOomError);
    EXPECT_EQ(classify_redis_error(r.str).kind, RedisErrorKind::transient);
    EXPECT_EQ(redis.data(), before);
    expect_unsettled(reqs);
    // A batch with nothing to add (refused before the provider, never
    // reserved) is refused at its first write, the count of settlements.
    r = settle_batch(items_of(l, {fail_open_req("req-8", {kUsd, 1}, {0, 0, 0}),
                                  fail_open_req("req-9", {kUsd, 1}, {0, 0, 0})}));
    ASSERT_TRUE(r.is_error()) << r;
    EXPECT_EQ(r.str.rfind(FakeRedis::kOomError, 0), 0u) << r.str;
    EXPECT_EQ(redis.data(), before);
    // Memory back: the same batch lands, once.
    redis.oom = false;
    EXPECT_EQ(lua.evalsha(argv).integer, 1);
    const auto settled = redis.data();
    EXPECT_EQ(lua.evalsha(resent(argv)).integer, 0);
    EXPECT_EQ(redis.data(), settled);
    expect_settled(reqs);
    EXPECT_EQ(at(kKeyDaily), plus(preset_value(l.counters[0]), kUsd + kUsd / 2 + kUsd / 4));
    EXPECT_EQ(at(kBalance), plus(preset_value(l.counters[21]), -(kUsd + kUsd / 2 + kUsd / 4)));
    EXPECT_EQ(at(kHeld), preset_value(l.counters.back()));
}

// ---------------------------------------------------------------------------
// Warnings: the batch took the counter from below the threshold to at or above it.

TEST_F(SettleBatch, AThresholdCrossedByTheBatchsSumWarnsOnceWithTheCounterAfterTheBatch) {
    use(policy_yaml("{ daily_usd: 10 }", "warn_at: [0.5, 0.8]\n"));
    const Ledger l = ledger();
    redis.set(kKeyDaily, "4000000000");
    const std::vector<Req> reqs = {{"req-1", {kUsd / 10, 0}, {kUsd / 2, 0}},
                                   {"req-2", {kUsd / 10, 0}, {kUsd / 2, 0}},
                                   fail_open_req("req-3", {kUsd / 2, 0}, {kUsd / 2, 0})};  // never reserved
    for (const Req &r : {reqs[0], reqs[1]}) ASSERT_TRUE(reserve_in(lua, l, r)) << r.rid;
    ASSERT_EQ(at(kKeyDaily), "4200000000");
    ASSERT_TRUE(events().empty());
    // Each request alone adds 0.4 or 0.5 USD: at most 4.7 < 5. Together 1.3
    // USD (0.5 of it the unreserved one's correction): 5.5.
    EXPECT_EQ(settle_batch(items_of(l, reqs)).integer, 1);
    EXPECT_EQ(at(kKeyDaily), "5500000000");
    EXPECT_EQ(events(), (std::vector<Event>{warning("key", "k1", "daily", "2026-11-18", "0.5", "5500000000",
                                                    "10000000000")}));
    // The next batch crosses 0.8 only (from 5.5 to 8.5).
    const std::vector<Req> next = {{"req-4", {kUsd, 0}, {2 * kUsd, 0}}, {"req-5", {0, 0}, {kUsd, 0}}};
    for (const Req &r : next) ASSERT_TRUE(reserve_in(lua, l, r)) << r.rid;
    ASSERT_EQ(at(kKeyDaily), "6500000000");
    ASSERT_EQ(events().size(), 1u);
    EXPECT_EQ(settle_batch(items_of(l, next)).integer, 1);
    EXPECT_EQ(at(kKeyDaily), "8500000000");
    EXPECT_EQ(events(), (std::vector<Event>{
                            warning("key", "k1", "daily", "2026-11-18", "0.5", "5500000000", "10000000000"),
                            warning("key", "k1", "daily", "2026-11-18", "0.8", "8500000000", "10000000000")}));
    // A batch that lowers the counter (9.9 reserved, back to 8.5) crosses nothing.
    const std::vector<Req> down = {{"req-6", {7 * kUsd / 10, 0}, {0, 0}}, {"req-7", {7 * kUsd / 10, 0}, {0, 0, 0}}};
    for (const Req &r : down) ASSERT_TRUE(reserve_in(lua, l, r)) << r.rid;
    EXPECT_EQ(settle_batch(items_of(l, down)).integer, 1);
    EXPECT_EQ(at(kKeyDaily), "8500000000");
    EXPECT_EQ(events().size(), 2u);
}

TEST_F(SettleBatch, NoWarningWhenTheCounterWasAtOrAboveTheThresholdBeforeTheBatch) {
    use(policy_yaml("{ daily_usd: 10 }", "warn_at: [0.5]\n"));
    const Ledger l = ledger();
    for (const std::string &start : {"5000000000", "6000000000"}) {
        redis.set(kKeyDaily, start);
        const std::vector<Req> reqs = {{"a-" + start, {kUsd / 10, 0}, {kUsd / 2, 0}},
                                       {"b-" + start, {kUsd / 10, 0}, {kUsd / 2, 0}},
                                       fail_open_req("c-" + start, {0, 0}, {kUsd / 2, 0})};  // unreserved
        for (const Req &r : {reqs[0], reqs[1]}) ASSERT_TRUE(reserve_in(lua, l, r)) << r.rid;
        EXPECT_EQ(settle_batch(items_of(l, reqs)).integer, 1) << start;
        EXPECT_EQ(at(kKeyDaily), plus(start, 3 * kUsd / 2)) << start;
        EXPECT_TRUE(events().empty()) << start;
        for (const auto &[key, value] : redis.data()) EXPECT_EQ(key.find(":warned:"), std::string::npos) << key;
    }
}

TEST_F(SettleBatch, LowBalanceIsJudgedOnceOnTheBalanceAfterTheBatch) {
    use(policy_yaml("", "", kPrepaid));
    const Ledger l = ledger();
    redis.set(kBalance, "7000000000");
    const std::vector<Req> reqs = {{"req-1", {kUsd, 0}, {kUsd, 0}},
                                   {"req-2", {kUsd, 0}, {kUsd, 0}},
                                   {"req-3", {kUsd, 0}, {kUsd, 0}}};
    for (const Req &r : reqs) ASSERT_TRUE(reserve_in(lua, l, r)) << r.rid;
    ASSERT_EQ(at(kBalance), "4000000000");  // 3 USD held: still 7 USD really
    ASSERT_TRUE(events().empty());
    EXPECT_EQ(settle_batch(items_of(l, reqs)).integer, 1);
    EXPECT_EQ(at(kBalance), "4000000000");
    EXPECT_EQ(at(kHeld), "0");
    EXPECT_EQ(events(), (std::vector<Event>{low_balance("4000000000", "5000000000")}));
}

// ---------------------------------------------------------------------------
// A refused request in a batch, and what settle_batch_command refuses.

TEST_F(SettleBatch, ARefusedRequestIsGivenBackExactlyBesideAnAllowedOne) {
    use(policy_yaml(kCapped, "warn_at: [0.5]\n", kPrepaid, kProjectCap));
    const Ledger l = ledger();
    preset(l);
    const Req refused{"req-1", {3 * kUsd, 400}, {0, 0, 0}};
    const Req allowed{"req-2", {2 * kUsd, 300}, {kUsd, 120}};
    ASSERT_TRUE(reserve_in(lua, l, refused));
    ASSERT_TRUE(reserve_in(lua, l, allowed));
    const auto was = redis.data();
    const std::vector<Event> reserve_events = events();  // the reservations crossed half the daily cap
    const std::size_t mark = redis.log.size();
    EXPECT_EQ(settle_batch(items_of(l, {refused, allowed})).integer, 1);
    // As if only req-2 had come.
    expect_counters(l,
                    [&](const Counter &c) {
                        switch (c.kind) {
                        case CounterKind::spend: return plus(preset_value(c), kUsd);
                        case CounterKind::requests:
                        case CounterKind::rpm: return plus(preset_value(c), 1);
                        case CounterKind::tokens:
                        case CounterKind::tpm: return plus(preset_value(c), 120);
                        case CounterKind::balance: return plus(preset_value(c), -kUsd);
                        case CounterKind::held: return preset_value(c);
                        }
                        return std::string();
                    },
                    "after the batch");
    expect_settled({refused, allowed});
    expect_each_written_once(keys_of({l}), was, mark);
    EXPECT_EQ(events(), reserve_events);
}

TEST(SettleBatchCommand, IsEmptyForTwoOrgsNoItemsOrAnEmptyRequestId) {
    const auto policy = parse_policy(policy_yaml("{ daily_usd: 10 }"), "test.yaml");
    const Key *key = policy->find_key(kHash);
    ASSERT_NE(key, nullptr);
    const Ledger l = ledger_for(*policy, *key, "", periods_at(kNow));
    Ledger other = l;
    other.org = "beta";
    for (Counter &c : other.counters) c.key.replace(0, P.size(), "sc:{beta}:");
    const auto shared = std::make_shared<const Ledger>(l);
    const auto beta = std::make_shared<const Ledger>(other);
    const SettleItem a{shared, {kUsd, 1}, {kUsd, 1}, "req-1", std::nullopt, "req-1"};
    const SettleItem b{shared, {kUsd, 1}, {kUsd, 1}, "req-2", std::nullopt, "req-2"};
    ASSERT_FALSE(settle_batch_command({a, b}).empty());
    EXPECT_TRUE(settle_batch_command({}).empty());
    EXPECT_TRUE(settle_batch_command({a, SettleItem{beta, {kUsd, 1}, {kUsd, 1}, "req-3", std::nullopt, "req-3"}}).empty());
    EXPECT_TRUE(settle_batch_command({SettleItem{beta, {kUsd, 1}, {kUsd, 1}, "req-3", std::nullopt, "req-3"}, a}).empty());
    SettleItem unnamed = b;
    unnamed.request_id.clear();
    EXPECT_TRUE(settle_batch_command({a, unnamed}).empty());
    EXPECT_TRUE(settle_batch_command({unnamed, a}).empty());
    SettleItem no_counters = b;
    Ledger empty = l;
    empty.counters.clear();
    no_counters.ledger = std::make_shared<const Ledger>(empty);
    EXPECT_TRUE(settle_batch_command({a, no_counters}).empty());
    SettleItem no_ledger = b;
    no_ledger.ledger = nullptr;
    EXPECT_TRUE(settle_batch_command({a, no_ledger}).empty());
    EXPECT_TRUE(settle_batch_command({no_ledger, a}).empty());
}

// A request id twice in a batch, and the plan ceiling's cap whatever the order.

TEST_F(SettleBatch, ARequestIdTwiceInABatchSettlesOnce) {
    use(policy_yaml("{ daily_usd: 10 }", ""));
    const Ledger l = ledger();
    redis.set(kKeyDaily, "5000000000");
    const Req r{"req-1", {3 * kUsd, 0}, {kUsd, 0}};
    ASSERT_TRUE(reserve_in(lua, l, r));
    EXPECT_EQ(settle_batch(items_of(l, {r, r})).integer, 1);
    EXPECT_EQ(at(kKeyDaily), "6000000000");  // unpatched: 4000000000, the reservation given back twice
    expect_settled({r});
}

TEST_F(SettleBatch, TheCeilingWarnsWhicheverRequestOfTheBatchKnowsItsCap) {
    use(policy_yaml("", kPaidPlan, paid_org("2026-10-19T11:06:40Z")));  // ceiling 100 USD, warns at 50
    const Ledger l = ledger();
    redis.set(kOrgMonthly, "47000000000");
    const ReserveOutcome o = reserved(l, kUsd, 0, "req-2");
    ASSERT_EQ(o.ceiling_cap, std::optional<Nanos>(100 * kUsd));
    const SettleItem fail_open = item_of(l, fail_open_req("req-1", {kUsd, 0}, {kUsd, 0}));  // never learnt the cap
    EXPECT_EQ(settle_batch({fail_open, item_of(l, Req{"req-2", {kUsd, 0}, {2 * kUsd, 0}}, o.ceiling_cap)}).integer, 1);
    EXPECT_EQ(at(kOrgMonthly), "50000000000");
    EXPECT_EQ(events(), (std::vector<Event>{warning("org", "acme", "monthly", "2026-11", "0.5", "50000000000",
                                                    "100000000000")}));  // unpatched: none
}

}  // namespace
}  // namespace spendcap
