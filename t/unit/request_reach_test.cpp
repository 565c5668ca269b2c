// What a request body lets the provider bill beyond its bytes (request_reach.h),
// which endpoints are metered (request.h), the output bound a request is given,
// and the estimate those make.
#include <gtest/gtest.h>

#include "policy/policy.h"
#include "request/request.h"
#include "request/reach.h"
#include "usage/usage.h"

namespace spendcap {
namespace {

RequestReach reach(const std::string &body, const std::string &beta = "") { return reach_of(body, beta); }

// ---------------------------------------------------------------- input outside the body

TEST(RequestReach, PlainRequestsAreAllInTheirBody) {
    for (const char *body : {
             R"({"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":5})",
             R"({"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]})",
             R"({"model":"m","input":"hi"})",
             R"({"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"hi"}]}]})",
             R"({"model":"m","prompt":"once upon a time"})",  // Completions: a string prompt
             R"({"model":"m","prompt":["a","b"]})",
             R"({"model":"m","input":["a","b"]})",                 // Embeddings
             R"({"model":"m","system":[{"type":"text","text":"be brief","cache_control":{"type":"ephemeral"}}],)"
             R"("messages":[{"role":"user","content":"hi"}]})",
             // the model's own earlier turns, with tool calls, citations and encrypted reasoning
             R"({"model":"m","input":[{"type":"reasoning","id":"rs_1","summary":[],"encrypted_content":"gAAA"},)"
             R"({"type":"message","role":"assistant","content":[{"type":"output_text","text":"x",)"
             R"("annotations":[{"type":"url_citation","url":"https://example.com"}]}]},)"
             R"({"type":"function_call","call_id":"c","name":"f","arguments":"{}"},)"
             R"({"type":"function_call_output","call_id":"c","output":"42"}]})",
             R"({"model":"m","messages":[{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"f",)"
             R"("input":{}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":"ok"}]}]})",
             // a key that looks like a trigger but is only text
             R"({"model":"m","messages":[{"role":"user","content":"previous_response_id image_url file_id"}]})",
             // null is absent
             R"({"model":"m","input":"hi","previous_response_id":null,"conversation":null,"prediction":null})",
         }) {
        const RequestReach r = reach(body);
        EXPECT_EQ(r.refusal, "") << body;
        EXPECT_EQ(r.outside_input, "") << body;
        EXPECT_EQ(r.hidden_input_tokens, 0) << body;
        EXPECT_FALSE(r.prediction) << body;
    }
}

TEST(RequestReach, InputOnlyNamedInTheBodyIsOutside) {
    const struct {
        const char *body;
        const char *why;
    } cases[] = {
        {R"({"model":"m","input":"and then?","previous_response_id":"resp_1"})", "`previous_response_id`"},
        {R"({"model":"m","input":"hi","conversation":"conv_1"})", "`conversation`"},
        {R"({"model":"m","input":"hi","conversation":{"id":"conv_1"}})", "`conversation`"},
        {R"({"model":"m","prompt":{"id":"pmpt_1","version":"2"}})", "a stored `prompt`"},
        // OpenAI Chat: images by URL or inline, files by id or inline
        {R"({"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]})",
         "a content part of type `image_url`"},
        {R"({"model":"m","messages":[{"role":"user","content":[{"type":"file","file":{"file_id":"file-1"}}]}]})",
         "a content part of type `file`"},
        // Responses: images, files, items by reference
        {R"({"model":"m","input":[{"role":"user","content":[{"type":"input_image","image_url":"https://x"}]}]})",
         "a content part of type `input_image`"},
        {R"({"model":"m","input":[{"role":"user","content":[{"type":"input_file","file_id":"file-1"}]}]})",
         "a content part of type `input_file`"},
        {R"({"model":"m","input":[{"role":"user","content":[{"type":"input_file","file_url":"https://x/a.pdf"}]}]})",
         "a content part of type `input_file`"},
        {R"({"model":"m","input":[{"type":"item_reference","id":"msg_1"}]})", "a content part of type `item_reference`"},
        {R"({"model":"m","input":[{"type":"reasoning","id":"rs_1","summary":[]}]})",
         "a reasoning item without its encrypted content"},
        // Anthropic: documents and images by any source, in tool results too
        {R"({"model":"m","messages":[{"role":"user","content":[{"type":"document","source":{"type":"url","url":"https://x/a.pdf"}}]}]})",
         "a content part of type `document`"},
        {R"({"model":"m","messages":[{"role":"user","content":[{"type":"image","source":{"type":"file","file_id":"f"}}]}]})",
         "a content part of type `image`"},
        {R"({"model":"m","messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":)"
         R"([{"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBO"}}]}]}]})",
         "a content part of type `image`"},
        {R"({"model":"m","messages":[{"role":"user","content":[{"type":"container_upload","file_id":"f"}]}]})",
         "a content part of type `container_upload`"},
        // a type this gateway does not know
        {R"({"model":"m","input":[{"role":"user","content":[{"type":"input_video","url":"x"}]}]})",
         "a content part of type `input_video`"},
        // a key with an escape reads as the provider reads it
        {R"({"model":"m","input":"x","previous_response_\u0069d":"resp_1"})", "`previous_response_id`"},
    };
    for (const auto &c : cases) {
        const RequestReach r = reach(c.body);
        EXPECT_EQ(r.refusal, "") << c.body;
        EXPECT_EQ(r.outside_input, c.why) << c.body;
    }
}

