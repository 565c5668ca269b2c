// The request side: surface by path, body fields, worst-case estimate, hashes.
#include "base/digest.h"
#include "request/request.h"

#include <gtest/gtest.h>
#include <jansson.h>

#include <limits>
#include <memory>
#include <string>

using namespace spendcap;

namespace {

ModelPrice gpt_4o_mini() {
    ModelPrice p;
    p.name = "gpt-4o-mini";
    p.input = 150'000'000;        // 0.15 USD per million tokens
    p.output = 600'000'000;       // 0.60
    p.cached_input = 75'000'000;  // 0.075
    p.max_output_tokens = 16384;
    return p;
}

ModelPrice claude_sonnet() {
    ModelPrice p;
    p.name = "claude-sonnet-4-5";
    p.input = 3'000'000'000;
    p.output = 15'000'000'000;
    p.cache_write = 3'750'000'000;  // the highest input rate
    p.cache_read = 300'000'000;
    p.max_output_tokens = 64000;
    return p;
}

}  // namespace

TEST(Surface, AnthropicOnlyForMessagesPath) {
    EXPECT_EQ(surface_for_path("/v1/messages"), Surface::anthropic);
    EXPECT_EQ(surface_for_path("/anthropic/v1/messages"), Surface::anthropic);
    EXPECT_EQ(surface_for_path("/v1/chat/completions"), Surface::openai);
    EXPECT_EQ(surface_for_path("/v1/responses"), Surface::openai);
    EXPECT_EQ(surface_for_path("/v1/messages/count_tokens"), Surface::anthropic);  // its token counting
    EXPECT_EQ(surface_for_path("/v1/messagesx"), Surface::openai);
    EXPECT_EQ(surface_for_path("v1/messages"), Surface::openai);
    EXPECT_EQ(surface_for_path(""), Surface::openai);
}

TEST(ParseRequest, OpenAIChatStreamingWithUsage) {
    RequestParse r = parse_request_body(
        R"({"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],)"
        R"("max_completion_tokens":300,"stream":true,"stream_options":{"include_usage":true}})");
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_EQ(r.info.model, "gpt-4o-mini");
    ASSERT_TRUE(r.info.max_output_tokens.has_value());
    EXPECT_EQ(*r.info.max_output_tokens, 300);
    EXPECT_TRUE(r.info.stream);
    EXPECT_TRUE(r.info.include_usage);
}

TEST(ParseRequest, AnthropicMessages) {
    RequestParse r = parse_request_body(
        R"({"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":"Hello"}]})");
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_EQ(r.info.model, "claude-sonnet-4-5");
    EXPECT_EQ(r.info.max_output_tokens, std::optional<std::int64_t>(1024));
    EXPECT_FALSE(r.info.stream);
    EXPECT_FALSE(r.info.include_usage);
}

TEST(ParseRequest, ResponsesMaxOutputTokens) {
    RequestParse r = parse_request_body(R"({"model":"o4-mini","input":"hi","max_output_tokens":2048})");
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_EQ(r.info.max_output_tokens, std::optional<std::int64_t>(2048));
}

TEST(ParseRequest, LargestMaxTokensFieldWins) {
    RequestParse r = parse_request_body(
        R"({"model":"m","max_tokens":100,"max_completion_tokens":700,"max_output_tokens":50})");
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_EQ(r.info.max_output_tokens, std::optional<std::int64_t>(700));
}

TEST(ParseRequest, NoMaxTokensAndNullsAreAbsent) {
    RequestParse r = parse_request_body(
        R"({"model":"m","max_tokens":null,"stream":null,"stream_options":null})");
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_FALSE(r.info.max_output_tokens.has_value());
    EXPECT_FALSE(r.info.stream);
    EXPECT_FALSE(r.info.include_usage);

    RequestParse plain = parse_request_body(R"({"model":"m"})");
    ASSERT_TRUE(plain.ok);
    EXPECT_FALSE(plain.info.max_output_tokens.has_value());
}

TEST(ParseRequest, StreamWithoutIncludeUsage) {
    RequestParse r = parse_request_body(
        R"({"model":"m","stream":true,"stream_options":{"include_usage":false}})");
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_TRUE(r.info.stream);
    EXPECT_FALSE(r.info.include_usage);
}

