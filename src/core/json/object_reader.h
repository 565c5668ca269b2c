// A JSON object read member by member, strictly (jansson, duplicates refused),
// each error a message naming the member by its path ("`limits.rpm` must be ...").
#pragma once

#include <jansson.h>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/money.h"

namespace spendcap::json {

struct JsonDeleter {
    void operator()(json_t *value) const { json_decref(value); }
};
using JsonPtr = std::unique_ptr<json_t, JsonDeleter>;

// The members a number sits under, from the root ({"limits", "rpm"}).
using Path = std::vector<std::string>;

// The text of every number held by objects only (no array on the way), by
// its path. jansson gives a real as a double, which cannot say 0.1 exactly;
// this is the number as the client wrote it. Runs on a body jansson has
// accepted (duplicates refused), so each path names one number. The texts
// are views into the scanned text, which must outlive them.
class NumberTexts {
public:
    void scan(std::string_view json);
    std::optional<std::string_view> find(const Path &path) const;

private:
    // A key as jansson decoded it ("monthly\u005fusd" is monthly_usd).
    static std::string decode_key(std::string_view literal);

    std::map<Path, std::string_view> texts_;
};

// A parsed object and the texts of its numbers.
struct Body {
    JsonPtr root;
    NumberTexts numbers;
};

// Parses `text` strictly into a JSON object, or sets `error` and returns
// false. `empty_is_object`: a blank text reads as {} (a POST without a body).
// `text` must outlive `body` (its numbers' texts point into it).
bool load_object(std::string_view text, Body &body, std::string &error, bool empty_is_object = false);

// Reads the members of one object, each error naming the member by its path
// ("`limits.rpm`"). Every reader returns false after setting `error`; an
// absent member is left as it was and is no error.
class ObjectReader {
public:
    ObjectReader(json_t *object, const NumberTexts &numbers, Path path, std::string &error);
    // The root object of a loaded body.
    ObjectReader(const Body &body, std::string &error) : ObjectReader(body.root.get(), body.numbers, {}, error) {}

    // Refuses members other than `known`.
    bool only(std::initializer_list<std::string_view> known);

    // The member, or nullptr when it is absent.
    json_t *get(const char *name) const { return json_object_get(object_, name); }
    bool has(const char *name) const { return get(name) != nullptr; }
    // The member's name for a message: "`limits.rpm`".
    std::string label(std::string_view name) const;
    // Sets the error and returns false.
    bool fail(std::string message);

    bool required(const char *name);
    bool string(const char *name, std::optional<std::string> &out);
    bool count(const char *name, std::optional<std::int64_t> &out);  // a non-negative integer
    bool boolean(const char *name, bool &out);
    bool time(const char *name, std::optional<std::int64_t> &out);   // RFC 3339, as unix seconds
    // A decimal USD amount, string or number, parsed exactly as the file's.
    bool amount(const char *name, std::optional<Nanos> &out);
    // A nested object: `out` reads it. Null reads as absent (for the members
    // the policy file also takes empty); another type fails with "`name`
    // must be " + `what`.
    bool object_or_null(const char *name, std::string_view what, std::optional<ObjectReader> &out);
    // A nested object of objects ({"gpt-4o*": {...}}): `visit` reads each
    // member's object, in the order written. Null reads as absent.
    bool each_object(const char *name, std::string_view what,
                     const std::function<bool(const std::string &member, ObjectReader &reader)> &visit);
    // An array of strings; null reads as absent.
    bool strings(const char *name, std::optional<std::vector<std::string>> &out);

private:
    json_t *object_;
    const NumberTexts &numbers_;
    Path path_;
    std::string &error_;
};

}  // namespace spendcap::json
