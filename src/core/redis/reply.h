// A Redis reply as the core reads it: the glue copies hiredis's into one, and
// unit tests write them by hand or get them from the fake Redis.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace spendcap {

struct Reply {
    enum class Type { nil, integer, string, status, array, error } type = Type::nil;
    long long integer = 0;
    std::string str;  // string, status, error
    std::vector<Reply> elements;

    static Reply nil() { return {}; }
    static Reply of_integer(long long v) {
        Reply r;
        r.type = Type::integer;
        r.integer = v;
        return r;
    }
    static Reply bulk(std::string s) { return of(Type::string, std::move(s)); }
    static Reply status(std::string s) { return of(Type::status, std::move(s)); }
    static Reply error(std::string s) { return of(Type::error, std::move(s)); }
    static Reply array(std::vector<Reply> elements) {
        Reply r;
        r.type = Type::array;
        r.elements = std::move(elements);
        return r;
    }

    bool is_array() const { return type == Type::array; }
    bool is_string() const { return type == Type::string; }
    bool is_integer() const { return type == Type::integer; }
    bool is_error() const { return type == Type::error; }
    bool operator==(const Reply &o) const {
        return type == o.type && integer == o.integer && str == o.str && elements == o.elements;
    }
    // An array of integers (what the reserve script answers); nullopt otherwise.
    std::optional<std::vector<long long>> integers() const {
        if (type != Type::array) return std::nullopt;
        std::vector<long long> out;
        out.reserve(elements.size());
        for (const Reply &e : elements) {
            if (e.type != Type::integer) return std::nullopt;
            out.push_back(e.integer);
        }
        return out;
    }

private:
    static Reply of(Type type, std::string s) {
        Reply r;
        r.type = type;
        r.str = std::move(s);
        return r;
    }
};

}  // namespace spendcap
