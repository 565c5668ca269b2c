// The response side: usage objects, their cost, the streaming JSON tokenizer
// and the scanner that finds a body's top-level usage.
#include "usage/usage.h"
#include "usage_test_support.h"

#include <gtest/gtest.h>
#include <jansson.h>

#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "json/tokenizer.h"

using namespace spendcap;
using namespace spendcap::test;

namespace {

std::string read_response(const std::string &name) { return read_test_data("responses/" + name); }

bool same(const Usage &a, const Usage &b) { return describe(a) == describe(b); }

struct Scan {
    UsageScanner::State state;
    std::optional<Usage> usage;
    std::string error;
};

// Feeds `body` in pieces of `piece` bytes (0 = whole).
Scan scan(const std::string &body, Surface surface, std::size_t piece = 0) {
    UsageScanner scanner(surface);
    if (piece == 0) {
        scanner.feed(body);
    } else {
        for (std::size_t at = 0; at < body.size(); at += piece)
            scanner.feed(std::string_view(body).substr(at, piece));
    }
    EXPECT_EQ(scanner.state(), UsageScanner::State::reading);
    scanner.finish();
    return {scanner.state(), scanner.usage(), scanner.error()};
}

struct Sample {
    const char *file;
    Surface surface;
    Usage expected;
};

const Sample kSamples[] = {
    // prompt 1117 of which 1024 cached; reasoning tokens are inside output.
    {"openai_chat_completion.json", Surface::openai, make_usage(93, 1024, 0, 0, 46)},
    {"openai_responses.json", Surface::openai, make_usage(200, 128, 0, 0, 852)},
    {"openai_embeddings.json", Surface::openai, make_usage(5, 0, 0, 0, 0)},
    {"anthropic_message.json", Surface::anthropic, make_usage(2095, 0, 2051, 12000, 503)},
};

}  // namespace

// ---------------------------------------------------------------------------
// parse_usage_object

TEST(ParseUsage, OpenAIChatCompletionsWithCachedPrompt) {
    auto u = parse_usage_object(
        R"({"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,)"
        R"("prompt_tokens_details":{"cached_tokens":1920,"audio_tokens":0},)"
        R"("completion_tokens_details":{"reasoning_tokens":256}})",
        Surface::openai);
    ASSERT_TRUE(u.has_value());
    EXPECT_PRED2(same, *u, make_usage(86, 1920, 0, 0, 300));
    EXPECT_EQ(u->input_total(), 2006);
}

TEST(ParseUsage, OpenAIWithoutDetailsOrCompletion) {
    auto chat = parse_usage_object(R"({"prompt_tokens":10,"completion_tokens":3,"total_tokens":13})",
                                   Surface::openai);
    ASSERT_TRUE(chat.has_value());
    EXPECT_PRED2(same, *chat, make_usage(10, 0, 0, 0, 3));

    auto embeddings = parse_usage_object(R"({"prompt_tokens":8,"total_tokens":8})", Surface::openai);
    ASSERT_TRUE(embeddings.has_value());
    EXPECT_PRED2(same, *embeddings, make_usage(8, 0, 0, 0, 0));

    auto null_details = parse_usage_object(
        R"({"prompt_tokens":8,"completion_tokens":1,"prompt_tokens_details":null})", Surface::openai);
    ASSERT_TRUE(null_details.has_value());
    EXPECT_PRED2(same, *null_details, make_usage(8, 0, 0, 0, 1));
}

TEST(ParseUsage, OpenAIResponses) {
    auto u = parse_usage_object(
        R"({"input_tokens":328,"input_tokens_details":{"cached_tokens":128},)"
        R"("output_tokens":52,"output_tokens_details":{"reasoning_tokens":20},"total_tokens":380})",
        Surface::openai);
    ASSERT_TRUE(u.has_value());
    EXPECT_PRED2(same, *u, make_usage(200, 128, 0, 0, 52));
}