// Two of one key: the walk sees every occurrence, whichever a provider keeps.
TEST(RequestReach, EveryOccurrenceOfADuplicateCounts) {
    EXPECT_EQ(reach(R"({"model":"m","input":"x","previous_response_id":"resp_1","previous_response_id":null})")
                  .outside_input,
              "`previous_response_id`");
    EXPECT_EQ(reach(R"({"model":"m","messages":[{"role":"user","content":[{"type":"text","type":"image_url"}]}]})")
                  .outside_input,
              "a content part of type `image_url`");
    for (const char *field : {"model", "max_tokens", "max_completion_tokens", "max_output_tokens", "n", "best_of"}) {
        const std::string body = std::string(R"({"model":"m","input":"x",")") + field + R"(":1,")" + field + R"(":2})";
        const std::string duplicate_model = R"({"model":"m","model":"o1-pro","input":"x"})";
        EXPECT_EQ(reach(std::string(field) == "model" ? duplicate_model : body).refusal,
                  std::string("request body has more than one `") + field + "`")
            << field;
    }
}

TEST(RequestReach, ToolsTheProviderRunsAreRefused) {
    for (const char *body : {
             R"({"model":"m","input":"x","tools":[{"type":"web_search_preview"}]})",
             R"({"model":"m","input":"x","tools":[{"type":"web_search"}]})",
             R"({"model":"m","input":"x","tools":[{"type":"file_search","vector_store_ids":["vs"]}]})",
             R"({"model":"m","input":"x","tools":[{"type":"code_interpreter","container":{"type":"auto"}}]})",
             R"({"model":"m","input":"x","tools":[{"type":"image_generation"}]})",
             R"({"model":"m","input":"x","tools":[{"type":"mcp","server_url":"https://x"}]})",
             R"({"model":"m","messages":[],"tools":[{"type":"web_search_20250305","name":"web_search"}]})",
             R"({"model":"m","messages":[],"tools":[{"type":"web_fetch_20250910","name":"web_fetch"}]})",
             R"({"model":"m","messages":[],"tools":[{"type":"code_execution_20250825","name":"code_execution"}]})",
             R"({"model":"m","messages":[],"tools":[{"name":"f","input_schema":{}},{"type":"some_new_tool"}]})",
         }) {
        const RequestReach r = reach(body);
        EXPECT_NE(r.refusal.find("runs at the provider and is billed per call"), std::string::npos)
            << body << ": " << r.refusal;
    }
    EXPECT_NE(reach(R"({"model":"m","messages":[],"mcp_servers":[{"type":"url","url":"https://x","name":"x"}]})")
                  .refusal.find("`mcp_servers`"),
              std::string::npos);
    EXPECT_EQ(reach(R"({"model":"m","messages":[],"mcp_servers":[]})").refusal, "");
    EXPECT_NE(reach(R"({"model":"m","messages":[],"web_search_options":{}})").refusal.find("web_search_options"),
              std::string::npos);
}

TEST(RequestReach, ToolsTheClientRunsAddTheirPrompts) {
    // function definitions: the tool-use prompt once, whatever their number
    RequestReach r = reach(R"({"model":"m","messages":[],"tools":[{"type":"function","function":{"name":"f",)"
                           R"("parameters":{"type":"object","properties":{"type":{"type":"string"}}}}},)"
                           R"({"type":"function","function":{"name":"g"}}]})");
    EXPECT_EQ(r.refusal, "");
    EXPECT_EQ(r.hidden_input_tokens, kToolPromptTokens);
    r = reach(R"({"model":"m","messages":[],"tools":[{"name":"f","input_schema":{"type":"object"}}]})");
    EXPECT_EQ(r.hidden_input_tokens, kToolPromptTokens);
    // the provider's own client-side tools: each adds its definition's prompt
    r = reach(R"({"model":"m","messages":[],"tools":[{"type":"computer_20250124","name":"computer",)"
              R"("display_width_px":1024,"display_height_px":768},{"type":"bash_20250124","name":"bash"},)"
              R"({"type":"text_editor_20250728","name":"str_replace_based_edit_tool"}]})");
    EXPECT_EQ(r.refusal, "");
    EXPECT_EQ(r.hidden_input_tokens, kToolPromptTokens + 3 * kProviderToolTokens);
    r = reach(R"({"model":"m","input":"x","tools":[{"type":"computer_use_preview","display_width":1024}]})");
    EXPECT_EQ(r.hidden_input_tokens, kToolPromptTokens + kProviderToolTokens);
    EXPECT_EQ(reach(R"({"model":"m","messages":[],"tools":[]})").hidden_input_tokens, 0);
}

TEST(RequestReach, AudioAndPriorityAreRefused) {
    for (const char *body : {
             R"({"model":"m","modalities":["text","audio"],"audio":{"voice":"alloy","format":"wav"},"messages":[]})",
             R"({"model":"m","modalities":["audio"],"messages":[]})",
             R"({"model":"m","messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"UklG","format":"wav"}}]}]})",
             R"({"model":"m","messages":[{"role":"assistant","audio":{"id":"audio_1"}}]})",
         }) {
        EXPECT_NE(reach(body).refusal.find("audio"), std::string::npos) << body;
    }
    EXPECT_EQ(reach(R"({"model":"m","modalities":["text"],"audio":null,"messages":[]})").refusal, "");
    EXPECT_NE(reach(R"({"model":"m","service_tier":"priority","messages":[]})").refusal.find("priority"),
              std::string::npos);
    for (const char *tier : {"auto", "default", "flex", "standard_only"})
        EXPECT_EQ(reach(std::string(R"({"model":"m","messages":[],"service_tier":")") + tier + "\"}").refusal, "")
            << tier;
    EXPECT_NE(reach(R"({"model":"m","messages":[]})", "prompt-caching-2024-07-31, context-1m-2025-08-07")
                  .refusal.find("long-context"),
              std::string::npos);
    EXPECT_EQ(reach(R"({"model":"m","messages":[]})", "prompt-caching-2024-07-31").refusal, "");
}

