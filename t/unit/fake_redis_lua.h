// A small in-memory Redis and an embedded Lua 5.1 interpreter that runs the
// module's real reserve / settle / sweep scripts the way Redis's EVALSHA
// does, for t/unit/lua_scripts_test.cpp.
//
// What is mimicked (Redis 7 scripting, Lua 5.1; where Redis 5/6 differ it
// is said):
//  - KEYS / ARGV built from the EVALSHA argv the module sends, the script
//    chosen by its SHA-1 (NOSCRIPT otherwise);
//  - Redis Cluster's rules, stricter than a single Redis: a call whose KEYS
//    span two slots (CRC16 of the hash tag) answers CROSSSLOT, and a command
//    inside a script on a key that is not among its KEYS raises an error
//    (Redis standalone would run it; a cluster node may not hold that key),
//    so a script that builds a key name fails its unit tests;
//  - libraries base, table, string, math; globals protected (creating or
//    reading an undeclared global is an error, as in Redis);
//  - redis.call / redis.pcall arguments: strings as they are, numbers as
//    "%.17g" (Redis <= 7.0), anything else an error; replies: integer ->
//    number, bulk -> string, nil bulk -> false, status -> {ok = 'OK'}, array
//    -> table, error -> redis.call raises {err = 'CODE message'} (the script
//    stops; Redis keeps what it wrote before), redis.pcall returns that
//    table instead; redis.error_reply / redis.status_reply;
//  - the script's return value: number -> integer (truncated), string ->
//    bulk, table -> array (to the first nil) or {err=} -> that error reply
//    as it is, {ok=} -> status, true -> 1, false / nil -> nil;
//  - an error that stops the script answers as Redis 7 does: a raised
//    {err=} keeps its code ("OOM command not allowed ... script: f_SHA, on
//    @user_script:LINE."); any other error is "ERR user_script:LINE: message
//    script: ..." (Redis 5/6 answer both as "ERR Error running script (call
//    to f_SHA): ...", losing the code);
//  - commands GET, MGET, SET (EX n, PX n, NX, XX), INCRBY, EXPIREAT, DEL, EXISTS,
//    XADD (NOMKSTREAM, MAXLEN [=|~] N, *), TIME, ZADD (NX, XX, GT, LT, CH;
//    scores parsed as Redis's string2d: strtod, "inf" / "-inf", no NaN, no
//    spaces), ZREM (an emptied set is deleted), ZRANGEBYSCORE (min / max as
//    Redis's zslParseRange: "(" exclusive, -inf / +inf; LIMIT offset count:
//    a negative offset gives nothing, a negative count everything), ZSCORE,
//    ZCARD; HSET (the number of fields new; an odd argument count is "ERR
//    wrong number of arguments for 'hset' command"), HMGET (nil per missing
//    field, all nil for a missing key), HDEL (an emptied hash is deleted),
//    HGETALL (field, value, ... in field order, memcmp: one order Redis may
//    give; a small real hash answers in insertion order), HEXISTS, HLEN;
//    PEXPIRE (NX, XX, GT, LT as Redis 7.0; now + ms, a result at or before
//    now deletes the key and answers 1), PTTL (-2 missing, -1 no expiry),
//    TYPE (status none / string / hash / zset / stream / set); INCR, HGET,
//    HSETNX, HINCRBY ("ERR hash value is not an integer"), ZREMRANGEBYSCORE,
//    SADD, SMEMBERS (in member order), SRANDMEMBER with a count (the first
//    members: a test must not rely on which); Redis's strict
//    integer parsing ("ERR value is not an integer or out of range"),
//    INCRBY's "ERR increment or decrement would overflow", WRONGTYPE across
//    strings, hashes, streams and sorted sets (an expiry is the whole key's,
//    and writing a hash's fields keeps it, as in Redis);
//  - a clock the test sets: `now` (unix seconds) plus `micros` within it,
//    which TIME answers and stream ids use; expiries are kept in ms and a
//    key lives while now <= its expiry (Redis's keyIsExpired), an EXPIREAT
//    at or before now deletes it;
//  - maxmemory reached (`oom = true`): a command flagged denyoom in Redis
//    (here SET, INCR, INCRBY, XADD, ZADD, HSET, HSETNX, HINCRBY, SADD) fails with "OOM command not allowed when
//    used memory > 'maxmemory'." outside a script, and inside one only while
//    the script has written nothing: any write command that ran (DEL,
//    EXPIREAT, PEXPIRE, ZREM, ZREMRANGEBYSCORE and HDEL are writes without denyoom, and are
//    never refused)
//    makes every later write of that script allowed, as Redis's
//    SCRIPT_WRITE_DIRTY does for scripts without flags.
#pragma once

#include <lua.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cinttypes>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "redis/reply.h"

namespace spendcap_test {

using Reply = spendcap::Reply;

}  // namespace spendcap_test

namespace spendcap {
inline std::ostream &operator<<(std::ostream &os, const Reply &r) {
    switch (r.type) {
    case Reply::Type::nil: return os << "(nil)";
    case Reply::Type::integer: return os << "(integer) " << r.integer;
    case Reply::Type::string: return os << '"' << r.str << '"';
    case Reply::Type::status: return os << "+" << r.str;
    case Reply::Type::error: return os << "-" << r.str;
    case Reply::Type::array:
        os << "[";
        for (std::size_t i = 0; i < r.elements.size(); ++i) os << (i ? ", " : "") << r.elements[i];
        return os << "]";
    }
    return os;
}
}  // namespace spendcap