TEST(ParseUsage, AnthropicInputExcludesCacheTokens) {
    auto u = parse_usage_object(
        R"({"input_tokens":50,"cache_creation_input_tokens":1000,"cache_read_input_tokens":4000,)"
        R"("output_tokens":120})",
        Surface::anthropic);
    ASSERT_TRUE(u.has_value());
    EXPECT_PRED2(same, *u, make_usage(50, 0, 1000, 4000, 120));
    EXPECT_EQ(u->input_total(), 5050);

    auto no_cache = parse_usage_object(R"({"input_tokens":12,"output_tokens":3})", Surface::anthropic);
    ASSERT_TRUE(no_cache.has_value());
    EXPECT_PRED2(same, *no_cache, make_usage(12, 0, 0, 0, 3));

    // A stream's message_delta may carry the output alone.
    auto delta = parse_usage_object(R"({"output_tokens":15})", Surface::anthropic);
    ASSERT_TRUE(delta.has_value());
    EXPECT_PRED2(same, *delta, make_usage(0, 0, 0, 0, 15));

    auto null_cache = parse_usage_object(
        R"({"input_tokens":5,"output_tokens":1,"cache_creation_input_tokens":null})", Surface::anthropic);
    ASSERT_TRUE(null_cache.has_value());
    EXPECT_PRED2(same, *null_cache, make_usage(5, 0, 0, 0, 1));
}

TEST(ParseUsage, RejectsWhatIsNotUsage) {
    const std::pair<const char *, Surface> bad[] = {
        {"", Surface::openai},
        {"not json", Surface::openai},
        {"[1,2]", Surface::openai},
        {"{}", Surface::openai},
        {"{}", Surface::anthropic},
        {R"({"total_tokens":5})", Surface::openai},
        {R"({"prompt_tokens":-1,"completion_tokens":1})", Surface::openai},
        {R"({"prompt_tokens":10,"completion_tokens":1.0})", Surface::openai},
        {R"({"prompt_tokens":"10","completion_tokens":1})", Surface::openai},
        {R"({"prompt_tokens":10,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":11}})",
         Surface::openai},
        {R"({"prompt_tokens":10,"prompt_tokens_details":{"cached_tokens":-2}})", Surface::openai},
        {R"({"prompt_tokens":10,"prompt_tokens_details":5})", Surface::openai},
        {R"({"input_tokens":10,"output_tokens":-3})", Surface::openai},
        {R"({"input_tokens":10,"output_tokens":3,"input_tokens_details":{"cached_tokens":20}})",
         Surface::openai},
        {R"({"input_tokens":1.5,"output_tokens":3})", Surface::anthropic},
        {R"({"input_tokens":1,"output_tokens":3,"cache_read_input_tokens":-1})", Surface::anthropic},
        {R"({"input_tokens":1,"output_tokens":3,"cache_creation_input_tokens":"2"})", Surface::anthropic},
        {R"({"cache_read_input_tokens":4})", Surface::anthropic},
        {R"({"prompt_tokens":99999999999999999999})", Surface::openai},
    };
    for (const auto &[json, surface] : bad)
        EXPECT_FALSE(parse_usage_object(json, surface).has_value()) << json;
}