TEST(ParseRequest, ZeroAndHugeMaxTokens) {
    RequestParse zero = parse_request_body(R"({"model":"m","max_tokens":0})");
    ASSERT_TRUE(zero.ok);
    EXPECT_EQ(zero.info.max_output_tokens, std::optional<std::int64_t>(0));
    RequestParse huge = parse_request_body(R"({"model":"m","max_tokens":9223372036854775807})");
    ASSERT_TRUE(huge.ok);
    EXPECT_EQ(huge.info.max_output_tokens,
              std::optional<std::int64_t>(std::numeric_limits<std::int64_t>::max()));
}

TEST(ParseRequest, NulInsidePromptIsValidJson) {
    const std::string body = R"({"model":"m","messages":[{"role":"user","content":"a\u0000b"}]})";
    RequestParse r = parse_request_body(body);
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_EQ(r.info.model, "m");
}

TEST(ParseRequest, InvalidJsonNamesLineAndColumn) {
    RequestParse r = parse_request_body("{\"model\": \"m\",\n \"max_tokens\": }");
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.error.rfind("request body is not valid JSON: ", 0), 0u) << r.error;
    EXPECT_NE(r.error.find(" at line 2 column "), std::string::npos) << r.error;

    RequestParse empty = parse_request_body("");
    EXPECT_FALSE(empty.ok);
    EXPECT_EQ(empty.error.rfind("request body is not valid JSON: ", 0), 0u) << empty.error;

    RequestParse trailing = parse_request_body(R"({"model":"m"} x)");
    EXPECT_FALSE(trailing.ok);
}

TEST(ParseRequest, RejectsWhatCannotBePriced) {
    struct Case {
        const char *body;
        const char *error;
    } cases[] = {
        {R"([{"model":"m"}])", "request body is not a JSON object"},
        {R"({"messages":[]})", "request body has no model"},
        {R"({"model":null})", "request body has no model"},
        {R"({"model":42})", "model must be a non-empty string"},
        {R"({"model":""})", "model must be a non-empty string"},
        {R"({"model":"m","max_tokens":-1})", "max_tokens must be a non-negative integer"},
        {R"({"model":"m","max_tokens":1.5})", "max_tokens must be a non-negative integer"},
        {R"({"model":"m","max_tokens":100.0})", "max_tokens must be a non-negative integer"},
        {R"({"model":"m","max_tokens":"100"})", "max_tokens must be a non-negative integer"},
        {R"({"model":"m","max_completion_tokens":true})",
         "max_completion_tokens must be a non-negative integer"},
        {R"({"model":"m","max_output_tokens":[1]})",
         "max_output_tokens must be a non-negative integer"},
        {R"({"model":"m","n":0})", "n must be a positive integer"},
        {R"({"model":"m","best_of":"2"})", "best_of must be a positive integer"},
        {R"({"model":"m","stream":"true"})", "stream must be true or false"},
        {R"({"model":"m","stream":1})", "stream must be true or false"},
        {R"({"model":"m","stream_options":true})", "stream_options must be an object"},
        {R"({"model":"m","stream_options":{"include_usage":"yes"}})",
         "stream_options.include_usage must be true or false"},
    };
    for (const Case &c : cases) {
        RequestParse r = parse_request_body(c.body);
        EXPECT_FALSE(r.ok) << c.body;
        EXPECT_EQ(r.error, c.error) << c.body;
    }
}