TEST(RequestReach, APredictionIsOutputToo) {
    EXPECT_TRUE(reach(R"({"model":"m","messages":[],"prediction":{"type":"content","content":"x"}})").prediction);
}

TEST(RequestReach, ABodyTooDeepForTheWalkIsRefused) {
    std::string body = R"({"model":"m","messages":)";
    for (int i = 0; i < 1100; ++i) body += "[";
    for (int i = 0; i < 1100; ++i) body += "]";
    body += "}";
    EXPECT_NE(reach(body).refusal, "");
}

// ---------------------------------------------------------------- endpoints

TEST(Endpoints, ByMethodAndPath) {
    EXPECT_EQ(endpoint_for("POST", "/v1/chat/completions"), Endpoint::chat_completions);
    EXPECT_EQ(endpoint_for("POST", "/openai/v1/chat/completions"), Endpoint::chat_completions);
    EXPECT_EQ(endpoint_for("POST", "/v1/completions"), Endpoint::completions);
    EXPECT_EQ(endpoint_for("POST", "/v1/embeddings"), Endpoint::embeddings);
    EXPECT_EQ(endpoint_for("POST", "/v1/responses"), Endpoint::responses);
    EXPECT_EQ(endpoint_for("POST", "/v1/messages"), Endpoint::messages);
    for (const char *method : {"GET", "HEAD", "DELETE", "OPTIONS"}) {
        EXPECT_EQ(endpoint_for(method, "/v1/models"), Endpoint::free) << method;
        EXPECT_EQ(endpoint_for(method, "/v1/chat/completions"), Endpoint::free) << method;
    }
    EXPECT_EQ(endpoint_for("POST", "/v1/messages/count_tokens"), Endpoint::free);
    EXPECT_EQ(endpoint_for("POST", "/v1/responses/input_tokens"), Endpoint::free);
    EXPECT_EQ(endpoint_for("POST", "/v1/responses/resp_123/cancel"), Endpoint::free);
    for (const char *path : {"/v1/fine_tuning/jobs", "/v1/batches", "/v1/files", "/v1/images/generations",
                             "/v1/audio/speech", "/v1/responses/compact", "/v1/chat/completions/cc_1",
                             "/v1/responses//cancel", "/v1/cancel", "/v1/chat/completions/"})
        EXPECT_EQ(endpoint_for("POST", path), Endpoint::unsupported) << path;
    EXPECT_EQ(endpoint_for("PUT", "/v1/chat/completions"), Endpoint::unsupported);
    EXPECT_EQ(endpoint_for("PATCH", "/v1/responses"), Endpoint::unsupported);
    EXPECT_TRUE(is_metered(Endpoint::messages));
    EXPECT_FALSE(is_metered(Endpoint::free));
    EXPECT_FALSE(is_metered(Endpoint::unsupported));
}