TEST(UsageCost, EachBucketAtItsPrice) {
    ModelPrice claude;
    claude.input = 3'000'000'000;
    claude.output = 15'000'000'000;
    claude.cache_write = 3'750'000'000;
    claude.cache_read = 300'000'000;
    // 50*3000 + 1000*3750 + 4000*300 + 120*15000 nano-USD
    EXPECT_EQ(usage_cost(make_usage(50, 0, 1000, 4000, 120), claude),
              150'000 + 3'750'000 + 1'200'000 + 1'800'000);

    ModelPrice mini;
    mini.input = 150'000'000;
    mini.output = 600'000'000;
    mini.cached_input = 75'000'000;
    // 93*150 + 1024*75 + 46*600 = 13950 + 76800 + 27600
    EXPECT_EQ(usage_cost(make_usage(93, 1024, 0, 0, 46), mini), 118'350);
}

TEST(UsageCost, MissingPricesFallBackToInputAndRoundUp) {
    ModelPrice plain;
    plain.input = 20'000'000;  // 0.02 USD per million
    plain.output = 0;
    // cached, cache write and cache read all billed at input: 10 tokens * 20 = 200
    EXPECT_EQ(usage_cost(make_usage(1, 2, 3, 4, 99), plain), 200);
    ModelPrice tiny;
    tiny.input = 1;
    tiny.output = 1;
    EXPECT_EQ(usage_cost(make_usage(1, 0, 0, 0, 1), tiny), 1);  // 2e-6 nano-USD rounds up
    EXPECT_EQ(usage_cost(Usage{}, tiny), 0);
}

// ---------------------------------------------------------------------------
// JsonTokenizer

namespace {

using Token = JsonTokenizer::Token;

// Tokens of a document fed in pieces, as "name" strings, with key texts.
std::vector<std::string> tokens_of(const std::string &json, std::size_t piece) {
    JsonTokenizer t;
    std::vector<std::string> out;
    auto record = [&](Token token) {
        switch (token) {
        case Token::object_begin: out.push_back("{" + std::to_string(t.depth())); break;
        case Token::object_end: out.push_back("}" + std::to_string(t.depth())); break;
        case Token::array_begin: out.push_back("[" + std::to_string(t.depth())); break;
        case Token::array_end: out.push_back("]" + std::to_string(t.depth())); break;
        case Token::key: out.push_back("key:" + std::string(t.text())); break;
        case Token::string: out.push_back("str:" + std::string(t.text())); break;
        case Token::number: out.push_back("num"); break;
        case Token::true_value: out.push_back("true"); break;
        case Token::false_value: out.push_back("false"); break;
        case Token::null_value: out.push_back("null"); break;
        case Token::error: out.push_back("error"); break;
        case Token::need_more: break;
        }
    };
    for (std::size_t at = 0; at < json.size(); at += piece) {
        const std::string_view chunk = std::string_view(json).substr(at, piece);
        std::size_t pos = 0;
        for (Token token; (token = t.next(chunk, pos)) != Token::need_more;) {
            record(token);
            if (token == Token::error) return out;
        }
        EXPECT_EQ(pos, chunk.size());
    }
    record(t.finish());
    if (t.complete()) out.push_back("complete");
    return out;
}

}  // namespace

TEST(JsonTokenizer, TokensWithDepthAndDecodedKeys) {
    const std::string json =
        R"( {"a\"b":[1,-2.5e+3,true,false,null,{}],"us\u0061ge":{"x":"caf\u00e9"},"z":0} )";
    const std::vector<std::string> expected = {
        "{1",     "key:a\"b", "[2",  "num",       "num",     "true", "false",
        "null",   "{3",       "}2",  "]1",        "key:usage", "{2", "key:x",
        "str:caf\xc3\xa9",    "}1",  "key:z",     "num",     "}0",   "complete"};
    for (std::size_t piece : {json.size(), std::size_t(1), std::size_t(2), std::size_t(5)})
        EXPECT_EQ(tokens_of(json, piece), expected) << "piece " << piece;
}

TEST(JsonTokenizer, TopLevelScalarsComplete) {
    EXPECT_EQ(tokens_of("42", 1), (std::vector<std::string>{"num", "complete"}));
    EXPECT_EQ(tokens_of("\"s\"\n", 1), (std::vector<std::string>{"str:s", "complete"}));
    EXPECT_EQ(tokens_of("null", 3), (std::vector<std::string>{"null", "complete"}));
}

TEST(JsonTokenizer, RejectsInvalidJson) {
    const char *bad[] = {
        "",         "   ",      "{",          "{\"a\"}",     "{\"a\":}",   "{\"a\":1,}",
        "[1,]",     "[1 2]",    "{\"a\" 1}",  "{a:1}",       "01",         "-",
        "1.",       ".5",       "1e",         "1e+",         "+1",         "tru",
        "nul",      "truex",    "[1]]",       "{}}",         "{}{}",       "[}",
        "{]",       "\"a",      "\"\\x\"",    "\"\\u12G4\"", "\"a\nb\"",   "{\"a\":1 x}",
        "[\"\\u00\"]", "NaN",   "[Infinity]", "'a'",
    };
    for (const char *json : bad) {
        for (std::size_t piece : {std::size_t(1), std::size_t(64)}) {
            const auto tokens = tokens_of(json, piece);
            ASSERT_FALSE(tokens.empty()) << json;
            EXPECT_EQ(tokens.back(), "error") << "'" << json << "' piece " << piece;
        }
    }
}

