// A small in-memory Redis and an embedded Lua 5.1 interpreter that runs the
// module's real reserve / settle scripts the way Redis's EVALSHA does, for
// t/unit/lua_scripts_test.cpp.
//
// What is mimicked (Redis 5/6/7 scripting, Lua 5.1):
//  - KEYS / ARGV built from the EVALSHA argv the module sends, the script
//    chosen by its SHA-1 (NOSCRIPT otherwise);
//  - libraries base, table, string, math; globals protected (creating or
//    reading an undeclared global is an error, as in Redis);
//  - redis.call arguments: strings as they are, numbers as "%.17g", anything
//    else an error; replies: integer -> number, bulk -> string, nil bulk ->
//    false, status -> {ok = 'OK'}, array -> table, error -> a Lua error that
//    aborts the script (EVAL then answers an error);
//  - the script's return value: number -> integer (truncated), string ->
//    bulk, table -> array (to the first nil) or {err=} / {ok=}, true -> 1,
//    false / nil -> nil;
//  - commands GET, SET (EX n, PX n, NX, XX), INCRBY, EXPIREAT, DEL, EXISTS,
//    XADD (NOMKSTREAM, MAXLEN [=|~] N, *), with Redis's strict integer
//    parsing, overflow and WRONGTYPE errors, and expiry on a clock the test
//    sets (`now`, unix seconds).
#pragma once

#include <lua.hpp>

#include <gtest/gtest.h>

#include <cerrno>
#include <cinttypes>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace spendcap_test {

struct Reply {
    enum class Type { nil, integer, bulk, status, error, array };
    Type type = Type::nil;
    long long integer = 0;
    std::string str;  // bulk, status, error
    std::vector<Reply> elements;

    static Reply nil() { return {}; }
    static Reply of_integer(long long v) {
        Reply r;
        r.type = Type::integer;
        r.integer = v;
        return r;
    }
    static Reply bulk(std::string s) {
        Reply r;
        r.type = Type::bulk;
        r.str = std::move(s);
        return r;
    }
    static Reply status(std::string s) {
        Reply r;
        r.type = Type::status;
        r.str = std::move(s);
        return r;
    }
    static Reply error(std::string s) {
        Reply r;
        r.type = Type::error;
        r.str = std::move(s);
        return r;
    }

    bool is_error() const { return type == Type::error; }
    // An array of integers (what the reserve script answers), as the module's
    // glue checks it before decode_reserve_reply; nullopt otherwise.
    std::optional<std::vector<long long>> integers() const {
        if (type != Type::array) return std::nullopt;
        std::vector<long long> out;
        for (const Reply &e : elements) {
            if (e.type != Type::integer) return std::nullopt;
            out.push_back(e.integer);
        }
        return out;
    }
};

inline std::ostream &operator<<(std::ostream &os, const Reply &r) {
    switch (r.type) {
    case Reply::Type::nil: return os << "(nil)";
    case Reply::Type::integer: return os << "(integer) " << r.integer;
    case Reply::Type::bulk: return os << '"' << r.str << '"';
    case Reply::Type::status: return os << "+" << r.str;
    case Reply::Type::error: return os << "-" << r.str;
    case Reply::Type::array:
        os << "[";
        for (std::size_t i = 0; i < r.elements.size(); ++i) os << (i ? ", " : "") << r.elements[i];
        return os << "]";
    }
    return os;
}

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

class FakeRedis {
public:
    struct StreamEntry {
        std::string id;
        std::vector<std::string> fields;  // field, value, field, value, ...
        bool operator==(const StreamEntry &o) const { return id == o.id && fields == o.fields; }
    };
    struct Value {
        bool is_stream = false;
        std::string str;
        std::vector<StreamEntry> stream;
        std::int64_t expire_at = 0;  // unix seconds; 0 = no expiry
        bool operator==(const Value &o) const {
            return is_stream == o.is_stream && str == o.str && stream == o.stream && expire_at == o.expire_at;
        }
    };

    std::int64_t now = 0;  // unix seconds
    // The last XADD's trimming, per stream: "MAXLEN ~ 10000".
    std::map<std::string, std::string> trims;
    // Every command run, as sent.
    std::vector<std::vector<std::string>> log;