TEST(Endpoints, RefusedWhenUnsupportedOrNotInNormalForm) {
    EXPECT_EQ(endpoint_refusal(Endpoint::chat_completions, "POST", "/v1/chat/completions", "/v1/chat/completions"), "");
    EXPECT_NE(endpoint_refusal(Endpoint::chat_completions, "POST", "/v1/chat/completions",
                               "/v1/chat/%63ompletions").find("normal form"),
              std::string::npos);
    EXPECT_NE(endpoint_refusal(Endpoint::unsupported, "POST", "/v1/batches", "/v1/batches")
                  .find("cannot bound the cost of POST /v1/batches"),
              std::string::npos);
}

TEST(OutputBound, ItsFieldAtEachEndpoint) {
    EXPECT_EQ(output_bound_field(Endpoint::chat_completions), "max_completion_tokens");
    EXPECT_EQ(output_bound_field(Endpoint::completions), "max_tokens");
    EXPECT_EQ(output_bound_field(Endpoint::responses), "max_output_tokens");
    EXPECT_EQ(output_bound_field(Endpoint::messages), "");    // Anthropic requires max_tokens
    EXPECT_EQ(output_bound_field(Endpoint::embeddings), "");  // no output
}

TEST(OutputBound, AddedFirstOrInPlaceOfANull) {
    EXPECT_EQ(with_output_bound(R"({"model":"m","input":"x"})", "max_output_tokens", 4096),
              R"({"max_output_tokens":4096,"model":"m","input":"x"})");
    EXPECT_EQ(with_output_bound(" \n{ }", "max_tokens", 16), " \n{\"max_tokens\":16 }");
    // a null bound is replaced where it stands, so that no parser reads it instead
    EXPECT_EQ(with_output_bound(R"({"model":"m","max_completion_tokens" : null,"messages":[]})",
                                "max_completion_tokens", 16384),
              R"({"model":"m","max_completion_tokens" : 16384,"messages":[]})");
    // an escaped key is the same key
    EXPECT_EQ(with_output_bound(R"({"max_\u0074okens":null})", "max_tokens", 7), R"({"max_\u0074okens":7})");
    // the same name deeper down is not the request's bound
    EXPECT_EQ(with_output_bound(R"({"metadata":{"max_tokens":null}})", "max_tokens", 7),
              R"({"max_tokens":7,"metadata":{"max_tokens":null}})");
    EXPECT_EQ(with_output_bound("[1]", "max_tokens", 7), std::nullopt);
    EXPECT_EQ(with_output_bound("not json", "max_tokens", 7), std::nullopt);
}

// ---------------------------------------------------------------- the estimate

class EstimateReach : public ::testing::Test {
protected:
    std::shared_ptr<const Policy> policy = parse_policy(R"(
models:
  small: { input: 1, output: 2 }
  windowed: { input: 1, output: 2, context_window: 128000, max_output_tokens: 1000 }
default_context_window: 50000
default_max_output_tokens: 300
)",
                                                        "p.yaml");
};