TEST(JsonTokenizer, ErrorNamesTheByte) {
    JsonTokenizer t;
    std::size_t pos = 0;
    const std::string_view chunk = R"({"a": 1, x})";
    Token token;
    while ((token = t.next(chunk, pos)) != Token::need_more && token != Token::error) {
    }
    EXPECT_EQ(token, Token::error);
    EXPECT_EQ(t.error(), "invalid JSON at byte 9: unexpected 'x'");
    EXPECT_TRUE(t.failed());
    // Sticky until reset.
    pos = 0;
    EXPECT_EQ(t.next("{}", pos), Token::error);
    t.reset();
    pos = 0;
    EXPECT_EQ(t.next("{}", pos), Token::object_begin);
    EXPECT_EQ(t.next("{}", pos), Token::object_end);
    EXPECT_TRUE(t.complete());
    EXPECT_EQ(t.offset(), 2u);

    JsonTokenizer binary;
    pos = 0;
    EXPECT_EQ(binary.next(std::string_view("\x01", 1), pos), Token::error);
    EXPECT_EQ(binary.error(), "invalid JSON at byte 0: unexpected byte 0x01");
}

TEST(JsonTokenizer, TextIsCutButTokensGoOn) {
    const std::string long_key(200, 'k');
    const std::string json = "{\"" + long_key + "\":\"v\"}";
    JsonTokenizer t;
    std::size_t pos = 0;
    EXPECT_EQ(t.next(json, pos), Token::object_begin);
    EXPECT_EQ(t.next(json, pos), Token::key);
    EXPECT_EQ(t.text(), std::string(JsonTokenizer::kMaxText, 'k'));
    EXPECT_TRUE(t.text_truncated());
    EXPECT_EQ(t.next(json, pos), Token::string);
    EXPECT_EQ(t.text(), "v");
    EXPECT_FALSE(t.text_truncated());
}

TEST(JsonTokenizer, NestingLimit) {
    const std::size_t max = JsonTokenizer::kMaxDepth;
    const std::string deepest = std::string(max, '[') + std::string(max, ']');
    EXPECT_EQ(tokens_of(deepest, 4096).back(), "complete");
    const std::string too_deep = std::string(max + 1, '[') + std::string(max + 1, ']');
    EXPECT_EQ(tokens_of(too_deep, 4096).back(), "error");
    JsonTokenizer t;
    std::size_t pos = 0;
    Token token;
    while ((token = t.next(too_deep, pos)) != Token::error && token != Token::need_more) {
    }
    EXPECT_EQ(t.error(), "invalid JSON at byte 1024: nested deeper than 1024 levels");
}

// Differential check against jansson: random edits of real bodies must be
// accepted or rejected alike, and where accepted the scanner must find what
// jansson finds at the top-level "usage".
TEST(JsonTokenizer, AgreesWithJanssonOnMutatedBodies) {
    std::mt19937 random(20261121);
    const std::string alphabet = "{}[]\":,\\/ 0123456789.eE-+tfnrulsaxbu";
    int compared = 0, accepted = 0;
    for (const Sample &sample : kSamples) {
        const std::string original = read_response(sample.file);
        ASSERT_FALSE(original.empty()) << sample.file;
        for (int round = 0; round < 3000; ++round) {
            std::string body = original;
            const int edits = 1 + static_cast<int>(random() % 3);
            for (int e = 0; e < edits && !body.empty(); ++e) {
                const std::size_t at = random() % body.size();
                const char c = alphabet[random() % alphabet.size()];
                switch (random() % 3) {
                case 0: body[at] = c; break;
                case 1: body.insert(body.begin() + at, c); break;
                default: body.erase(at, 1); break;
                }
            }
            json_error_t error;
            json_t *root = json_loadb(body.data(), body.size(),
                                      JSON_DECODE_ANY | JSON_ALLOW_NUL, &error);
            const std::string why = root ? "" : error.text;
            // Differences by design: jansson also checks UTF-8, surrogate
            // pairs and number ranges, which do not matter for finding usage.
            if (why.find("UTF-8") != std::string::npos || why.find("decode byte") != std::string::npos ||
                why.find("nicode") != std::string::npos ||
                why.find("too big") != std::string::npos || why.find("overflow") != std::string::npos ||
                why.find("surrogate") != std::string::npos) {
                continue;
            }
            const std::size_t piece = 1 + random() % 40;
            const Scan got = scan(body, sample.surface, piece);
            ++compared;
            if (!root) {
                EXPECT_EQ(got.state, UsageScanner::State::malformed)
                    << "jansson: " << why << "\n" << body;
                continue;
            }
            UsageScanner::State expected_state = UsageScanner::State::malformed;
            std::optional<Usage> expected_usage;
            if (json_is_object(root)) {
                json_t *usage = json_object_get(root, "usage");
                if (!usage || json_is_null(usage)) {
                    expected_state = UsageScanner::State::no_usage;
                } else if (json_is_object(usage)) {
                    char *text = json_dumps(usage, JSON_COMPACT);
                    expected_usage = parse_usage_object(text, sample.surface);
                    free(text);
                    if (expected_usage) expected_state = UsageScanner::State::found;
                }
            }
            json_decref(root);
            ++accepted;
            EXPECT_EQ(state_name(got.state), std::string(state_name(expected_state)))
                << got.error << "\n" << body;
            if (expected_usage && got.usage) EXPECT_PRED2(same, *got.usage, *expected_usage);
        }
    }
    // The edits must exercise both sides.
    EXPECT_GT(compared, 10000);
    EXPECT_GT(accepted, 1000);
}