namespace spendcap_test {

// Redis's string2ll: optional '-', no '+', no spaces, no leading zeros, fits int64.
inline bool parse_redis_int(const std::string &s, long long &out) {
    if (s.empty() || s.size() > 20) return false;
    if (s == "0") {
        out = 0;
        return true;
    }
    std::size_t i = s[0] == '-' ? 1 : 0;
    if (i >= s.size() || s[i] < '1' || s[i] > '9') return false;
    for (std::size_t j = i; j < s.size(); ++j)
        if (s[j] < '0' || s[j] > '9') return false;
    errno = 0;
    char *end = nullptr;
    const long long v = std::strtoll(s.c_str(), &end, 10);
    if (errno == ERANGE || *end != '\0') return false;
    out = v;
    return true;
}

// Redis's string2d (ZADD's scores): all of it strtod, no leading space, no
// NaN, no overflow or underflow to 0; "inf", "+inf", "-inf" are scores.
inline bool parse_redis_double(const std::string &s, double &out) {
    if (s.empty() || std::isspace(static_cast<unsigned char>(s[0]))) return false;
    errno = 0;
    char *end = nullptr;
    const double d = std::strtod(s.c_str(), &end);
    if (static_cast<std::size_t>(end - s.c_str()) != s.size()) return false;
    if (errno == ERANGE && (d == HUGE_VAL || d == -HUGE_VAL || std::fpclassify(d) == FP_ZERO)) return false;
    if (std::isnan(d)) return false;
    out = d;
    return true;
}

// A score as Redis 7.0 replies it ("%.17g", inf / -inf).
inline std::string format_score(double d) {
    if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
    char buffer[64];
    std::snprintf(buffer, sizeof buffer, "%.17g", d);
    return buffer;
}

class FakeRedis {
public:
    struct StreamEntry {
        std::string id;
        std::vector<std::string> fields;  // field, value, field, value, ...
        bool operator==(const StreamEntry &o) const { return id == o.id && fields == o.fields; }
    };
    enum class Type { string, stream, zset, hash, set };
    struct Value {
        Type type = Type::string;
        std::string str;
        std::vector<StreamEntry> stream;
        std::map<std::string, double> zset;       // member -> score
        std::map<std::string, std::string> hash;  // field -> value
        std::set<std::string> members;            // a set's
        std::int64_t expire_at_ms = 0;            // unix ms; 0 = no expiry
        bool operator==(const Value &o) const {
            return type == o.type && str == o.str && stream == o.stream && zset == o.zset && hash == o.hash && members == o.members &&
                   expire_at_ms == o.expire_at_ms;
        }
    };

    std::int64_t now = 0;     // unix seconds
    std::int64_t micros = 0;  // microseconds within `now`, [0, 999999]: TIME's second part
    // maxmemory reached: see the header comment.
    bool oom = false;
    // The last XADD's trimming, per stream: "MAXLEN ~ 10000".
    std::map<std::string, std::string> trims;
    // Every command run, as sent.
    std::vector<std::vector<std::string>> log;

    static constexpr const char *kOomError = "OOM command not allowed when used memory > 'maxmemory'.";

    std::int64_t now_ms() const { return now * 1000 + micros / 1000; }
    void set_now_ms(std::int64_t ms) {
        now = ms / 1000;
        micros = (ms % 1000) * 1000;
    }

    // The live entries (expired ones dropped), for comparing snapshots.
    const std::map<std::string, Value> &data() {
        purge_all();
        return data_;
    }
    std::optional<std::string> get(const std::string &key) {
        const Value *v = find(key);
        if (!v || v->type != Type::string) return std::nullopt;
        return v->str;
    }
    bool exists(const std::string &key) { return find(key) != nullptr; }
    // A live key's expiry in unix seconds, as EXPIRETIME (0 = none, where
    // EXPIRETIME says -1); -1 when the key does not exist.
    std::int64_t expire_at(const std::string &key) {
        const Value *v = find(key);
        return v ? v->expire_at_ms / 1000 : -1;
    }
    // The same in ms, as PEXPIRETIME.
    std::int64_t pexpire_at(const std::string &key) {
        const Value *v = find(key);
        return v ? v->expire_at_ms : -1;
    }
    void set(const std::string &key, const std::string &value) {
        Value v;
        v.str = value;
        data_[key] = v;
    }
    std::vector<StreamEntry> stream(const std::string &key) {
        const Value *v = find(key);
        return v && v->type == Type::stream ? v->stream : std::vector<StreamEntry>{};
    }
    std::vector<std::vector<std::string>> events(const std::string &key) {
        std::vector<std::vector<std::string>> out;
        for (const StreamEntry &e : stream(key)) out.push_back(e.fields);
        return out;
    }
    // A sorted set's members and scores in Redis's order (score, then member).
    std::vector<std::pair<std::string, double>> zset(const std::string &key) {
        const Value *v = find(key);
        if (!v || v->type != Type::zset) return {};
        return ordered(*v);
    }
    // A hash's fields and values; empty when the key is missing or not a hash.
    std::map<std::string, std::string> hash(const std::string &key) {
        const Value *v = find(key);
        return v && v->type == Type::hash ? v->hash : std::map<std::string, std::string>{};
    }
    // A set's members; empty when the key is missing or not a set.
    std::set<std::string> members(const std::string &key) {
        const Value *v = find(key);
        return v && v->type == Type::set ? v->members : std::set<std::string>{};
    }
    // Sets one field, as HSET does on a hash (its expiry kept); a missing key
    // or one of another type becomes a new hash without expiry (as set()
    // replaces whatever was there).
    void hset(const std::string &key, const std::string &field, const std::string &value) {
        Value *v = find(key);
        if (!v || v->type != Type::hash) {
            v = &data_[key];
            *v = Value{};
            v->type = Type::hash;
        }
        v->hash[field] = value;
    }

    // Set by LuaRunner around a script, for the OOM rule.
    // `keys`: the script's KEYS, the only keys it may touch (see
    // undeclared_key()).
    void begin_script(const std::vector<std::string> &keys = {}, bool declared_only = false) {
        in_script_ = true;
        script_wrote_ = false;
        declared_only_ = declared_only;
        declared_.clear();
        declared_.insert(keys.begin(), keys.end());
    }
    void end_script() { in_script_ = false; }