    // The live entries (expired ones dropped), for comparing snapshots.
    const std::map<std::string, Value> &data() {
        purge_all();
        return data_;
    }
    std::optional<std::string> get(const std::string &key) {
        const Value *v = find(key);
        if (!v || v->is_stream) return std::nullopt;
        return v->str;
    }
    bool exists(const std::string &key) { return find(key) != nullptr; }
    // EXPIREAT of a live key (0 = none); -1 when the key does not exist.
    std::int64_t expire_at(const std::string &key) {
        const Value *v = find(key);
        return v ? v->expire_at : -1;
    }
    void set(const std::string &key, const std::string &value) {
        Value v;
        v.str = value;
        data_[key] = v;
    }
    std::vector<StreamEntry> stream(const std::string &key) {
        const Value *v = find(key);
        return v && v->is_stream ? v->stream : std::vector<StreamEntry>{};
    }
    std::vector<std::vector<std::string>> events(const std::string &key) {
        std::vector<std::vector<std::string>> out;
        for (const StreamEntry &e : stream(key)) out.push_back(e.fields);
        return out;
    }

    Reply command(const std::vector<std::string> &args) {
        log.push_back(args);
        if (args.empty()) return Reply::error("ERR empty command");
        std::string name = args[0];
        for (char &c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        if (name == "GET") return cmd_get(args);
        if (name == "SET") return cmd_set(args);
        if (name == "INCRBY") return cmd_incrby(args);
        if (name == "EXPIREAT") return cmd_expireat(args);
        if (name == "DEL") return cmd_del_exists(args, true);
        if (name == "EXISTS") return cmd_del_exists(args, false);
        if (name == "XADD") return cmd_xadd(args);
        return Reply::error("ERR unknown command '" + args[0] + "'");
    }

private:
    std::map<std::string, Value> data_;
    long long last_stream_ms_ = 0, stream_seq_ = 0;

    static Reply wrong_args(const std::string &cmd) {
        return Reply::error("ERR wrong number of arguments for '" + cmd + "' command");
    }
    static Reply wrong_type() {
        return Reply::error("WRONGTYPE Operation against a key holding the wrong kind of value");
    }
    static Reply not_integer() { return Reply::error("ERR value is not an integer or out of range"); }
    static Reply syntax() { return Reply::error("ERR syntax error"); }

    bool expired(const Value &v) const { return v.expire_at != 0 && v.expire_at <= now; }
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

    Reply cmd_get(const std::vector<std::string> &a) {
        if (a.size() != 2) return wrong_args("get");
        const Value *v = find(a[1]);
        if (!v) return Reply::nil();
        if (v->is_stream) return wrong_type();
        return Reply::bulk(v->str);
    }

    Reply cmd_set(const std::vector<std::string> &a) {
        if (a.size() < 3) return wrong_args("set");
        bool nx = false, xx = false;
        std::int64_t expire_at = 0;
        for (std::size_t i = 3; i < a.size(); ++i) {
            std::string opt = a[i];
            for (char &c : opt) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
            if (opt == "NX") {
                nx = true;
            } else if (opt == "XX") {
                xx = true;
            } else if ((opt == "EX" || opt == "PX") && i + 1 < a.size()) {
                long long n = 0;
                if (!parse_redis_int(a[++i], n)) return not_integer();
                if (n <= 0) return Reply::error("ERR invalid expire time in 'set' command");
                expire_at = now + (opt == "EX" ? n : (n + 999) / 1000);
            } else {
                return syntax();
            }
        }
        if (nx && xx) return syntax();
        const bool present = find(a[1]) != nullptr;
        if ((nx && present) || (xx && !present)) return Reply::nil();
        Value v;
        v.str = a[2];
        v.expire_at = expire_at;
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
            if (v->is_stream) return wrong_type();
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
        long long at = 0;
        if (!parse_redis_int(a[2], at)) return not_integer();
        Value *v = find(a[1]);
        if (!v) return Reply::of_integer(0);
        if (at <= now) {
            data_.erase(a[1]);  // a time in the past deletes the key
        } else {
            v->expire_at = at;
        }
        return Reply::of_integer(1);
    }

    Reply cmd_del_exists(const std::vector<std::string> &a, bool del) {
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

    Reply cmd_xadd(const std::vector<std::string> &a) {
        if (a.size() < 5) return wrong_args("xadd");
        std::size_t i = 2;
        bool nomkstream = false;
        std::optional<long long> maxlen;
        std::string trim;
        for (;;) {
            std::string opt = a[i];
            for (char &c : opt) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
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
        if (v && !v->is_stream) return wrong_type();
        if (!v) {
            if (nomkstream) return Reply::nil();
            v = &data_[a[1]];
            v->is_stream = true;
        }
        const long long ms = static_cast<long long>(now) * 1000;
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
};

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
        return run(script->second, keys, args);
    }

    // Runs `text` directly (helpers extracted from a script, checks on them).
    Reply run(const std::string &text, const std::vector<std::string> &keys,
              const std::vector<std::string> &args) {
        lua_State *L = luaL_newstate();
        if (!L) return Reply::error("ERR out of memory");
        open_libs(L);
        push_string_array(L, keys);
        lua_setglobal(L, "KEYS");
        push_string_array(L, args);
        lua_setglobal(L, "ARGV");
        lua_newtable(L);
        lua_pushlightuserdata(L, &redis_);
        lua_pushcclosure(L, &LuaRunner::redis_call, 1);
        lua_setfield(L, -2, "call");
        lua_setglobal(L, "redis");
        protect_globals(L);

        Reply reply;
        if (luaL_loadbuffer(L, text.data(), text.size(), "@user_script") != 0) {
            reply = Reply::error(std::string("ERR Error compiling script: ") + lua_tostring(L, -1));
        } else if (lua_pcall(L, 0, 1, 0) != 0) {
            const char *msg = lua_tostring(L, -1);
            reply = Reply::error(std::string("ERR Error running script: ") + (msg ? msg : "(error object)"));
        } else {
            reply = to_reply(L, -1);
        }
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

    static void push_reply(lua_State *L, const Reply &r) {
        switch (r.type) {
        case Reply::Type::nil: lua_pushboolean(L, 0); break;
        case Reply::Type::integer: lua_pushnumber(L, static_cast<lua_Number>(r.integer)); break;
        case Reply::Type::bulk: lua_pushlstring(L, r.str.data(), r.str.size()); break;
        case Reply::Type::status:
            lua_newtable(L);
            lua_pushlstring(L, r.str.data(), r.str.size());
            lua_setfield(L, -2, "ok");
            break;
        case Reply::Type::error:  // only inside arrays here; a top-level error raises
            lua_newtable(L);
            lua_pushlstring(L, r.str.data(), r.str.size());
            lua_setfield(L, -2, "err");
            break;
        case Reply::Type::array:
            lua_createtable(L, static_cast<int>(r.elements.size()), 0);
            for (std::size_t i = 0; i < r.elements.size(); ++i) {
                push_reply(L, r.elements[i]);
                lua_rawseti(L, -2, static_cast<int>(i + 1));
            }
            break;
        }
    }

    // redis.call: no C++ object with a destructor may be alive when
    // lua_error longjmps, hence the inner scope.
    static int redis_call(lua_State *L) {
        bool failed = false;
        {
            FakeRedis &redis = *static_cast<FakeRedis *>(lua_touserdata(L, lua_upvalueindex(1)));
            const int argc = lua_gettop(L);
            std::vector<std::string> args;
            std::string error;
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
                    error = "Lua redis() command arguments must be strings or integers";
                }
            }
            if (argc == 0) error = "Please specify at least one argument for redis.call()";
            Reply reply;
            if (error.empty()) reply = redis.command(args);
            if (!error.empty() || reply.is_error()) {
                const std::string &message = error.empty() ? reply.str : error;
                lua_pushlstring(L, message.data(), message.size());
                failed = true;
            } else {
                push_reply(L, reply);
            }
        }
        if (failed) return lua_error(L);
        return 1;
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
                Reply r = Reply::error(lua_tostring(L, -1));
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