// ---------------------------------------------------------------------------
// UsageScanner

TEST(UsageScanner, RealResponsesInAnyPieces) {
    for (const Sample &sample : kSamples) {
        const std::string body = read_response(sample.file);
        ASSERT_FALSE(body.empty()) << sample.file;
        for (std::size_t piece : {std::size_t(0), std::size_t(1), std::size_t(3), std::size_t(17)}) {
            const Scan got = scan(body, sample.surface, piece);
            ASSERT_EQ(got.state, UsageScanner::State::found)
                << sample.file << " piece " << piece << ": " << got.error;
            ASSERT_TRUE(got.usage.has_value());
            EXPECT_PRED2(same, *got.usage, sample.expected) << sample.file << " piece " << piece;
            EXPECT_EQ(got.error, "");
        }
    }
}

TEST(UsageScanner, SplitAtEveryByte) {
    for (const Sample &sample : kSamples) {
        const std::string body = read_response(sample.file);
        for (std::size_t cut = 0; cut <= body.size(); ++cut) {
            UsageScanner scanner(sample.surface);
            scanner.feed(std::string_view(body).substr(0, cut));
            scanner.feed(std::string_view(body).substr(cut));
            scanner.finish();
            ASSERT_EQ(scanner.state(), UsageScanner::State::found)
                << sample.file << " cut at " << cut << ": " << scanner.error();
            EXPECT_PRED2(same, *scanner.usage(), sample.expected);
        }
    }
}

TEST(UsageScanner, EveryTruncationIsMalformed) {
    for (const Sample &sample : kSamples) {
        const std::string body = read_response(sample.file);
        const std::size_t end = body.find_last_of('}') + 1;  // trailing newline does not matter
        for (std::size_t length = 0; length < end; ++length) {
            const Scan got = scan(body.substr(0, length), sample.surface, 7);
            ASSERT_EQ(got.state, UsageScanner::State::malformed) << sample.file << " length " << length;
            const bool blank = body.find_first_not_of(" \n") >= length;
            EXPECT_EQ(got.error, blank ? "response body is empty" : "response ended inside the JSON body")
                << sample.file << " length " << length;
        }
        EXPECT_EQ(scan(body.substr(0, end), sample.surface, 7).state, UsageScanner::State::found);
    }
}

TEST(UsageScanner, ErrorBodyHasNoUsage) {
    const std::string body = read_response("openai_error.json");
    for (std::size_t piece : {std::size_t(0), std::size_t(1), std::size_t(3), std::size_t(17)}) {
        const Scan got = scan(body, Surface::openai, piece);
        EXPECT_EQ(got.state, UsageScanner::State::no_usage) << got.error;
        EXPECT_FALSE(got.usage.has_value());
    }
}