TEST(Estimate, RequestMaxTokensAtHighestInputRate) {
    Policy policy;
    // 1000 * 0.15 + 100 * 0.60 USD per million = 150000 + 60000 nano-USD
    Estimate e = estimate_worst_case(gpt_4o_mini(), policy, 1000, 100);
    EXPECT_EQ(e.input_tokens, 1000);
    EXPECT_EQ(e.output_tokens, 100);
    EXPECT_EQ(e.cost, 210'000);

    // Anthropic cache writes (3.75) cost more than plain input (3.00).
    Estimate a = estimate_worst_case(claude_sonnet(), policy, 2000, 1000);
    EXPECT_EQ(a.cost, 2000LL * 3750 + 1000LL * 15000);
}

TEST(Estimate, EveryChoiceIsBilled) {
    RequestParse r = parse_request_body(R"({"model":"m","max_tokens":100,"n":3,"best_of":5})");
    ASSERT_TRUE(r.ok);
    EXPECT_EQ(r.info.choices, 5);
    EXPECT_EQ(parse_request_body(R"({"model":"m"})").info.choices, 1);

    Policy policy;
    Estimate e = estimate_worst_case(gpt_4o_mini(), policy, 1000, 100, r.info.choices);
    EXPECT_EQ(e.output_tokens, 500);
    EXPECT_EQ(e.cost, 1000 * 150 + 500 * 600);
    // A product past int64 saturates (and so blocks) instead of wrapping.
    Estimate huge = estimate_worst_case(gpt_4o_mini(), policy, 1, INT64_MAX / 2, 3);
    EXPECT_EQ(huge.output_tokens, INT64_MAX);
}

TEST(Estimate, FallsBackToModelThenPolicyMax) {
    Policy policy;
    policy.default_max_output_tokens = 4096;
    Estimate model_max = estimate_worst_case(gpt_4o_mini(), policy, 10, std::nullopt);
    EXPECT_EQ(model_max.output_tokens, 16384);
    EXPECT_EQ(model_max.cost, 10 * 150 + 16384 * 600);

    ModelPrice no_max = gpt_4o_mini();
    no_max.max_output_tokens.reset();
    Estimate policy_max = estimate_worst_case(no_max, policy, 10, std::nullopt);
    EXPECT_EQ(policy_max.output_tokens, 4096);
    EXPECT_EQ(policy_max.cost, 10 * 150 + 4096 * 600);

    // An explicit 0 is the request's bound, not "absent".
    Estimate zero = estimate_worst_case(gpt_4o_mini(), policy, 10, 0);
    EXPECT_EQ(zero.output_tokens, 0);
    EXPECT_EQ(zero.cost, 1500);
}

TEST(Estimate, RoundsUpAndSaturates) {
    Policy policy;
    ModelPrice tiny;
    tiny.input = 1000;  // 0.000001 USD per million tokens
    tiny.output = 0;
    Estimate e = estimate_worst_case(tiny, policy, 1, 0);
    EXPECT_EQ(e.cost, 1);  // 0.001 nano-USD rounds up

    Estimate empty = estimate_worst_case(tiny, policy, -5, 0);
    EXPECT_EQ(empty.input_tokens, 0);
    EXPECT_EQ(empty.cost, 0);

    Estimate absurd = estimate_worst_case(claude_sonnet(), policy, 100,
                                          std::numeric_limits<std::int64_t>::max());
    EXPECT_EQ(absurd.cost, std::numeric_limits<Nanos>::max());
}

TEST(Hashes, KnownDigests) {
    EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    EXPECT_EQ(sha256_hex("hello"), "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
    EXPECT_EQ(sha1_hex("abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
    EXPECT_EQ(sha1_hex(std::string_view("a\0b", 3)), "4a3dec2d1f8245280855c42db0ee4239f917fdb8");
}

// ---------------------------------------------------------------------------
// Stream usage: which paths, and the in-place edit of the body

TEST(InjectStreamUsage, OptionalOnChatCompletionsAndCompletions) {
    EXPECT_TRUE(stream_usage_is_optional("/v1/chat/completions"));
    EXPECT_TRUE(stream_usage_is_optional("/v1/completions"));
    EXPECT_TRUE(stream_usage_is_optional("/openai/deployments/x/chat/completions"));
    EXPECT_TRUE(stream_usage_is_optional("/v1/chat/completions?api-version=2024-10-21"));
    EXPECT_TRUE(stream_usage_is_optional("/completions"));
    EXPECT_FALSE(stream_usage_is_optional("/v1/responses"));
    EXPECT_FALSE(stream_usage_is_optional("/v1/messages"));
    EXPECT_FALSE(stream_usage_is_optional("/v1/embeddings"));
    EXPECT_FALSE(stream_usage_is_optional("/v1/chat/completions/"));
    EXPECT_FALSE(stream_usage_is_optional("/v1/chat/completionsx"));
    EXPECT_FALSE(stream_usage_is_optional("/v1/xcompletions"));
    EXPECT_FALSE(stream_usage_is_optional("/v1/responses?next=/completions"));
    EXPECT_FALSE(stream_usage_is_optional(""));
}

namespace {

struct JsonDeleter {
    void operator()(json_t *value) const { json_decref(value); }
};
using JsonPtr = std::unique_ptr<json_t, JsonDeleter>;

JsonPtr load(const std::string &text) {
    json_error_t error;
    return JsonPtr(json_loadb(text.data(), text.size(), JSON_ALLOW_NUL, &error));
}

// The edited body as jansson reads it: include_usage is true, every other
// member of the root and of stream_options equals the original's.
void expect_same_but_include_usage(const std::string &original, const std::string &edited) {
    JsonPtr before = load(original), after = load(edited);
    ASSERT_TRUE(before && after) << edited;
    json_t *options = json_object_get(after.get(), "stream_options");
    ASSERT_TRUE(json_is_object(options)) << edited;
    EXPECT_TRUE(json_is_true(json_object_get(options, "include_usage"))) << edited;
    // Put the original's stream_options back (minus include_usage) and compare.
    json_t *old_options = json_object_get(before.get(), "stream_options");
    JsonPtr expected_options(json_is_object(old_options) ? json_deep_copy(old_options) : json_object());
    json_object_set_new(expected_options.get(), "include_usage", json_true());
    EXPECT_TRUE(json_equal(options, expected_options.get())) << edited;
    json_object_del(before.get(), "stream_options");
    json_object_del(after.get(), "stream_options");
    EXPECT_TRUE(json_equal(before.get(), after.get())) << edited;
}

}  // namespace

TEST(InjectStreamUsage, InjectsIncludeUsageInPlace) {
    struct Case {
        std::string body;
        std::string expected;
    } cases[] = {
        // No stream_options: added first.
        {R"({"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]})",
         R"({"stream_options":{"include_usage":true},"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]})"},
        {" \n{ \"stream\" : true }\n",
         " \n{\"stream_options\":{\"include_usage\":true}, \"stream\" : true }\n"},
        // An empty stream_options object, or one without include_usage.
        {R"({"stream":true,"stream_options":{}})", R"({"stream":true,"stream_options":{"include_usage":true}})"},
        {R"({"stream":true,"stream_options": { } })", R"({"stream":true,"stream_options": {"include_usage":true } })"},
        {R"({"stream":true,"stream_options":{"x":{"include_usage":false}},"model":"m"})",
         R"({"stream":true,"stream_options":{"include_usage":true,"x":{"include_usage":false}},"model":"m"})"},
        // include_usage false / null: only its value changes.
        {R"({"model":"m","stream_options":{"include_usage":false},"stream":true})",
         R"({"model":"m","stream_options":{"include_usage":true},"stream":true})"},
        {"{\"stream\":true,\"stream_options\":{ \"a\":1,\n  \"include_usage\" :\tnull , \"b\":[2]}}",
         "{\"stream\":true,\"stream_options\":{ \"a\":1,\n  \"include_usage\" :\ttrue , \"b\":[2]}}"},
        {R"({"stream":true,"stream_options":{"include_usage":0}})",
         R"({"stream":true,"stream_options":{"include_usage":true}})"},
        {R"({"stream":true,"stream_options":{"include_usage":"false"}})",
         R"({"stream":true,"stream_options":{"include_usage":true}})"},
        {R"({"stream":true,"stream_options":{"include_usage":{"a":[1,{}]}},"z":1})",
         R"({"stream":true,"stream_options":{"include_usage":true},"z":1})"},
        {R"({"stream":true,"stream_options":{"include_usage":-1.5e3}})",
         R"({"stream":true,"stream_options":{"include_usage":true}})"},
        // stream_options not an object: the whole value is replaced.
        {R"({"stream":true,"stream_options":null,"model":"m"})",
         R"({"stream":true,"stream_options":{"include_usage":true},"model":"m"})"},
        {R"({"stream":true,"stream_options" : [1,[2]] })",
         R"({"stream":true,"stream_options" : {"include_usage":true} })"},
        {R"({"stream":true,"stream_options":"yes"})", R"({"stream":true,"stream_options":{"include_usage":true}})"},
        {R"({"stream":true,"stream_options":12})", R"({"stream":true,"stream_options":{"include_usage":true}})"},
        // Duplicates: jansson (and the upstream, most likely) keep the last one.
        {R"({"stream":true,"stream_options":{"include_usage":true},"stream_options":{"include_usage":false}})",
         R"({"stream":true,"stream_options":{"include_usage":true},"stream_options":{"include_usage":true}})"},
        {R"({"stream":true,"stream_options":{"include_usage":true},"stream_options":null})",
         R"({"stream":true,"stream_options":{"include_usage":true},"stream_options":{"include_usage":true}})"},
        {R"({"stream":true,"stream_options":{"include_usage":false},"stream_options":{}})",
         R"({"stream":true,"stream_options":{"include_usage":false},"stream_options":{"include_usage":true}})"},
        {R"({"stream":true,"stream_options":{"include_usage":true,"include_usage":false}})",
         R"({"stream":true,"stream_options":{"include_usage":true,"include_usage":true}})"},
        {R"({"stream":true,"stream_options":{"include_usage":null,"include_usage":false,"k":1}})",
         R"({"stream":true,"stream_options":{"include_usage":null,"include_usage":true,"k":1}})"},
        {R"({"stream":false,"stream":true})",
         R"({"stream_options":{"include_usage":true},"stream":false,"stream":true})"},
        // Nested look-alikes are not the top-level key.
        {R"({"metadata":{"stream_options":null},"stream":true,"tools":[{"stream_options":{}}]})",
         R"({"stream_options":{"include_usage":true},"metadata":{"stream_options":null},"stream":true,"tools":[{"stream_options":{}}]})"},
        // An escaped key is the same key.
        {R"({"stream":true,"stream\u005foptions":{"include\u005fusage":false}})",
         R"({"stream":true,"stream\u005foptions":{"include\u005fusage":true}})"},
        // Strings holding look-alikes, and unicode, stay as they are.
        {R"({"stream":true,"messages":[{"content":"\"stream_options\":{\"include_usage\":false} \u00e9 é 😀"}],"stream_options":{"include_usage":false}})",
         R"({"stream":true,"messages":[{"content":"\"stream_options\":{\"include_usage\":false} \u00e9 é 😀"}],"stream_options":{"include_usage":true}})"},
    };
    for (const Case &c : cases) {
        const std::optional<std::string> edited = with_stream_usage(c.body);
        ASSERT_TRUE(edited.has_value()) << c.body;
        EXPECT_EQ(*edited, c.expected) << c.body;
        expect_same_but_include_usage(c.body, *edited);
        // The edited body needs no further edit and parses as a request asking for usage.
        EXPECT_FALSE(with_stream_usage(*edited).has_value()) << *edited;
        if (c.body.find("\"model\"") != std::string::npos) {
            RequestParse r = parse_request_body(*edited);
            ASSERT_TRUE(r.ok) << r.error;
            EXPECT_TRUE(r.info.stream);
            EXPECT_TRUE(r.info.include_usage);
        }
    }
}

TEST(InjectStreamUsage, NothingToInject) {
    const char *bodies[] = {
        R"({"model":"m","stream":true,"stream_options":{"include_usage":true}})",
        R"({"model":"m","stream":true,"stream_options":{"include_usage":false,"include_usage":true}})",
        R"({"model":"m","stream_options":null,"stream":true,"stream_options":{"include_usage":true}})",
        R"({"model":"m"})",
        R"({"model":"m","stream":false})",
        R"({"model":"m","stream":null})",
        R"({"model":"m","stream":"true"})",
        R"({"model":"m","stream":1})",
        R"({"model":"m","stream":true,"stream":false})",
        R"({"model":"m","options":{"stream":true}})",
        R"([{"stream":true}])",
        R"("stream")",
        "",
        "not json",
        R"({"model":"m","stream":true)",
        R"({"model":"m","stream":true}{})",
        R"({"model":"m","stream":true,})",
        "{\"model\":\"m\",\"stream\":true,\"bad\":\"\xff\"}",  // invalid UTF-8
    };
    for (const char *body : bodies) EXPECT_FALSE(with_stream_usage(body).has_value()) << body;
}
