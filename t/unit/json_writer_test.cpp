// JSON written by hand (json/writer.h, json/escape.h): members in the order
// written, every string escaped, invalid UTF-8 as U+FFFD.
#include "json/writer.h"

#include <gtest/gtest.h>

#include <string>

#include "json/escape.h"

using namespace spendcap;
using namespace spendcap::json;

namespace {

std::string escaped(std::string_view text) {
    std::string out;
    append_json_string(out, text);
    return out;
}

TEST(JsonEscape, AnyBytesMakeAStringLiteral) {
    EXPECT_EQ(escaped(""), "\"\"");
    EXPECT_EQ(escaped("a\"b\\c/"), R"("a\"b\\c/")");
    EXPECT_EQ(escaped("\b\f\n\r\t"), R"("\b\f\n\r\t")");
    EXPECT_EQ(escaped(std::string("\x01\x1f\x7f\0", 4)), R"("\u0001\u001f\u007f\u0000")");
    EXPECT_EQ(escaped("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"), "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"");
    // Stray continuation, truncated, overlong, surrogate, past U+10FFFF.
    EXPECT_EQ(escaped("\x80"), R"("\ufffd")");
    EXPECT_EQ(escaped("\xe2\x82"), R"("\ufffd\ufffd")");
    EXPECT_EQ(escaped("\xc0\xaf"), R"("\ufffd\ufffd")");
    EXPECT_EQ(escaped("\xed\xa0\x80"), R"("\ufffd\ufffd\ufffd")");
    EXPECT_EQ(escaped("\xf4\x90\x80\x80"), R"("\ufffd\ufffd\ufffd\ufffd")");
}

TEST(JsonObjectWriter, MembersInTheOrderWritten) {
    EXPECT_EQ(ObjectWriter().done(), "{}");
    EXPECT_EQ(ObjectWriter()
                  .string("s", "x\"")
                  .string_or_null("e", "")
                  .string_or_null("f", "y")
                  .integer("i", -3)
                  .integer("n", std::optional<std::int64_t>())
                  .boolean("b", false)
                  .null("z")
                  .raw("r", "[1,2]")
                  .done(),
              R"({"s":"x\"","e":null,"f":"y","i":-3,"n":null,"b":false,"z":null,"r":[1,2]})");
}

TEST(JsonObjectWriter, AmountsAndTimes) {
    EXPECT_EQ(ObjectWriter().amount("cap", 1'500'000'000).amount("none", std::nullopt).done(),
              R"({"cap_nanousd":1500000000,"cap_usd":"1.50","none_nanousd":null,"none_usd":null})");
    EXPECT_EQ(ObjectWriter()
                  .time("t", std::optional<std::int64_t>(1'798'761'600))
                  .time("u", std::nullopt)
                  .reset_time("r", 0)
                  .reset_time("s", 1'798'761'600)
                  .done(),
              R"({"t":"2027-01-01T00:00:00Z","u":null,"r":null,"s":"2027-01-01T00:00:00Z"})");
}

TEST(JsonArray, JoinsJsonTexts) {
    EXPECT_EQ(json_array({}), "[]");
    EXPECT_EQ(json_array({"1"}), "[1]");
    EXPECT_EQ(json_array({"{}", "null", "\"a\""}), R"([{},null,"a"])");
}

}  // namespace