TEST(UsageScanner, OnlyTheTopLevelUsageCounts) {
    const std::string body =
        R"({"text":"\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}",)"
        R"("nested":{"usage":{"prompt_tokens":2,"completion_tokens":2}},)"
        R"("list":[{"usage":{"prompt_tokens":3,"completion_tokens":3}}],)"
        R"("usage_total":{"prompt_tokens":4},"Usage":{"prompt_tokens":5}})";
    for (std::size_t piece : {std::size_t(0), std::size_t(1), std::size_t(3), std::size_t(17)})
        EXPECT_EQ(scan(body, Surface::openai, piece).state, UsageScanner::State::no_usage);

    // The same, with a real top-level usage after the decoys.
    const std::string with_usage =
        body.substr(0, body.size() - 1) + R"(,"usage":{"prompt_tokens":6,"completion_tokens":7}})";
    const Scan got = scan(with_usage, Surface::openai, 3);
    ASSERT_EQ(got.state, UsageScanner::State::found) << got.error;
    EXPECT_PRED2(same, *got.usage, make_usage(6, 0, 0, 0, 7));
}

TEST(UsageScanner, UsageFirstAndEscapedKey) {
    const Scan first = scan(R"({"usage":{"input_tokens":4,"output_tokens":2},"content":[]})",
                            Surface::anthropic, 1);
    ASSERT_EQ(first.state, UsageScanner::State::found) << first.error;
    EXPECT_PRED2(same, *first.usage, make_usage(4, 0, 0, 0, 2));

    // JSON parsers read "us\u0061ge" as "usage"; so does the scanner.
    const Scan escaped = scan(R"({"us\u0061ge":{"prompt_tokens":9,"completion_tokens":1}})",
                              Surface::openai, 2);
    ASSERT_EQ(escaped.state, UsageScanner::State::found) << escaped.error;
    EXPECT_PRED2(same, *escaped.usage, make_usage(9, 0, 0, 0, 1));
}

TEST(UsageScanner, LastTopLevelUsageWins) {
    const Scan got = scan(R"({"usage":{"prompt_tokens":1},"x":1,"usage":{"prompt_tokens":2,"completion_tokens":3}})",
                          Surface::openai, 5);
    ASSERT_EQ(got.state, UsageScanner::State::found) << got.error;
    EXPECT_PRED2(same, *got.usage, make_usage(2, 0, 0, 0, 3));
    EXPECT_EQ(scan(R"({"usage":{"prompt_tokens":1},"usage":null})", Surface::openai).state,
              UsageScanner::State::no_usage);
}

TEST(UsageScanner, NullUsageIsNoUsage) {
    const Scan got = scan(R"({"id":"x","usage":null})", Surface::openai, 1);
    EXPECT_EQ(got.state, UsageScanner::State::no_usage);
    EXPECT_FALSE(got.usage.has_value());
}

TEST(UsageScanner, MalformedBodies) {
    struct Case {
        std::string body;
        std::string error;
    } cases[] = {
        {"", "response body is empty"},
        {" \r\n\t", "response body is empty"},
        {"<html><body>Bad Gateway</body></html>", "response body is invalid JSON at byte 0: unexpected '<'"},
        {R"([{"usage":{"prompt_tokens":1}}])", "response body is not a JSON object"},
        {"42", "response body is not a JSON object"},
        {R"("usage")", "response body is not a JSON object"},
        {R"({"usage":{"prompt_tokens":1,"completion_tokens":2}} {})",
         "response body is invalid JSON at byte 52: unexpected data after the JSON document"},
        {R"({"usage":{"prompt_tokens":1,"completion_tokens":2})", "response ended inside the JSON body"},
        {R"({"usage":{"prompt_tokens":-1,"completion_tokens":2}})",
         "usage object is not in the OpenAI format"},
        {R"({"usage":{"prompt_tokens":1.5}})", "usage object is not in the OpenAI format"},
        {R"({"usage":"lots"})", "usage is not a JSON object"},
        {R"({"usage":[1,2]})", "usage is not a JSON object"},
        {R"({"usage":{"prompt_tokens":1},"a":tru})", "response body is invalid JSON at byte 36: unexpected '}'"},
    };
    for (const Case &c : cases) {
        for (std::size_t piece : {std::size_t(0), std::size_t(1), std::size_t(3)}) {
            const Scan got = scan(c.body, Surface::openai, piece);
            EXPECT_EQ(got.state, UsageScanner::State::malformed) << c.body;
            EXPECT_EQ(got.error, c.error) << c.body << " piece " << piece;
            EXPECT_FALSE(got.usage.has_value());
        }
    }
    const Scan anthropic = scan(R"({"type":"message","usage":{}})", Surface::anthropic);
    EXPECT_EQ(anthropic.state, UsageScanner::State::malformed);
    EXPECT_EQ(anthropic.error, "usage object is not in the Anthropic format");
}