    Reply command(const std::vector<std::string> &args) {
        log.push_back(args);
        if (args.empty()) return Reply::error("ERR empty command");
        std::string name = args[0];
        for (char &c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        struct Spec {
            const char *name;
            Reply (FakeRedis::*run)(const std::vector<std::string> &);
            bool write;
            bool denyoom;
            Keys keys = Keys::first;
        };
        static const Spec specs[] = {
            {"GET", &FakeRedis::cmd_get, false, false},
            {"MGET", &FakeRedis::cmd_mget, false, false, Keys::all},
            {"SET", &FakeRedis::cmd_set, true, true},
            {"INCRBY", &FakeRedis::cmd_incrby, true, true},
            {"EXPIREAT", &FakeRedis::cmd_expireat, true, false},
            {"DEL", &FakeRedis::cmd_del, true, false, Keys::all},
            {"EXISTS", &FakeRedis::cmd_exists, false, false, Keys::all},
            {"INCR", &FakeRedis::cmd_incr, true, true},
            {"XADD", &FakeRedis::cmd_xadd, true, true},
            {"TIME", &FakeRedis::cmd_time, false, false, Keys::none},
            {"ZADD", &FakeRedis::cmd_zadd, true, true},
            {"ZREM", &FakeRedis::cmd_zrem, true, false},
            {"ZRANGEBYSCORE", &FakeRedis::cmd_zrangebyscore, false, false},
            {"ZSCORE", &FakeRedis::cmd_zscore, false, false},
            {"ZCARD", &FakeRedis::cmd_zcard, false, false},
            {"ZREMRANGEBYSCORE", &FakeRedis::cmd_zremrangebyscore, true, false},
            {"HSET", &FakeRedis::cmd_hset, true, true},
            {"HMGET", &FakeRedis::cmd_hmget, false, false},
            {"HDEL", &FakeRedis::cmd_hdel, true, false},
            {"HGETALL", &FakeRedis::cmd_hgetall, false, false},
            {"HEXISTS", &FakeRedis::cmd_hexists, false, false},
            {"HLEN", &FakeRedis::cmd_hlen, false, false},
            {"HGET", &FakeRedis::cmd_hget, false, false},
            {"HSETNX", &FakeRedis::cmd_hsetnx, true, true},
            {"HINCRBY", &FakeRedis::cmd_hincrby, true, true},
            {"SADD", &FakeRedis::cmd_sadd, true, true},
            {"SMEMBERS", &FakeRedis::cmd_smembers, false, false},
            {"SRANDMEMBER", &FakeRedis::cmd_srandmember, false, false},
            {"PEXPIRE", &FakeRedis::cmd_pexpire, true, false},
            {"PTTL", &FakeRedis::cmd_pttl, false, false},
            {"TYPE", &FakeRedis::cmd_type, false, false},
        };
        for (const Spec &spec : specs) {
            if (name != spec.name) continue;
            if (in_script_ && declared_only_) {
                const std::size_t last = spec.keys == Keys::all ? args.size() : spec.keys == Keys::first ? 2 : 1;
                for (std::size_t i = 1; i < last && i < args.size(); ++i)
                    if (!declared_.count(args[i]))
                        return Reply::error("ERR spend-cap fake: the script touched key '" + args[i] +
                                            "', which is not among its KEYS");
            }
            // Redis's scriptVerifyOOM / processCommand: a command that may
            // grow memory is refused, unless the script has written already.
            if (oom && spec.denyoom && !(in_script_ && script_wrote_)) return Reply::error(kOomError);
            if (spec.write && in_script_) script_wrote_ = true;
            return (this->*spec.run)(args);
        }
        return Reply::error("ERR unknown command '" + args[0] + "'");
    }

private:
    enum class Keys { none, first, all };  // which arguments of a command are keys
    std::map<std::string, Value> data_;
    std::set<std::string> declared_;
    bool declared_only_ = false;
    long long last_stream_ms_ = 0, stream_seq_ = 0;
    bool in_script_ = false, script_wrote_ = false;

    static Reply wrong_args(const std::string &cmd) {
        return Reply::error("ERR wrong number of arguments for '" + cmd + "' command");
    }
    static Reply wrong_type() {
        return Reply::error("WRONGTYPE Operation against a key holding the wrong kind of value");
    }
    static Reply not_integer() { return Reply::error("ERR value is not an integer or out of range"); }
    static Reply syntax() { return Reply::error("ERR syntax error"); }
    static std::string upper(std::string s) {
        for (char &c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        return s;
    }

    bool expired(const Value &v) const { return v.expire_at_ms != 0 && now_ms() > v.expire_at_ms; }
    void purge_all() {
        for (auto it = data_.begin(); it != data_.end();) it = expired(it->second) ? data_.erase(it) : std::next(it);
    }
    Value *find(const std::string &key) {
        auto it = data_.find(key);
        if (it == data_.end()) return nullptr;
        if (expired(it->second)) {
            data_.erase(it);
            return nullptr;
        }
        return &it->second;
    }
    static std::vector<std::pair<std::string, double>> ordered(const Value &v) {
        std::vector<std::pair<std::string, double>> out(v.zset.begin(), v.zset.end());
        std::stable_sort(out.begin(), out.end(), [](const auto &a, const auto &b) {
            return a.second < b.second;  // ties stay in member order (memcmp)
        });
        return out;
    }

    Reply cmd_get(const std::vector<std::string> &a) {
        if (a.size() != 2) return wrong_args("get");
        const Value *v = find(a[1]);
        if (!v) return Reply::nil();
        if (v->type != Type::string) return wrong_type();
        return Reply::bulk(v->str);
    }

    // As Redis: nil for a missing key and for one of another type.
    Reply cmd_mget(const std::vector<std::string> &a) {
        if (a.size() < 2) return wrong_args("mget");
        Reply out = Reply::array({});
        for (std::size_t i = 1; i < a.size(); ++i) {
            const Value *v = find(a[i]);
            out.elements.push_back(v && v->type == Type::string ? Reply::bulk(v->str) : Reply::nil());
        }
        return out;
    }

    Reply cmd_set(const std::vector<std::string> &a) {
        if (a.size() < 3) return wrong_args("set");
        bool nx = false, xx = false;
        std::int64_t expire_at_ms = 0;
        for (std::size_t i = 3; i < a.size(); ++i) {
            const std::string opt = upper(a[i]);
            if (opt == "NX") {
                nx = true;
            } else if (opt == "XX") {
                xx = true;
            } else if ((opt == "EX" || opt == "PX") && i + 1 < a.size()) {
                long long n = 0;
                if (!parse_redis_int(a[++i], n)) return not_integer();
                long long ms = n;
                if (n <= 0 || (opt == "EX" && __builtin_mul_overflow(n, 1000LL, &ms)) ||
                    __builtin_add_overflow(ms, now_ms(), &ms))
                    return Reply::error("ERR invalid expire time in 'set' command");
                expire_at_ms = ms;
            } else {
                return syntax();
            }
        }
        if (nx && xx) return syntax();
        const bool present = find(a[1]) != nullptr;
        if ((nx && present) || (xx && !present)) return Reply::nil();
        Value v;
        v.str = a[2];
        v.expire_at_ms = expire_at_ms;
        data_[a[1]] = v;
        return Reply::status("OK");
    }

    Reply cmd_incrby(const std::vector<std::string> &a) {
        if (a.size() != 3) return wrong_args("incrby");
        long long delta = 0;
        if (!parse_redis_int(a[2], delta)) return not_integer();
        Value *v = find(a[1]);
        long long current = 0;
        if (v) {
            if (v->type != Type::string) return wrong_type();
            if (!parse_redis_int(v->str, current)) return not_integer();
        }
        long long result = 0;
        if (__builtin_add_overflow(current, delta, &result))
            return Reply::error("ERR increment or decrement would overflow");
        if (!v) v = &data_[a[1]];
        v->str = std::to_string(result);  // INCRBY keeps the key's TTL
        return Reply::of_integer(result);
    }

    Reply cmd_expireat(const std::vector<std::string> &a) {
        if (a.size() != 3) return wrong_args("expireat");
        long long at = 0, ms = 0;
        if (!parse_redis_int(a[2], at)) return not_integer();
        if (__builtin_mul_overflow(at, 1000LL, &ms))
            return Reply::error("ERR invalid expire time in 'expireat' command");
        Value *v = find(a[1]);
        if (!v) return Reply::of_integer(0);
        if (ms <= now_ms()) {
            data_.erase(a[1]);  // a time not in the future deletes the key
        } else {
            v->expire_at_ms = ms;
        }
        return Reply::of_integer(1);
    }

    // PEXPIRE key ms [NX|XX|GT|LT] (Redis 7.0's expireGenericCommand and
    // parseExtendedExpireArgumentsOrReply: options first, then the number,
    // then the key).
    Reply cmd_pexpire(const std::vector<std::string> &a) {
        if (a.size() < 3) return wrong_args("pexpire");
        bool nx = false, xx = false, gt = false, lt = false;
        for (std::size_t i = 3; i < a.size(); ++i) {
            const std::string opt = upper(a[i]);
            if (opt == "NX") nx = true;
            else if (opt == "XX") xx = true;
            else if (opt == "GT") gt = true;
            else if (opt == "LT") lt = true;
            else return Reply::error("ERR Unsupported option " + a[i]);
        }
        if (nx && (xx || gt || lt))
            return Reply::error("ERR NX and XX, GT or LT options at the same time are not compatible");
        if (gt && lt) return Reply::error("ERR GT and LT options at the same time are not compatible");
        long long ms = 0;
        if (!parse_redis_int(a[2], ms)) return not_integer();
        if (ms > LLONG_MAX - now_ms()) return Reply::error("ERR invalid expire time in 'pexpire' command");
        const long long at = ms + now_ms();
        Value *v = find(a[1]);
        if (!v) return Reply::of_integer(0);
        const long long current = v->expire_at_ms ? v->expire_at_ms : -1;  // -1: none, as getExpire
        if (nx && current != -1) return Reply::of_integer(0);
        if (xx && current == -1) return Reply::of_integer(0);
        if (gt && (current == -1 || at <= current)) return Reply::of_integer(0);  // none counts as infinite
        if (lt && current != -1 && at >= current) return Reply::of_integer(0);
        if (at <= now_ms()) {
            data_.erase(a[1]);  // checkAlreadyExpired: the key goes, and the reply is 1
        } else {
            v->expire_at_ms = at;
        }
        return Reply::of_integer(1);
    }

    Reply cmd_pttl(const std::vector<std::string> &a) {
        if (a.size() != 2) return wrong_args("pttl");
        const Value *v = find(a[1]);
        if (!v) return Reply::of_integer(-2);
        if (!v->expire_at_ms) return Reply::of_integer(-1);
        return Reply::of_integer(std::max<long long>(0, v->expire_at_ms - now_ms()));
    }

    Reply cmd_type(const std::vector<std::string> &a) {
        if (a.size() != 2) return wrong_args("type");
        const Value *v = find(a[1]);
        if (!v) return Reply::status("none");
        switch (v->type) {
        case Type::string: return Reply::status("string");
        case Type::stream: return Reply::status("stream");
        case Type::zset: return Reply::status("zset");
        case Type::hash: return Reply::status("hash");
        case Type::set: return Reply::status("set");
        }
        return Reply::status("none");
    }

    Reply cmd_del(const std::vector<std::string> &a) { return del_exists(a, true); }
    Reply cmd_exists(const std::vector<std::string> &a) { return del_exists(a, false); }
    Reply del_exists(const std::vector<std::string> &a, bool del) {
        if (a.size() < 2) return wrong_args(del ? "del" : "exists");
        long long n = 0;
        for (std::size_t i = 1; i < a.size(); ++i) {
            if (find(a[i])) {
                ++n;
                if (del) data_.erase(a[i]);
            }
        }
        return Reply::of_integer(n);
    }

    Reply cmd_time(const std::vector<std::string> &a) {
        if (a.size() != 1) return wrong_args("time");
        return Reply::array({Reply::bulk(std::to_string(now)), Reply::bulk(std::to_string(micros))});
    }

    Reply cmd_xadd(const std::vector<std::string> &a) {
        if (a.size() < 5) return wrong_args("xadd");
        std::size_t i = 2;
        bool nomkstream = false;
        std::optional<long long> maxlen;
        std::string trim;
        for (;;) {
            const std::string opt = upper(a[i]);
            if (opt == "NOMKSTREAM") {
                nomkstream = true;
                ++i;
            } else if (opt == "MAXLEN") {
                if (i + 1 >= a.size()) return syntax();
                ++i;
                trim = "MAXLEN";
                if (a[i] == "~" || a[i] == "=") trim += " " + a[i++];
                long long n = 0;
                if (i >= a.size() || !parse_redis_int(a[i], n) || n < 0) return not_integer();
                trim += " " + a[i++];
                maxlen = n;
            } else {
                break;
            }
            if (i >= a.size()) return wrong_args("xadd");
        }
        if (a[i] != "*") return Reply::error("ERR this fake XADD only takes the id '*'");
        ++i;
        if (i >= a.size() || (a.size() - i) % 2 != 0) return wrong_args("xadd");
        Value *v = find(a[1]);
        if (v && v->type != Type::stream) return wrong_type();
        if (!v) {
            if (nomkstream) return Reply::nil();
            v = &data_[a[1]];
            v->type = Type::stream;
        }
        const long long ms = now_ms();
        if (ms > last_stream_ms_) {
            last_stream_ms_ = ms;
            stream_seq_ = 0;
        } else {
            ++stream_seq_;
        }
        StreamEntry entry;
        entry.id = std::to_string(last_stream_ms_) + "-" + std::to_string(stream_seq_);
        entry.fields.assign(a.begin() + static_cast<std::ptrdiff_t>(i), a.end());
        v->stream.push_back(entry);
        if (maxlen) {
            // '~' lets Redis keep more; trimming exactly is one valid outcome.
            while (static_cast<long long>(v->stream.size()) > *maxlen) v->stream.erase(v->stream.begin());
            trims[a[1]] = trim;
        }
        return Reply::bulk(entry.id);
    }

    // ZADD key [NX|XX] [GT|LT] [CH] score member [score member ...]
    Reply cmd_zadd(const std::vector<std::string> &a) {
        if (a.size() < 4) return wrong_args("zadd");
        bool nx = false, xx = false, gt = false, lt = false, ch = false;
        std::size_t i = 2;
        for (; i < a.size(); ++i) {
            const std::string opt = upper(a[i]);
            if (opt == "NX") nx = true;
            else if (opt == "XX") xx = true;
            else if (opt == "GT") gt = true;
            else if (opt == "LT") lt = true;
            else if (opt == "CH") ch = true;
            else if (opt == "INCR") return Reply::error("ERR this fake ZADD does not take INCR");
            else break;
        }
        const std::size_t elements = a.size() - i;
        if (elements == 0 || elements % 2 != 0) return syntax();
        if (nx && xx) return Reply::error("ERR XX and NX options at the same time are not compatible");
        if ((gt && nx) || (lt && nx) || (gt && lt))
            return Reply::error("ERR GT, LT, and/or NX options at the same time are not compatible");
        std::vector<std::pair<double, std::string>> pairs;
        for (std::size_t j = i; j < a.size(); j += 2) {
            double score = 0;
            if (!parse_redis_double(a[j], score)) return Reply::error("ERR value is not a valid float");
            pairs.emplace_back(score, a[j + 1]);
        }
        Value *v = find(a[1]);
        if (v && v->type != Type::zset) return wrong_type();
        if (!v) {
            if (xx) return Reply::of_integer(0);
            v = &data_[a[1]];
            v->type = Type::zset;
        }
        long long added = 0, changed = 0;
        for (const auto &[score, member] : pairs) {
            auto it = v->zset.find(member);
            if (it == v->zset.end()) {
                if (xx) continue;
                v->zset[member] = score;
                ++added;
            } else {
                if (nx || (gt && score <= it->second) || (lt && score >= it->second)) continue;
                if (score != it->second) {
                    it->second = score;
                    ++changed;
                }
            }
        }
        if (v->zset.empty()) data_.erase(a[1]);  // XX / NX on a new key added nothing
        return Reply::of_integer(added + (ch ? changed : 0));
    }

    Reply cmd_zrem(const std::vector<std::string> &a) {
        if (a.size() < 3) return wrong_args("zrem");
        Value *v = find(a[1]);
        if (!v) return Reply::of_integer(0);
        if (v->type != Type::zset) return wrong_type();
        long long removed = 0;
        for (std::size_t i = 2; i < a.size(); ++i) removed += static_cast<long long>(v->zset.erase(a[i]));
        if (v->zset.empty()) data_.erase(a[1]);
        return Reply::of_integer(removed);
    }

    // zslParseRange: "(" makes the bound exclusive; strtod, so "-inf",
    // "+inf", "inf" and even "" (0) parse; NaN does not.
    static bool parse_bound(const std::string &s, double &value, bool &exclusive) {
        exclusive = !s.empty() && s[0] == '(';
        const char *start = s.c_str() + (exclusive ? 1 : 0);
        char *end = nullptr;
        value = std::strtod(start, &end);
        return *end == '\0' && !std::isnan(value);
    }

    // ZRANGEBYSCORE key min max [WITHSCORES] [LIMIT offset count]
    Reply cmd_zrangebyscore(const std::vector<std::string> &a) {
        if (a.size() < 4) return wrong_args("zrangebyscore");
        bool withscores = false;
        long long offset = 0, count = -1;
        for (std::size_t j = 4; j < a.size(); ++j) {
            const std::string opt = upper(a[j]);
            if (opt == "WITHSCORES") {
                withscores = true;
            } else if (opt == "LIMIT" && j + 2 < a.size()) {
                if (!parse_redis_int(a[j + 1], offset) || !parse_redis_int(a[j + 2], count)) return not_integer();
                j += 2;
            } else {
                return syntax();
            }
        }
        double min = 0, max = 0;
        bool minex = false, maxex = false;
        if (!parse_bound(a[2], min, minex) || !parse_bound(a[3], max, maxex))
            return Reply::error("ERR min or max is not a float");
        Reply out = Reply::array({});
        Value *v = find(a[1]);
        if (!v) return out;
        if (v->type != Type::zset) return wrong_type();
        if (offset < 0) return out;  // Redis skips everything
        for (const auto &[member, score] : ordered(*v)) {
            if (minex ? score <= min : score < min) continue;
            if (maxex ? score >= max : score > max) break;
            if (offset > 0) {
                --offset;
                continue;
            }
            if (count == 0) break;
            if (count > 0) --count;
            out.elements.push_back(Reply::bulk(member));
            if (withscores) out.elements.push_back(Reply::bulk(format_score(score)));
        }
        return out;
    }

    Reply cmd_zscore(const std::vector<std::string> &a) {
        if (a.size() != 3) return wrong_args("zscore");
        const Value *v = find(a[1]);
        if (!v) return Reply::nil();
        if (v->type != Type::zset) return wrong_type();
        auto it = v->zset.find(a[2]);
        return it == v->zset.end() ? Reply::nil() : Reply::bulk(format_score(it->second));
    }

    Reply cmd_zcard(const std::vector<std::string> &a) {
        if (a.size() != 2) return wrong_args("zcard");
        const Value *v = find(a[1]);
        if (!v) return Reply::of_integer(0);
        if (v->type != Type::zset) return wrong_type();
        return Reply::of_integer(static_cast<long long>(v->zset.size()));
    }

    // HSET key field value [field value ...]: the fields that were new.
    Reply cmd_hset(const std::vector<std::string> &a) {
        if (a.size() < 4 || a.size() % 2 != 0) return wrong_args("hset");
        Value *v = find(a[1]);
        if (v && v->type != Type::hash) return wrong_type();
        if (!v) {
            v = &data_[a[1]];
            v->type = Type::hash;
        }
        long long added = 0;
        for (std::size_t i = 2; i + 1 < a.size(); i += 2) {
            // A field given twice counts once: the second write updates it.
            if (v->hash.insert_or_assign(a[i], a[i + 1]).second) ++added;
        }
        return Reply::of_integer(added);  // the key's expiry stays
    }

    Reply cmd_hmget(const std::vector<std::string> &a) {
        if (a.size() < 3) return wrong_args("hmget");
        const Value *v = find(a[1]);
        if (v && v->type != Type::hash) return wrong_type();
        Reply out = Reply::array({});
        for (std::size_t i = 2; i < a.size(); ++i) {
            if (!v) {
                out.elements.push_back(Reply::nil());
                continue;
            }
            auto it = v->hash.find(a[i]);
            out.elements.push_back(it == v->hash.end() ? Reply::nil() : Reply::bulk(it->second));
        }
        return out;
    }

    Reply cmd_hdel(const std::vector<std::string> &a) {
        if (a.size() < 3) return wrong_args("hdel");
        Value *v = find(a[1]);
        if (!v) return Reply::of_integer(0);
        if (v->type != Type::hash) return wrong_type();
        long long removed = 0;
        for (std::size_t i = 2; i < a.size(); ++i) removed += static_cast<long long>(v->hash.erase(a[i]));
        if (v->hash.empty()) data_.erase(a[1]);
        return Reply::of_integer(removed);
    }

    // Field order (memcmp), not Redis's insertion order of a small hash: a
    // test should not rely on HGETALL's order.
    Reply cmd_hgetall(const std::vector<std::string> &a) {
        if (a.size() != 2) return wrong_args("hgetall");
        const Value *v = find(a[1]);
        Reply out = Reply::array({});
        if (!v) return out;
        if (v->type != Type::hash) return wrong_type();
        for (const auto &[field, value] : v->hash) {
            out.elements.push_back(Reply::bulk(field));
            out.elements.push_back(Reply::bulk(value));
        }
        return out;
    }

    Reply cmd_hexists(const std::vector<std::string> &a) {
        if (a.size() != 3) return wrong_args("hexists");
        const Value *v = find(a[1]);
        if (!v) return Reply::of_integer(0);
        if (v->type != Type::hash) return wrong_type();
        return Reply::of_integer(v->hash.count(a[2]) ? 1 : 0);
    }

    Reply cmd_hlen(const std::vector<std::string> &a) {
        if (a.size() != 2) return wrong_args("hlen");
        const Value *v = find(a[1]);
        if (!v) return Reply::of_integer(0);
        if (v->type != Type::hash) return wrong_type();
        return Reply::of_integer(static_cast<long long>(v->hash.size()));
    }

    Reply cmd_incr(const std::vector<std::string> &a) {
        if (a.size() != 2) return wrong_args("incr");
        return cmd_incrby({"INCRBY", a[1], "1"});
    }

    Reply cmd_hget(const std::vector<std::string> &a) {
        if (a.size() != 3) return wrong_args("hget");
        const Value *v = find(a[1]);
        if (!v) return Reply::nil();
        if (v->type != Type::hash) return wrong_type();
        auto it = v->hash.find(a[2]);
        return it == v->hash.end() ? Reply::nil() : Reply::bulk(it->second);
    }

    Reply cmd_hsetnx(const std::vector<std::string> &a) {
        if (a.size() != 4) return wrong_args("hsetnx");
        Value *v = find(a[1]);
        if (v && v->type != Type::hash) return wrong_type();
        if (v && v->hash.count(a[2])) return Reply::of_integer(0);
        if (!v) {
            v = &data_[a[1]];
            v->type = Type::hash;
        }
        v->hash[a[2]] = a[3];
        return Reply::of_integer(1);
    }

    // HINCRBY: "ERR hash value is not an integer" for a field that is not one.
    Reply cmd_hincrby(const std::vector<std::string> &a) {
        if (a.size() != 4) return wrong_args("hincrby");
        long long delta = 0;
        if (!parse_redis_int(a[3], delta)) return not_integer();
        Value *v = find(a[1]);
        if (v && v->type != Type::hash) return wrong_type();
        long long current = 0;
        if (v) {
            auto it = v->hash.find(a[2]);
            if (it != v->hash.end() && !parse_redis_int(it->second, current))
                return Reply::error("ERR hash value is not an integer");
        }
        long long result = 0;
        if (__builtin_add_overflow(current, delta, &result))
            return Reply::error("ERR increment or decrement would overflow");
        if (!v) {
            v = &data_[a[1]];
            v->type = Type::hash;
        }
        v->hash[a[2]] = std::to_string(result);
        return Reply::of_integer(result);
    }

    Reply cmd_zremrangebyscore(const std::vector<std::string> &a) {
        if (a.size() != 4) return wrong_args("zremrangebyscore");
        double min = 0, max = 0;
        bool minex = false, maxex = false;
        if (!parse_bound(a[2], min, minex) || !parse_bound(a[3], max, maxex))
            return Reply::error("ERR min or max is not a float");
        Value *v = find(a[1]);
        if (!v) return Reply::of_integer(0);
        if (v->type != Type::zset) return wrong_type();
        long long removed = 0;
        for (auto it = v->zset.begin(); it != v->zset.end();) {
            const double score = it->second;
            const bool in = (minex ? score > min : score >= min) && (maxex ? score < max : score <= max);
            if (in) {
                it = v->zset.erase(it);
                ++removed;
            } else {
                ++it;
            }
        }
        if (v->zset.empty()) data_.erase(a[1]);
        return Reply::of_integer(removed);
    }

    Reply cmd_sadd(const std::vector<std::string> &a) {
        if (a.size() < 3) return wrong_args("sadd");
        Value *v = find(a[1]);
        if (v && v->type != Type::set) return wrong_type();
        if (!v) {
            v = &data_[a[1]];
            v->type = Type::set;
        }
        long long added = 0;
        for (std::size_t i = 2; i < a.size(); ++i) added += v->members.insert(a[i]).second ? 1 : 0;
        return Reply::of_integer(added);
    }

    Reply cmd_smembers(const std::vector<std::string> &a) {
        if (a.size() != 2) return wrong_args("smembers");
        const Value *v = find(a[1]);
        Reply out = Reply::array({});
        if (!v) return out;
        if (v->type != Type::set) return wrong_type();
        for (const std::string &m : v->members) out.elements.push_back(Reply::bulk(m));
        return out;
    }

    // SRANDMEMBER key count (count >= 0): here the first `count` members.
    Reply cmd_srandmember(const std::vector<std::string> &a) {
        if (a.size() != 3) return wrong_args("srandmember");
        long long count = 0;
        if (!parse_redis_int(a[2], count) || count < 0) return not_integer();
        const Value *v = find(a[1]);
        Reply out = Reply::array({});
        if (!v) return out;
        if (v->type != Type::set) return wrong_type();
        for (const std::string &m : v->members) {
            if (static_cast<long long>(out.elements.size()) == count) break;
            out.elements.push_back(Reply::bulk(m));
        }
        return out;
    }
};

// Readable snapshots in gtest's failure messages.
inline void PrintTo(const FakeRedis::Value &v, std::ostream *os) {
    switch (v.type) {
    case FakeRedis::Type::string: *os << '"' << v.str << '"'; break;
    case FakeRedis::Type::stream: *os << "stream of " << v.stream.size(); break;
    case FakeRedis::Type::zset:
        *os << "zset{";
        for (const auto &[member, score] : v.zset) *os << member << "=" << format_score(score) << " ";
        *os << "}";
        break;
    case FakeRedis::Type::set:
        *os << "set{";
        for (const auto &m : v.members) *os << m << " ";
        *os << "}";
        break;
    case FakeRedis::Type::hash:
        *os << "hash{";
        for (const auto &[field, value] : v.hash) *os << field << "=\"" << value << "\" ";
        *os << "}";
        break;
    }
    if (v.expire_at_ms) *os << " px@" << v.expire_at_ms;
}

// Redis Cluster's slot of a key: CRC16 (XMODEM) of its hash tag (the part
// between the first '{' and the next '}', when not empty), else of all of it.
inline unsigned crc16(const std::string &s) {
    unsigned crc = 0;
    for (unsigned char c : s) {
        crc ^= static_cast<unsigned>(c) << 8;
        for (int i = 0; i < 8; ++i) crc = (crc & 0x8000) ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    }
    return crc;
}
inline unsigned key_slot(const std::string &key) {
    const std::size_t open = key.find('{');
    if (open != std::string::npos) {
        const std::size_t close = key.find('}', open + 1);
        if (close != std::string::npos && close != open + 1) return crc16(key.substr(open + 1, close - open - 1)) % 16384;
    }
    return crc16(key) % 16384;
}
// Whether a call's keys would all be on one node of a cluster.
inline bool one_slot(const std::vector<std::string> &keys) {
    for (const std::string &k : keys)
        if (key_slot(k) != key_slot(keys.front())) return false;
    return true;
}

// Runs scripts by SHA-1 against a FakeRedis, one fresh interpreter per call.
class LuaRunner {
public:
    explicit LuaRunner(FakeRedis &redis) : redis_(redis) {}

    void add_script(const std::string &sha1, const std::string &text) { scripts_[sha1] = text; }

    // argv as the module sends it: EVALSHA SHA NUMKEYS KEY... ARG...
    Reply evalsha(const std::vector<std::string> &argv) {
        if (argv.size() < 3 || argv[0] != "EVALSHA") return Reply::error("ERR not an EVALSHA command");
        auto script = scripts_.find(argv[1]);
        if (script == scripts_.end()) return Reply::error("NOSCRIPT No matching script. Please use EVAL.");
        long long numkeys = 0;
        if (!parse_redis_int(argv[2], numkeys) || numkeys < 0)
            return Reply::error("ERR value is not an integer or out of range");
        if (static_cast<unsigned long long>(numkeys) > argv.size() - 3)
            return Reply::error("ERR Number of keys can't be greater than number of args");
        std::vector<std::string> keys(argv.begin() + 3, argv.begin() + 3 + numkeys);
        std::vector<std::string> args(argv.begin() + 3 + numkeys, argv.end());
        if (!one_slot(keys)) return Reply::error("CROSSSLOT Keys in request don't hash to the same slot");
        return run(script->second, keys, args, "f_" + argv[1], true);
    }

    // Runs `text` directly (helpers extracted from a script, checks on them).
    // `funcname` is what error replies call the script (Redis: f_SHA1).
    // `declared_only`: a command on a key not among `keys` is an error (as
    // for every script the module sends: evalsha).
    Reply run(const std::string &text, const std::vector<std::string> &keys,
              const std::vector<std::string> &args, const std::string &funcname = "f_test",
              bool declared_only = false) {
        lua_State *L = luaL_newstate();
        if (!L) return Reply::error("ERR out of memory");
        open_libs(L);
        push_string_array(L, keys);
        lua_setglobal(L, "KEYS");
        push_string_array(L, args);
        lua_setglobal(L, "ARGV");
        lua_newtable(L);
        lua_pushlightuserdata(L, &redis_);
        lua_pushcclosure(L, &LuaRunner::redis_generic<true>, 1);
        lua_setfield(L, -2, "call");
        lua_pushlightuserdata(L, &redis_);
        lua_pushcclosure(L, &LuaRunner::redis_generic<false>, 1);
        lua_setfield(L, -2, "pcall");
        lua_pushcfunction(L, &LuaRunner::error_reply);
        lua_setfield(L, -2, "error_reply");
        lua_pushcfunction(L, &LuaRunner::status_reply);
        lua_setfield(L, -2, "status_reply");
        lua_setglobal(L, "redis");
        protect_globals(L);

        lua_pushcfunction(L, &LuaRunner::error_handler);
        const int handler = lua_gettop(L);
        Reply reply;
        redis_.begin_script(keys, declared_only);
        if (luaL_loadbuffer(L, text.data(), text.size(), "@user_script") != 0) {
            reply = Reply::error(std::string("ERR Error compiling script (new function): ") + lua_tostring(L, -1));
        } else if (lua_pcall(L, 0, 1, handler) != 0) {
            reply = error_of(L, funcname);
        } else {
            reply = to_reply(L, -1);
        }
        redis_.end_script();
        lua_close(L);
        return reply;
    }

private:
    FakeRedis &redis_;
    std::map<std::string, std::string> scripts_;

    static void open_libs(lua_State *L) {
        const luaL_Reg libs[] = {{"", luaopen_base},
                                 {LUA_TABLIBNAME, luaopen_table},
                                 {LUA_STRLIBNAME, luaopen_string},
                                 {LUA_MATHLIBNAME, luaopen_math}};
        for (const luaL_Reg &lib : libs) {
            lua_pushcfunction(L, lib.func);
            lua_pushstring(L, lib.name);
            lua_call(L, 1, 0);
        }
        // Redis removes these.
        for (const char *name : {"loadfile", "dofile"}) {
            lua_pushnil(L);
            lua_setglobal(L, name);
        }
    }

    // As Redis's scriptingEnableGlobalsProtection: no new globals, and reading
    // an undefined one is an error rather than nil.
    static void protect_globals(lua_State *L) {
        static const char kProtect[] = R"lua(
local mt = {}
setmetatable(_G, mt)
mt.__newindex = function(t, n, v)
  error("Script attempted to create global variable '" .. tostring(n) .. "'", 2)
end
mt.__index = function(t, n)
  error("Script attempted to access nonexistent global variable '" .. tostring(n) .. "'", 2)
end
)lua";
        if (luaL_loadbuffer(L, kProtect, sizeof(kProtect) - 1, "=protect") != 0 || lua_pcall(L, 0, 0, 0) != 0)
            ADD_FAILURE() << "could not protect globals: " << lua_tostring(L, -1);
    }

    static void push_string_array(lua_State *L, const std::vector<std::string> &items) {
        lua_createtable(L, static_cast<int>(items.size()), 0);
        for (std::size_t i = 0; i < items.size(); ++i) {
            lua_pushlstring(L, items[i].data(), items[i].size());
            lua_rawseti(L, -2, static_cast<int>(i + 1));
        }
    }

    static void push_error_table(lua_State *L, const std::string &message) {
        lua_newtable(L);
        lua_pushlstring(L, message.data(), message.size());
        lua_setfield(L, -2, "err");
    }

    static void push_reply(lua_State *L, const Reply &r) {
        switch (r.type) {
        case Reply::Type::nil: lua_pushboolean(L, 0); break;
        case Reply::Type::integer: lua_pushnumber(L, static_cast<lua_Number>(r.integer)); break;
        case Reply::Type::string: lua_pushlstring(L, r.str.data(), r.str.size()); break;
        case Reply::Type::status:
            lua_newtable(L);
            lua_pushlstring(L, r.str.data(), r.str.size());
            lua_setfield(L, -2, "ok");
            break;
        case Reply::Type::error: push_error_table(L, r.str); break;  // in arrays, and for pcall
        case Reply::Type::array:
            lua_createtable(L, static_cast<int>(r.elements.size()), 0);
            for (std::size_t i = 0; i < r.elements.size(); ++i) {
                push_reply(L, r.elements[i]);
                lua_rawseti(L, -2, static_cast<int>(i + 1));
            }
            break;
        }
    }

    // redis.call (Raise) / redis.pcall: no C++ object with a destructor may
    // be alive when lua_error longjmps, hence the inner scope.
    template <bool Raise>
    static int redis_generic(lua_State *L) {
        bool failed = false;
        {
            FakeRedis &redis = *static_cast<FakeRedis *>(lua_touserdata(L, lua_upvalueindex(1)));
            const int argc = lua_gettop(L);
            std::vector<std::string> args;
            std::string error;
            if (argc == 0) error = "ERR Please specify at least one argument for this redis lib call";
            for (int i = 1; i <= argc && error.empty(); ++i) {
                if (lua_type(L, i) == LUA_TNUMBER) {
                    char buffer[64];
                    std::snprintf(buffer, sizeof buffer, "%.17g", static_cast<double>(lua_tonumber(L, i)));
                    args.emplace_back(buffer);
                } else if (lua_type(L, i) == LUA_TSTRING) {
                    std::size_t len = 0;
                    const char *s = lua_tolstring(L, i, &len);
                    args.emplace_back(s, len);
                } else {
                    error = "ERR Lua redis lib command arguments must be strings or integers";
                }
            }
            Reply reply;
            if (error.empty()) reply = redis.command(args);
            if (!error.empty() || reply.is_error()) {
                push_error_table(L, error.empty() ? reply.str : error);
                failed = Raise;
            } else {
                push_reply(L, reply);
            }
        }
        if (failed) return lua_error(L);
        return 1;
    }

    // redis.error_reply: "-CODE msg" or "CODE msg" as it is, a message
    // without a code gets ERR.
    static int error_reply(lua_State *L) {
        if (lua_gettop(L) != 1 || lua_type(L, 1) != LUA_TSTRING) {
            push_error_table(L, "ERR wrong number or type of arguments");
            return 1;
        }
        std::string s = lua_tostring(L, 1);
        if (!s.empty() && s[0] == '-') s.erase(0, 1);
        if (s.find(' ') == std::string::npos) s = "ERR " + s;
        push_error_table(L, s);
        return 1;
    }

    static int status_reply(lua_State *L) {
        if (lua_gettop(L) != 1 || lua_type(L, 1) != LUA_TSTRING) {
            push_error_table(L, "ERR wrong number or type of arguments");
            return 1;
        }
        lua_newtable(L);
        lua_pushvalue(L, 1);
        lua_setfield(L, -2, "ok");
        return 1;
    }

    // Redis 7's error handler: every error becomes {err = 'CODE msg'} (a
    // string error gets ERR), with the source and line of the script's
    // frame that raised it (C functions and the globals guard skipped).
    static int error_handler(lua_State *L) {
        lua_Debug ar;
        bool where = false;
        for (int level = 1; lua_getstack(L, level, &ar); ++level) {
            lua_getinfo(L, "Sl", &ar);
            if (std::strcmp(ar.what, "C") != 0 && std::strcmp(ar.source, "=protect") != 0) {
                where = true;
                break;
            }
        }
        if (!lua_istable(L, 1)) {
            lua_newtable(L);
            lua_pushstring(L, "ERR ");
            if (lua_isstring(L, 1))
                lua_pushvalue(L, 1);
            else
                lua_pushstring(L, lua_typename(L, lua_type(L, 1)));
            lua_concat(L, 2);
            lua_setfield(L, -2, "err");
            lua_replace(L, 1);
        }
        if (where) {
            lua_pushstring(L, ar.source);
            lua_setfield(L, 1, "source");
            lua_pushinteger(L, ar.currentline);
            lua_setfield(L, 1, "line");
        }
        lua_settop(L, 1);
        return 1;
    }

    // Error replies carry no line breaks.
    static Reply one_line_error(std::string s) {
        std::replace(s.begin(), s.end(), '\r', ' ');
        std::replace(s.begin(), s.end(), '\n', ' ');
        return Reply::error(std::move(s));
    }

    // The reply to a script stopped by an error (luaCallFunction).
    static Reply error_of(lua_State *L, const std::string &funcname) {
        const int index = lua_gettop(L);
        if (!lua_istable(L, index)) {
            const char *msg = lua_isstring(L, index) ? lua_tostring(L, index) : "execution failure";
            return one_line_error("ERR Error running script " + funcname + ", " + std::string(msg).substr(0, 100));
        }
        lua_getfield(L, index, "err");
        std::string message = lua_isstring(L, -1) ? lua_tostring(L, -1) : "ERR (error object)";
        lua_getfield(L, index, "source");
        lua_getfield(L, index, "line");
        if (lua_isstring(L, -2) && lua_isstring(L, -1))
            message += std::string(" script: ") + funcname + ", on " + lua_tostring(L, -2) + ":" +
                       lua_tostring(L, -1) + ".";
        lua_pop(L, 3);
        return one_line_error(message);
    }

    static Reply to_reply(lua_State *L, int index) {
        index = index < 0 ? lua_gettop(L) + index + 1 : index;
        switch (lua_type(L, index)) {
        case LUA_TNUMBER: {
            const lua_Number d = lua_tonumber(L, index);
            // Redis casts to long long; outside int64 that is undefined, so a
            // test reaching it is told so.
            if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0))
                return Reply::error("FAKE script returned a number outside int64");
            return Reply::of_integer(static_cast<long long>(d));
        }
        case LUA_TSTRING: {
            std::size_t len = 0;
            const char *s = lua_tolstring(L, index, &len);
            return Reply::bulk(std::string(s, len));
        }
        case LUA_TBOOLEAN: return lua_toboolean(L, index) ? Reply::of_integer(1) : Reply::nil();
        case LUA_TTABLE: {
            lua_getfield(L, index, "err");
            if (lua_type(L, -1) == LUA_TSTRING) {
                Reply r = one_line_error(lua_tostring(L, -1));
                lua_pop(L, 1);
                return r;
            }
            lua_pop(L, 1);
            lua_getfield(L, index, "ok");
            if (lua_type(L, -1) == LUA_TSTRING) {
                Reply r = Reply::status(lua_tostring(L, -1));
                lua_pop(L, 1);
                return r;
            }
            lua_pop(L, 1);
            Reply array;
            array.type = Reply::Type::array;
            for (int j = 1;; ++j) {
                lua_rawgeti(L, index, j);
                if (lua_isnil(L, -1)) {
                    lua_pop(L, 1);
                    break;
                }
                array.elements.push_back(to_reply(L, -1));
                lua_pop(L, 1);
            }
            return array;
        }
        default: return Reply::nil();
        }
    }
};

}  // namespace spendcap_test
