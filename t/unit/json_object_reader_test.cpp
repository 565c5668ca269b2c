// The strict JSON object reader (json/object_reader.h) behind the management
// API's bodies: what it accepts, and the exact message of each refusal.
#include "json/object_reader.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>

using namespace spendcap;
using namespace spendcap::json;

namespace {

TEST(JsonLoadObject, StrictObjectsOnly) {
    Body body;
    std::string error;
    EXPECT_TRUE(load_object(R"({"a": 1})", body, error)) << error;
    EXPECT_TRUE(json_is_object(body.root.get()));

    for (const char *text : {"{\"a\": 1,}", "", "{} x", R"({"a":1,"a":2})"}) {
        error.clear();
        EXPECT_FALSE(load_object(text, body, error)) << text;
        EXPECT_EQ(error.rfind("request body is not valid JSON: ", 0), 0u) << text << ": " << error;
    }
    error.clear();
    EXPECT_FALSE(load_object("{\n\"a\": }", body, error));
    EXPECT_NE(error.find(" at line 2 column "), std::string::npos) << error;
    for (const char *text : {"[]", "\"a\"", "1", "null", "true"}) {
        EXPECT_FALSE(load_object(text, body, error)) << text;
        EXPECT_EQ(error, "request body must be a JSON object") << text;
    }
}

TEST(JsonLoadObject, BlankIsAnEmptyObjectOnlyWhenAsked) {
    Body body;
    std::string error;
    for (const char *text : {"", " \t\r\n"}) {
        ASSERT_TRUE(load_object(text, body, error, true)) << error;
        EXPECT_EQ(json_object_size(body.root.get()), 0u);
        EXPECT_FALSE(load_object(text, body, error));
    }
}

TEST(JsonNumberTexts, NumbersByTheirPathAsWritten) {
    NumberTexts numbers;
    const std::string text =
        R"({"a": 0.10, "s": "x\"}, {\"a\": 7", "o": {"b\u005fc": -1e3, "l": [5, {"d": 6}]}, "z": 12})";
    numbers.scan(text);
    EXPECT_EQ(numbers.find({"a"}), std::optional<std::string_view>("0.10"));
    EXPECT_EQ(numbers.find({"o", "b_c"}), std::optional<std::string_view>("-1e3"));  // the key decoded
    EXPECT_EQ(numbers.find({"z"}), std::optional<std::string_view>("12"));
    // Numbers under an array are not kept, nor is what a string holds.
    EXPECT_FALSE(numbers.find({"o", "l"}));
    EXPECT_FALSE(numbers.find({"o", "l", "d"}));
    EXPECT_FALSE(numbers.find({"s"}));
    EXPECT_FALSE(numbers.find({"o", "a"}));
}

// Loads `text` and runs `read` on its root, returning the error ("" when it reads).
template <typename Read>
std::string read_error(const std::string &text, Read read) {
    Body body;
    std::string error;
    if (!load_object(text, body, error)) return "load: " + error;
    ObjectReader reader(body, error);
    const bool ok = read(reader);
    EXPECT_EQ(ok, error.empty()) << text;
    return error;
}

TEST(JsonObjectReader, OnlyAndRequired) {
    auto only_ab = [](ObjectReader &r) { return r.only({"a", "b"}); };
    EXPECT_EQ(read_error(R"({"a": 1, "b": null})", only_ab), "");
    EXPECT_EQ(read_error(R"({"a": 1, "c": 2})", only_ab), "unknown field `c`");
    auto needs_a = [](ObjectReader &r) { return r.required("a"); };
    EXPECT_EQ(read_error(R"({"a": null})", needs_a), "");
    EXPECT_EQ(read_error(R"({"b": 1})", needs_a), "`a` is required");
}

TEST(JsonObjectReader, TypedMembers) {
    std::optional<std::string> s;
    std::optional<std::int64_t> n, t;
    bool flag = false;
    auto all = [&](ObjectReader &r) {
        return r.string("s", s) && r.count("n", n) && r.boolean("f", flag) && r.time("t", t);
    };
    EXPECT_EQ(read_error(R"({"s": "x\u00e9", "n": 0, "f": true, "t": "2027-01-01T00:00:00Z"})", all), "");
    EXPECT_EQ(s, std::optional<std::string>("x\xc3\xa9"));
    EXPECT_EQ(n, std::optional<std::int64_t>(0));
    EXPECT_TRUE(flag);
    EXPECT_EQ(t, std::optional<std::int64_t>(1'798'761'600));

    // Absent members leave the value as it was.
    s = "kept";
    EXPECT_EQ(read_error("{}", all), "");
    EXPECT_EQ(s, std::optional<std::string>("kept"));

    EXPECT_EQ(read_error(R"({"s": null})", all), "`s` must be a string");
    EXPECT_EQ(read_error(R"({"n": -1})", all), "`n` must be a non-negative integer");
    EXPECT_EQ(read_error(R"({"n": 1.0})", all), "`n` must be a non-negative integer");
    EXPECT_EQ(read_error(R"({"f": 1})", all), "`f` must be true or false");
    EXPECT_EQ(read_error(R"({"t": 1798761600})", all),
              "`t` must be an RFC 3339 time such as \"2027-01-01T00:00:00Z\"");
}

TEST(JsonObjectReader, AmountsAreReadFromTheirText) {
    std::optional<Nanos> a;
    auto amount = [&](ObjectReader &r) { return r.amount("a", a); };
    EXPECT_EQ(read_error(R"({"a": 0.1})", amount), "");
    EXPECT_EQ(a, std::optional<Nanos>(100'000'000));
    EXPECT_EQ(read_error(R"({"a": "123456789.123456789"})", amount), "");
    EXPECT_EQ(a, std::optional<Nanos>(123'456'789'123'456'789));

    const std::string rule = "`a` must be a non-negative decimal USD amount";
    EXPECT_EQ(read_error(R"({"a": -1})", amount),
              rule + " such as \"10.50\": negative amounts are not allowed (got \"-1\")");
    EXPECT_EQ(read_error(R"({"a": ")" + std::string(41, 'x') + "\"}", amount),
              rule + " such as \"10.50\": amount must start with a digit");
    EXPECT_EQ(read_error(R"({"a": true})", amount), rule + ", a string or number such as \"10.50\"");
}

TEST(JsonObjectReader, NestedObjectsNameTheirMembersByPath) {
    std::optional<std::int64_t> n;
    std::optional<Nanos> a;
    auto nested = [&](ObjectReader &r) {
        std::optional<ObjectReader> inner;
        if (!r.object_or_null("o", "an object of things", inner)) return false;
        return !inner || (inner->only({"n", "a"}) && inner->count("n", n) && inner->amount("a", a));
    };
    EXPECT_EQ(read_error(R"({"o": {"n": 3, "a": 0.5}})", nested), "");
    EXPECT_EQ(n, std::optional<std::int64_t>(3));
    EXPECT_EQ(a, std::optional<Nanos>(500'000'000));  // a nested number's own text
    n.reset();
    EXPECT_EQ(read_error(R"({"o": null})", nested), "");
    EXPECT_EQ(read_error("{}", nested), "");
    EXPECT_FALSE(n);
    EXPECT_EQ(read_error(R"({"o": []})", nested), "`o` must be an object of things");
    EXPECT_EQ(read_error(R"({"o": {"m": 1}})", nested), "unknown field `o.m`");
    EXPECT_EQ(read_error(R"({"o": {"n": "3"}})", nested), "`o.n` must be a non-negative integer");
}

}  // namespace