TEST(UsageScanner, UsageCaptureLimit) {
    // A usage object of exactly kMaxCapture bytes is read; one byte more is not.
    const std::string head = R"({"prompt_tokens":11,"completion_tokens":22,"pad":")";
    const std::string tail = "\"}";
    const std::size_t pad = UsageScanner::kMaxCapture - head.size() - tail.size();
    const std::string fits = head + std::string(pad, 'p') + tail;
    ASSERT_EQ(fits.size(), UsageScanner::kMaxCapture);
    const std::string too_big = head + std::string(pad + 1, 'p') + tail;

    for (std::size_t piece : {std::size_t(0), std::size_t(1), std::size_t(1000)}) {
        const Scan ok = scan("{\"id\":1,\"usage\":" + fits + "}", Surface::openai, piece);
        ASSERT_EQ(ok.state, UsageScanner::State::found) << ok.error;
        EXPECT_PRED2(same, *ok.usage, make_usage(11, 0, 0, 0, 22));

        const Scan big = scan("{\"id\":1,\"usage\":" + too_big + "}", Surface::openai, piece);
        EXPECT_EQ(big.state, UsageScanner::State::malformed);
        EXPECT_EQ(big.error, "usage object larger than 8192 bytes");
    }
    // A too large usage followed by a usable one: the last one counts.
    const Scan later = scan("{\"usage\":" + too_big + ",\"usage\":{\"prompt_tokens\":1}}", Surface::openai, 100);
    ASSERT_EQ(later.state, UsageScanner::State::found) << later.error;
    EXPECT_PRED2(same, *later.usage, make_usage(1, 0, 0, 0, 0));
}

TEST(UsageScanner, MultiMegabyteBody) {
    // ~6 MB: a long answer with escapes, a large nested array, a usage at the end.
    std::string content;
    content.reserve(4 << 20);
    while (content.size() < (4u << 20)) content += R"(lorem \"usage\": {\"prompt_tokens\": 1} \u00e9\n)";
    std::string numbers = "[";
    for (int i = 0; i < 200000; ++i) numbers += (i ? "," : "") + std::to_string(i * 7) + ".5e-3";
    numbers += "]";
    const std::string body =
        R"({"id":"chatcmpl-x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":")" +
        content + R"("},"logprobs":{"tokens":)" + numbers +
        R"(},"finish_reason":"length"}],"usage":{"prompt_tokens":120000,"completion_tokens":16384,)"
        R"("prompt_tokens_details":{"cached_tokens":100000}}})";
    ASSERT_GT(body.size(), 5u << 20);
    for (std::size_t piece : {std::size_t(0), std::size_t(4093), std::size_t(65536)}) {
        const Scan got = scan(body, Surface::openai, piece);
        ASSERT_EQ(got.state, UsageScanner::State::found) << got.error;
        EXPECT_PRED2(same, *got.usage, make_usage(20000, 100000, 0, 0, 16384));
    }
    // Truncated in the middle of the content: malformed.
    EXPECT_EQ(scan(body.substr(0, body.size() / 2), Surface::openai, 65536).state,
              UsageScanner::State::malformed);
}

TEST(UsageScanner, FeedAfterFinishIsIgnored) {
    UsageScanner scanner(Surface::openai);
    scanner.feed(R"({"usage":{"prompt_tokens":3,"completion_tokens":4}})");
    EXPECT_EQ(scanner.state(), UsageScanner::State::reading);
    scanner.finish();
    ASSERT_EQ(scanner.state(), UsageScanner::State::found);
    scanner.feed("garbage");
    scanner.finish();
    EXPECT_EQ(scanner.state(), UsageScanner::State::found);
    EXPECT_PRED2(same, *scanner.usage(), make_usage(3, 0, 0, 0, 4));
}

TEST(UsageScanner, GarbageAfterAnErrorIsCheap) {
    UsageScanner scanner(Surface::openai);
    scanner.feed("not json");
    for (int i = 0; i < 1000; ++i) scanner.feed(std::string(4096, '{'));
    scanner.finish();
    EXPECT_EQ(scanner.state(), UsageScanner::State::malformed);
    EXPECT_EQ(scanner.error(), "response body is invalid JSON at byte 1: unexpected 'o'");
}