TEST_F(EstimateReach, BodyBytesAndToolPromptsOrTheContextWindow) {
    const ModelPrice &small = policy->models.at("small");
    const ModelPrice &windowed = policy->models.at("windowed");
    RequestReach plain;
    Estimate e = estimate_worst_case(small, *policy, 900, std::nullopt, 1, plain);
    EXPECT_EQ(e.input_tokens, 900);
    EXPECT_EQ(e.output_tokens, 300);

    RequestReach tools;
    tools.hidden_input_tokens = kToolPromptTokens;
    e = estimate_worst_case(small, *policy, 900, 10, 1, tools);
    EXPECT_EQ(e.input_tokens, 900 + kToolPromptTokens);

    RequestReach outside;
    outside.outside_input = "`previous_response_id`";
    e = estimate_worst_case(small, *policy, 900, 10, 1, outside);
    EXPECT_EQ(e.input_tokens, 50000);  // the policy's default_context_window
    e = estimate_worst_case(windowed, *policy, 900, std::nullopt, 2, outside);
    EXPECT_EQ(e.input_tokens, 128000);  // the model's own
    EXPECT_EQ(e.output_tokens, 2000);   // max_output_tokens x n
    // ceil((128000 x 1 USD + 2000 x 2 USD) / 1M tokens)
    EXPECT_EQ(e.cost, 132'000'000);

    RequestReach predicted;
    predicted.prediction = true;
    e = estimate_worst_case(small, *policy, 900, 10, 1, predicted);
    EXPECT_EQ(e.output_tokens, 10 + 900);  // a rejected prediction bills as output, up to its length
}

TEST_F(EstimateReach, OutputBoundIsTheRequestsElseTheModelsElseTheDefault) {
    EXPECT_EQ(output_bound(policy->models.at("small"), *policy, 5), 5);
    EXPECT_EQ(output_bound(policy->models.at("windowed"), *policy, std::nullopt), 1000);
    EXPECT_EQ(output_bound(policy->models.at("small"), *policy, std::nullopt), 300);
}

TEST_F(EstimateReach, PolicyFieldsOfTheWindow) {
    EXPECT_EQ(policy->default_context_window, 50000);
    EXPECT_EQ(policy->context_window(policy->models.at("windowed")), 128000);
    EXPECT_THROW(parse_policy("models:\n  m: { input: 1, context_window: 0 }\n", "p.yaml"), PolicyError);
    EXPECT_THROW(parse_policy("default_context_window: -5\n", "p.yaml"), PolicyError);
}

// ---------------------------------------------------------------- one-hour cache writes

TEST(OneHourCacheWrites, ArePartOfTheCacheWritesAndPricedApart) {
    const std::string json = R"({"input_tokens":10,"cache_creation_input_tokens":300,"cache_read_input_tokens":5,)"
                             R"("cache_creation":{"ephemeral_5m_input_tokens":100,"ephemeral_1h_input_tokens":200},)"
                             R"("output_tokens":7})";
    for (const std::optional<Usage> &u :
         {parse_usage_object(json, Surface::anthropic), parse_usage_object_with_jansson(json, Surface::anthropic)}) {
        ASSERT_TRUE(u);
        EXPECT_EQ(u->input, 10);
        EXPECT_EQ(u->cache_write, 100);
        EXPECT_EQ(u->cache_write_1h, 200);
        EXPECT_EQ(u->cache_read, 5);
        EXPECT_EQ(u->output, 7);
        EXPECT_EQ(u->input_total(), 315);
    }
    // more one-hour writes than writes: not a usage to believe
    EXPECT_FALSE(parse_usage_object(R"({"input_tokens":1,"cache_creation_input_tokens":1,)"
                                    R"("cache_creation":{"ephemeral_1h_input_tokens":2},"output_tokens":1})",
                                    Surface::anthropic));
    const auto policy = parse_policy("models:\n  c: { input: 3, output: 15, cache_write: 3.75, cache_read: 0.30 }\n",
                                     "p.yaml");
    const ModelPrice &c = policy->models.at("c");
    EXPECT_EQ(c.cache_write_1h, 6'000'000'000);  // 2 x input, Anthropic's price
    Usage u;
    u.cache_write = 1'000'000;
    u.cache_write_1h = 1'000'000;
    EXPECT_EQ(usage_cost(u, c), 3'750'000'000 + 6'000'000'000);
    const auto explicit_price =
        parse_policy("models:\n  c: { input: 3, output: 15, cache_write: 3.75, cache_write_1h: 5 }\n", "p.yaml");
    EXPECT_EQ(explicit_price->models.at("c").cache_write_1h, 5'000'000'000);
}

}  // namespace
}  // namespace spendcap
