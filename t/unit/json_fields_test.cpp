// The one-pass field reader (json_fields.h) behind the usage object's fast
// path: on every object, parse_usage_object answers as jansson does.
#include "json/fields.h"

#include <gtest/gtest.h>

#include <string>

#include "usage/usage.h"

using namespace spendcap;

namespace {

void expect_as_jansson(const std::string &json) {
    for (Surface surface : {Surface::openai, Surface::anthropic}) {
        const std::optional<Usage> fast = parse_usage_object(json, surface);
        const std::optional<Usage> slow = parse_usage_object_with_jansson(json, surface);
        ASSERT_EQ(fast.has_value(), slow.has_value()) << json;
        if (!fast) continue;
        EXPECT_EQ(fast->input, slow->input) << json;
        EXPECT_EQ(fast->cached_input, slow->cached_input) << json;
        EXPECT_EQ(fast->cache_write, slow->cache_write) << json;
        EXPECT_EQ(fast->cache_read, slow->cache_read) << json;
        EXPECT_EQ(fast->output, slow->output) << json;
    }
}

const JsonFieldNames &names() {
    static const JsonFieldNames v = [] {
        JsonFieldNames n;
        n.root = {"a", "d"};
        n.nested[0].object = "d";
        n.nested[0].members = {"x", "y"};
        return n;
    }();
    return v;
}

}  // namespace

TEST(JsonFields, UsageObjectsReadAsJanssonReadsThem) {
    for (const std::string json : {
             R"({"prompt_tokens":12,"completion_tokens":9,"total_tokens":21})",
             R"({"prompt_tokens":12,"completion_tokens":9,"prompt_tokens_details":{"cached_tokens":4,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":3}})",
             R"({"input_tokens":30,"output_tokens":7,"input_tokens_details":{"cached_tokens":10},"output_tokens_details":{"reasoning_tokens":0}})",
             R"({"input_tokens":30,"cache_creation_input_tokens":5,"cache_read_input_tokens":6,"output_tokens":2})",
             R"({"output_tokens":2})", R"({"prompt_tokens":5})", R"({"prompt_tokens":null,"input_tokens":3})",
             R"({"prompt_tokens":12,"prompt_tokens_details":null})", R"({"prompt_tokens":12,"prompt_tokens_details":5})",
             R"({"prompt_tokens":12,"prompt_tokens_details":{"cached_tokens":13}})",
             R"({"prompt_tokens":12,"prompt_tokens_details":{"cached_tokens":4},"prompt_tokens_details":{}})",
             R"({"prompt_tokens":12,"prompt_tokens_details":{"cached_tokens":4},"prompt_tokens_details":null})",
             R"({"prompt_tokens":12,"prompt_tokens_details":{"cached_tokens":"4"}})",
             R"({"prompt_tokens":-1})", R"({"prompt_tokens":1.0})", R"({"prompt_tokens":"1"})", R"({"prompt_tokens":true})",
             R"({"prompt_tokens":9223372036854775807})", R"({"prompt_tokens":99999999999999999999})",
             R"({"prompt_tokens":1,"prompt_tokens":2})", R"({"prompt_tokens":2,"prompt_tokens":null})",
             R"({"input_tokens":3,"output_tokens":4,"x":[{"input_tokens":100}]})",
             R"({"\u0069nput_tokens":3})", R"({"input_tokens":3,"x":"\ud800"})", R"({"input_tokens":3)",
             R"([{"input_tokens":3}])", "", "{}", "null", R"({"input_tokens":3} )", R"({"input_tokens":3}x)",
         }) {
        expect_as_jansson(json);
    }
}

TEST(JsonFields, TheLastOccurrenceWinsAndALaterNestedObjectReplacesAllOfAnEarlierOne) {
    JsonFieldReader reader(names());
    ASSERT_TRUE(reader.read(R"({"a":1,"d":{"x":1,"y":2},"a":"s","d":{"y":3}})"));
    EXPECT_EQ(reader.root(0).kind, JsonField::Kind::string);
    EXPECT_EQ(reader.root(0).text, "s");
    EXPECT_EQ(reader.root(1).kind, JsonField::Kind::object);
    EXPECT_EQ(reader.nested(0, 0).kind, JsonField::Kind::absent);  // x went with the first d
    EXPECT_EQ(reader.nested(0, 1).integer, 3);
    ASSERT_TRUE(reader.read(R"({"d":{"x":1},"d":null})"));
    EXPECT_EQ(reader.root(1).kind, JsonField::Kind::null);
    EXPECT_EQ(reader.nested(0, 0).kind, JsonField::Kind::absent);
    // A reader is reused: nothing of the previous document stays.
    ASSERT_TRUE(reader.read(R"({"b":{"x":5}})"));
    EXPECT_EQ(reader.root(0).kind, JsonField::Kind::absent);
    EXPECT_EQ(reader.nested(0, 0).kind, JsonField::Kind::absent);  // x of another object
    EXPECT_FALSE(reader.read(R"({"a":1,})"));
}
