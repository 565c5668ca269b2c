// The response side, streamed: SSE event streams of every API, read in any
// pieces, with any line endings; truncations; provider errors; the memory
// bound on bodies of tens of megabytes.
#include "usage/usage.h"
#include "usage_test_support.h"

#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

using namespace spendcap;
using namespace spendcap::test;

namespace {

using State = UsageScanner::State;

std::string read_stream(const std::string &name) { return read_test_data("streams/" + name); }

bool at_most(const Usage &a, const Usage &b) {
    return a.input <= b.input && a.cached_input <= b.cached_input && a.cache_write <= b.cache_write &&
           a.cache_read <= b.cache_read && a.output <= b.output;
}

struct Scan {
    std::string state;
    std::string usage;
    std::string error;
};

// Feeds `body` in pieces of `piece` bytes (0 = whole).
Scan scan(const std::string &body, Surface surface, std::size_t piece = 0,
          ContentEncoding encoding = ContentEncoding::identity, BodyFormat format = BodyFormat::sse) {
    UsageScanner scanner(surface, format, encoding);
    if (piece == 0) {
        scanner.feed(body);
    } else {
        for (std::size_t at = 0; at < body.size(); at += piece)
            scanner.feed(std::string_view(body).substr(at, piece));
    }
    EXPECT_EQ(scanner.state(), State::reading);
    scanner.finish();
    return {state_name(scanner.state()), describe(scanner.usage()), scanner.error()};
}

// LF line endings turned into CRLF or CR.
std::string with_line_ends(const std::string &lf, const std::string &end) {
    std::string out;
    for (char c : lf) {
        if (c == '\n')
            out += end;
        else
            out += c;
    }
    return out;
}

struct StreamSample {
    const char *file;
    Surface surface;
    Usage expected;
};

const StreamSample kStreams[] = {
    // prompt 1117, 1024 of them cached
    {"openai_chat.sse", Surface::openai, make_usage(93, 1024, 0, 0, 46)},
    {"openai_completions.sse", Surface::openai, make_usage(5, 0, 0, 0, 7)},
    // input and cache tokens from message_start, output from message_delta
    {"anthropic_messages.sse", Surface::anthropic, make_usage(2095, 0, 2051, 12000, 503)},
    // two message_delta (newer API: with input and cache tokens): the last one's output
    {"anthropic_tool_use.sse", Surface::anthropic, make_usage(472, 0, 0, 0, 89)},
    // response.completed: input 328 of which 128 cached; 20 reasoning tokens inside the 52 output
    {"openai_responses.sse", Surface::openai, make_usage(200, 128, 0, 0, 52)},
};

const std::size_t kPieces[] = {0, 1, 3, 17};

}  // namespace

// ---------------------------------------------------------------------------
// Content-Type and Content-Encoding

TEST(BodyFormat, EventStreamInAnyCaseWithParameters) {
    EXPECT_EQ(body_format_for("text/event-stream"), BodyFormat::sse);
    EXPECT_EQ(body_format_for("text/event-stream; charset=utf-8"), BodyFormat::sse);
    EXPECT_EQ(body_format_for("Text/Event-Stream;charset=UTF-8"), BodyFormat::sse);
    EXPECT_EQ(body_format_for(" text/event-stream ; x=y"), BodyFormat::sse);
    EXPECT_EQ(body_format_for("application/json"), BodyFormat::json);
    EXPECT_EQ(body_format_for("application/json; charset=utf-8"), BodyFormat::json);
    EXPECT_EQ(body_format_for(""), BodyFormat::json);
    EXPECT_EQ(body_format_for("text/event-streams"), BodyFormat::json);
    EXPECT_EQ(body_format_for("text/plain; text/event-stream"), BodyFormat::json);
}

TEST(ContentEncoding, KnownCodings) {
    EXPECT_EQ(content_encoding_for(""), ContentEncoding::identity);
    EXPECT_EQ(content_encoding_for("identity"), ContentEncoding::identity);
    EXPECT_EQ(content_encoding_for("Identity"), ContentEncoding::identity);
    EXPECT_EQ(content_encoding_for("gzip"), ContentEncoding::gzip);
    EXPECT_EQ(content_encoding_for(" GZIP "), ContentEncoding::gzip);
    EXPECT_EQ(content_encoding_for("x-gzip"), ContentEncoding::gzip);
    EXPECT_EQ(content_encoding_for("deflate"), ContentEncoding::deflate);
    EXPECT_EQ(content_encoding_for("br"), std::nullopt);
    EXPECT_EQ(content_encoding_for("zstd"), std::nullopt);
    EXPECT_EQ(content_encoding_for("gzip, br"), std::nullopt);
    EXPECT_EQ(content_encoding_for("gzip, identity"), std::nullopt);
    EXPECT_EQ(content_encoding_for("compress"), std::nullopt);
}

// ---------------------------------------------------------------------------
// SSE streams of every API

TEST(StreamUsage, EveryShapeEveryLineEndingAnyPieces) {
    for (const StreamSample &sample : kStreams) {
        const std::string lf = read_stream(sample.file);
        ASSERT_FALSE(lf.empty()) << sample.file;
        for (const char *end : {"\n", "\r\n", "\r"}) {
            const std::string body = with_line_ends(lf, end);
            for (std::size_t piece : kPieces) {
                const Scan got = scan(body, sample.surface, piece);
                EXPECT_EQ(got.state, "found") << sample.file << " piece " << piece << ": " << got.error;
                EXPECT_EQ(got.usage, describe(sample.expected)) << sample.file << " piece " << piece;
                EXPECT_EQ(got.error, "");
            }
        }
    }
}

TEST(StreamUsage, SplitAtEveryByte) {
    for (const StreamSample &sample : kStreams) {
        for (const char *end : {"\n", "\r\n", "\r"}) {
            const std::string body = with_line_ends(read_stream(sample.file), end);
            for (std::size_t cut = 0; cut <= body.size(); ++cut) {
                UsageScanner scanner(sample.surface, BodyFormat::sse);
                scanner.feed(std::string_view(body).substr(0, cut));
                scanner.feed(std::string_view(body).substr(cut));
                scanner.finish();
                ASSERT_EQ(scanner.state(), State::found)
                    << sample.file << " cut at " << cut << ": " << scanner.error();
                ASSERT_EQ(describe(scanner.usage()), describe(sample.expected))
                    << sample.file << " cut at " << cut;
            }
        }
    }
}

TEST(StreamUsage, EveryTruncationIsMalformedWithPartialUsage) {
    for (const StreamSample &sample : kStreams) {
        for (const char *end : {"\n", "\r\n"}) {
            const std::string body = with_line_ends(read_stream(sample.file), end);
            Usage previous;
            bool saw_partial = false;
            // With CRLF, the last CR already ends the blank line that dispatches.
            const std::size_t complete_at = body.size() - (std::string(end) == "\r\n" ? 1 : 0);
            EXPECT_EQ(scan(body.substr(0, complete_at), sample.surface).state, "found");
            for (std::size_t length = 0; length < complete_at; ++length) {
                UsageScanner scanner(sample.surface, BodyFormat::sse);
                scanner.feed(std::string_view(body).substr(0, length));
                // While reading, usage() is what was merged so far.
                const std::optional<Usage> before_finish = scanner.usage();
                scanner.finish();
                ASSERT_EQ(scanner.state(), State::malformed) << sample.file << " length " << length;
                ASSERT_EQ(scanner.error(), "stream ended before its final event")
                    << sample.file << " length " << length;
                EXPECT_EQ(describe(scanner.usage()), describe(before_finish));
                if (!scanner.usage()) {
                    EXPECT_FALSE(saw_partial) << "usage went away at length " << length;
                    continue;
                }
                saw_partial = true;
                // Never more than the final usage, and never less than a shorter prefix's.
                EXPECT_TRUE(at_most(*scanner.usage(), sample.expected))
                    << sample.file << " length " << length << ": " << describe(scanner.usage());
                EXPECT_TRUE(at_most(previous, *scanner.usage())) << sample.file << " length " << length;
                previous = *scanner.usage();
            }
            // The usage comes before the final event, except in Responses
            // streams where the final event carries it.
            EXPECT_EQ(saw_partial, std::string(sample.file) != "openai_responses.sse") << sample.file;
            EXPECT_EQ(scan(body, sample.surface).state, "found");
        }
    }
}

TEST(StreamUsage, TruncatedAnthropicKeepsMessageStartInput) {
    const std::string body = read_stream("anthropic_messages.sse");
    const std::size_t delta = body.find("event: message_delta");
    ASSERT_NE(delta, std::string::npos);
    const Scan got = scan(body.substr(0, delta), Surface::anthropic, 5);
    EXPECT_EQ(got.state, "malformed");
    EXPECT_EQ(got.error, "stream ended before its final event");
    EXPECT_EQ(got.usage, describe(make_usage(2095, 0, 2051, 12000, 1)));
    // Up to message_delta included, without message_stop.
    const std::size_t stop = body.find("event: message_stop");
    const Scan no_stop = scan(body.substr(0, stop), Surface::anthropic, 5);
    EXPECT_EQ(no_stop.state, "malformed");
    EXPECT_EQ(no_stop.usage, describe(make_usage(2095, 0, 2051, 12000, 503)));
}

TEST(StreamUsage, StreamWithoutUsageIsComplete) {
    for (std::size_t piece : kPieces) {
        const Scan got = scan(read_stream("openai_chat_no_usage.sse"), Surface::openai, piece);
        EXPECT_EQ(got.state, "no_usage") << got.error;
        EXPECT_EQ(got.usage, "none");
    }
    // Anthropic stream with message_stop but no usage anywhere.
    const Scan anthropic = scan("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n", Surface::anthropic);
    EXPECT_EQ(anthropic.state, "no_usage") << anthropic.error;
}

TEST(StreamUsage, CommentsFieldsAndEventLines) {
    const std::string body =
        ": OPENROUTER PROCESSING\n"
        ":\n"
        "id: 1\n"
        "retry: 3000\n"
        "event: whatever\n"
        "unknown-field-with-a-very-long-name: data: {\n"
        "data:{\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":4}}\n"
        ": a comment inside an event\n"
        "\n"
        "id\n"
        "\n"
        ":keep-alive\r\n"
        "\r\n"
        "data: [DONE]\n"
        "\n";
    for (std::size_t piece : kPieces) {
        const Scan got = scan(body, Surface::openai, piece);
        EXPECT_EQ(got.state, "found") << got.error;
        EXPECT_EQ(got.usage, describe(make_usage(10, 0, 0, 0, 4)));
    }
}

TEST(StreamUsage, MixedLineEndingsAndCrlfSplitAcrossChunks) {
    // LF, CR and CRLF mixed; a CRLF split across chunks is one line end, not two.
    const std::string body =
        "data: {\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\r\r"
        "data: {\"usage\":null}\r\n\r\n"
        "data: [DONE]\n\r";
    for (std::size_t piece : kPieces) {
        const Scan got = scan(body, Surface::openai, piece);
        EXPECT_EQ(got.state, "found") << got.error;
        EXPECT_EQ(got.usage, describe(make_usage(3, 0, 0, 0, 1)));
    }
    // Two data lines joined by a CRLF split between chunks stay one event:
    // were the LF a second line end, the blank line would dispatch "{" alone.
    UsageScanner scanner(Surface::openai, BodyFormat::sse);
    scanner.feed("data: {\r");
    scanner.feed("\ndata: \"usage\":{\"prompt_tokens\":8}}\r");
    scanner.feed("\n\r");
    scanner.feed("\ndata: [DONE]\r");
    scanner.feed("\n\r");
    scanner.feed("\n");
    scanner.finish();
    EXPECT_EQ(scanner.state(), State::found) << scanner.error();
    EXPECT_EQ(describe(scanner.usage()), describe(make_usage(8, 0, 0, 0, 0)));
}

TEST(StreamUsage, MultiLineDataIsJoinedWithNewlines) {
    // Pretty-printed JSON over several data lines, one with no space after the
    // colon, one a bare "data" (an empty line of data).
    const std::string body =
        "event: message_start\n"
        "data: {\n"
        "data:   \"type\": \"message_start\",\n"
        "data\n"
        "data:   \"message\": {\"usage\": {\"input_tokens\": 7,\n"
        "data:\"output_tokens\": 1}}\n"
        "data: }\n"
        "\n"
        "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":30}}\n\n"
        "data: {\"type\":\n"
        "data: \"message_stop\"}\n\n";
    for (std::size_t piece : kPieces) {
        const Scan got = scan(body, Surface::anthropic, piece);
        EXPECT_EQ(got.state, "found") << got.error;
        EXPECT_EQ(got.usage, describe(make_usage(7, 0, 0, 0, 30)));
    }
    // The newline that joins data lines is a raw newline inside a string: invalid.
    const Scan split_string = scan("data: {\"a\":\"x\ndata: y\"}\n\ndata: [DONE]\n\n", Surface::openai);
    EXPECT_EQ(split_string.state, "malformed");
    EXPECT_EQ(split_string.error, "stream event data is invalid JSON at byte 7: control character inside a string");
}

TEST(StreamUsage, DoneMarker) {
    const std::string usage_event = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":5}}\n\n";
    struct Case {
        std::string tail;
        std::string state;
        std::string error;
    } cases[] = {
        {"data: [DONE]\n\n", "found", ""},
        {"data:[DONE]\n\n", "found", ""},
        {"data: [DONE]\r\n\r\n", "found", ""},
        {"data: [DONE]\n\n: trailing comment\n", "found", ""},
        // An event cut off by the end of the stream is never dispatched, so
        // whatever is wrong with it does not count.
        {"data: [DONE]\n\ndata: {\"unfinished", "found", ""},
        {"data: [DONE]\n\ndata: not json\n", "found", ""},
        {"data: [DONE]\n\ndata: {\"usage\":5}", "found", ""},
        {"data: [DONE]\n\nevent: error\ndata: {\"type\":\"error\"}\n", "found", ""},
        {"data: [DONE]\n\ndata: [DONE]x", "found", ""},
        {"data: [DONE]\n\ndata: {\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":9}}\n", "found", ""},
        {"data: [DONE]\n", "malformed", "stream ended before its final event"},
        {"data: [DONE]", "malformed", "stream ended before its final event"},
        // Anything else that starts like an array is not an event object.
        {"data: [DONE] \n\n", "malformed", "stream event data is not a JSON object"},
        {"data:  [DONE]\n\n", "malformed", "stream event data is not a JSON object"},
        {"data: [DON]\n\n", "malformed", "stream event data is not a JSON object"},
        {"data: [DONE\n\n", "malformed", "stream event data is not a JSON object"},
        {"data: [\n\n", "malformed", "stream event data is not a JSON object"},
        {"data: [DONE]x\n\n", "malformed", "stream event data is not a JSON object"},
        {"data: [DONE]\ndata: [DONE]\n\n", "malformed", "stream event data is not a JSON object"},
        {"data: [done]\n\n", "malformed", "stream event data is not a JSON object"},
        {"data: DONE\n\n", "malformed", "stream event data is invalid JSON at byte 0: unexpected 'D'"},
        {"DATA: [DONE]\n\n", "malformed", "stream ended before its final event"},
        {"data: [1]\n\n", "malformed", "stream event data is not a JSON object"},
    };
    for (const Case &c : cases) {
        for (std::size_t piece : kPieces) {
            const Scan got = scan(usage_event + c.tail, Surface::openai, piece);
            EXPECT_EQ(got.state, c.state) << c.tail << " piece " << piece;
            EXPECT_EQ(got.error, c.error) << c.tail << " piece " << piece;
            // The usage before the broken part is kept.
            EXPECT_EQ(got.usage, describe(make_usage(2, 0, 0, 0, 5))) << c.tail;
        }
    }
}

TEST(StreamUsage, FinalEventTypes) {
    const std::string usage =
        R"("usage":{"input_tokens":40,"input_tokens_details":{"cached_tokens":0},"output_tokens":9,)"
        R"("output_tokens_details":{"reasoning_tokens":0},"total_tokens":49})";
    for (const char *type : {"response.completed", "response.incomplete", "response.failed"}) {
        const std::string body = std::string("event: ") + type + "\ndata: {\"type\":\"" + type +
                                 "\",\"response\":{\"id\":\"resp_1\",\"status\":\"x\"," + usage + "}}\n\n";
        const Scan got = scan(body, Surface::openai, 7);
        EXPECT_EQ(got.state, "found") << type << ": " << got.error;
        EXPECT_EQ(got.usage, describe(make_usage(40, 0, 0, 0, 9))) << type;
    }
    // Not final: other types, a type nested deeper, or the event: line alone.
    for (const char *data : {R"({"type":"response.in_progress"})", R"({"type":"message_delta"})",
                             R"({"message":{"type":"message_stop"}})", R"({"type":["message_stop"]})",
                             R"({"Type":"message_stop"})", R"({"type":"message_stop_"})"}) {
        const Scan got = scan(std::string("event: message_stop\ndata: ") + data + "\n\n", Surface::anthropic);
        EXPECT_EQ(got.state, "malformed") << data;
        EXPECT_EQ(got.error, "stream ended before its final event") << data;
    }
    // The last "type" of the event counts, as in a JSON parser.
    EXPECT_EQ(scan(R"(data: {"type":"ping","type":"message_stop"})"
                   "\n\n",
                   Surface::anthropic)
                  .state,
              "no_usage");
    // Events after the final one are still read.
    const Scan after = scan("data: [DONE]\n\ndata: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\n",
                            Surface::openai);
    EXPECT_EQ(after.state, "found");
    EXPECT_EQ(after.usage, describe(make_usage(1, 0, 0, 0, 1)));
    EXPECT_EQ(scan("data: [DONE]\n\ndata: nope\n\n", Surface::openai).state, "malformed");
}

TEST(StreamUsage, ProviderErrorMidStream) {
    const std::string start = read_stream("anthropic_messages.sse").substr(0, read_stream("anthropic_messages.sse").find("event: content_block_start"));
    const std::string error_event =
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    for (const std::string &tail :
         {error_event,
          // the type alone, or the event name alone, or a non-JSON error body
          std::string("data: {\"type\":\"error\",\"error\":{\"type\":\"api_error\"}}\n\n"),
          std::string("event: error\ndata: {\"message\":\"x\"}\n\n"),
          std::string("event: error\ndata: upstream overloaded\n\n")}) {
        for (std::size_t piece : kPieces) {
            const Scan got = scan(start + tail + "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
                                  Surface::anthropic, piece);
            EXPECT_EQ(got.state, "malformed") << tail;
            EXPECT_EQ(got.error, "the provider reported an error mid-stream") << tail;
            EXPECT_EQ(got.usage, describe(make_usage(2095, 0, 2051, 12000, 1))) << tail;
        }
    }
    // Responses: an error event.
    const Scan responses = scan(
        "event: error\ndata: {\"type\":\"error\",\"code\":\"ERR_SOMETHING\",\"message\":\"Something went wrong\","
        "\"param\":null,\"sequence_number\":1}\n\n",
        Surface::openai);
    EXPECT_EQ(responses.state, "malformed");
    EXPECT_EQ(responses.error, "the provider reported an error mid-stream");
    EXPECT_EQ(responses.usage, "none");
    // An event called "errors" or a type "error_x" is no error.
    EXPECT_EQ(scan("event: errors\ndata: {\"type\":\"error_x\"}\n\ndata: [DONE]\n\n", Surface::openai).state,
              "no_usage");
}

TEST(StreamUsage, OnlyUsageWhereTheApisPutIt) {
    // Decoys: usage in a string, under other keys, deeper under message /
    // response, inside arrays; only the real places count.
    const std::string body =
        "data: {\"text\":\"\\\"usage\\\":{\\\"prompt_tokens\\\":900}\","
        "\"delta\":{\"usage\":{\"prompt_tokens\":901,\"completion_tokens\":1}},"
        "\"message\":{\"content\":[{\"usage\":{\"input_tokens\":902}}],\"inner\":{\"usage\":{\"prompt_tokens\":903}}},"
        "\"response\":[{\"usage\":{\"prompt_tokens\":904}}],"
        "\"choices\":[{\"usage\":{\"prompt_tokens\":905}}],\"Usage\":{\"prompt_tokens\":906}}\n\n"
        "data: {\"response\":{\"output\":[],\"usage\":null},\"usage\":null}\n\n"
        "data: {\"message\":{\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":2}}}\n\n"
        "data: [DONE]\n\n";
    for (std::size_t piece : kPieces) {
        const Scan got = scan(body, Surface::openai, piece);
        EXPECT_EQ(got.state, "found") << got.error;
        EXPECT_EQ(got.usage, describe(make_usage(11, 0, 0, 0, 2)));
    }
}

TEST(StreamUsage, UsagesMergeByLargestCount) {
    // Counts are cumulative: the largest of each bucket wins, whatever the order.
    const std::string body =
        "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":100,"
        "\"cache_read_input_tokens\":50,\"output_tokens\":1}}}\n\n"
        "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":70}}\n\n"
        "data: {\"type\":\"message_delta\",\"usage\":{\"input_tokens\":100,\"cache_creation_input_tokens\":3,"
        "\"cache_read_input_tokens\":50,\"output_tokens\":40}}\n\n"
        "data: {\"type\":\"message_stop\"}\n\n";
    const Scan got = scan(body, Surface::anthropic, 3);
    EXPECT_EQ(got.state, "found") << got.error;
    EXPECT_EQ(got.usage, describe(make_usage(100, 0, 3, 50, 70)));
}

TEST(StreamUsage, MalformedEvents) {
    struct Case {
        std::string body;
        std::string error;
    } cases[] = {
        {"", "stream ended before its final event"},
        {"\n\n\n", "stream ended before its final event"},
        {"data: hello\n\ndata: [DONE]\n\n", "stream event data is invalid JSON at byte 0: unexpected 'h'"},
        {"data: 42\n\ndata: [DONE]\n\n", "stream event data is not a JSON object"},
        {"data: \"usage\"\n\ndata: [DONE]\n\n", "stream event data is not a JSON object"},
        {"data: {\"a\":1}{}\n\ndata: [DONE]\n\n",
         "stream event data is invalid JSON at byte 7: unexpected data after the JSON document"},
        {"data: {\"a\":\n\ndata: [DONE]\n\n", "stream event data ended inside its JSON document"},
        {"data: {\"usage\":{\"prompt_tokens\":-1}}\n\ndata: [DONE]\n\n", "usage object is not in the OpenAI format"},
        {"data: {\"usage\":{}}\n\ndata: [DONE]\n\n", "usage object is not in the OpenAI format"},
        {"data: {\"usage\":\"many\"}\n\ndata: [DONE]\n\n", "usage is not a JSON object"},
        {"data: {\"response\":{\"usage\":[1]}}\n\ndata: [DONE]\n\n", "usage is not a JSON object"},
        {"data: {\"usage\":{\"prompt_tokens\":1,\"pad\":\"" + std::string(9000, 'x') + "\"}}\n\ndata: [DONE]\n\n",
         "usage object larger than 8192 bytes"},
        // A raw NUL is no JSON whitespace (jansson lets one pass after a number).
        {std::string("data: {\"usage\":{\"prompt_tokens\":1\0}}\n\ndata: [DONE]\n\n", 52),
         "stream event data is invalid JSON at byte 27: unexpected byte 0x00"},
        {"<html>502 Bad Gateway</html>", "stream ended before its final event"},
        {"<html>502 Bad Gateway</html>\n\n", "stream ended before its final event"},
    };
    for (const Case &c : cases) {
        for (std::size_t piece : kPieces) {
            const Scan got = scan(c.body, Surface::openai, piece);
            EXPECT_EQ(got.state, "malformed") << c.body.substr(0, 80);
            EXPECT_EQ(got.error, c.error) << c.body.substr(0, 80) << " piece " << piece;
        }
    }
    const Scan anthropic = scan("data: {\"type\":\"message_delta\",\"usage\":{\"cache_read_input_tokens\":3}}\n\n"
                                "data: {\"type\":\"message_stop\"}\n\n",
                                Surface::anthropic);
    EXPECT_EQ(anthropic.error, "usage object is not in the Anthropic format");
}

TEST(StreamUsage, JsonErrorWinsOverAnOversizedUsageInAnyPieces) {
    // Found by fuzzing: whether the capture limit is noticed before a JSON
    // error further on depended on where the chunks ended.
    const std::string data = "{\"usage\":{\"prompt_tokens\":1,\"pad\":\"" + std::string(9000, 'x') + "\x01\"}}";
    const std::string expected = "stream event data is invalid JSON at byte " + std::to_string(data.find('\x01')) +
                                 ": control character inside a string";
    for (std::size_t piece : {std::size_t(0), std::size_t(1), std::size_t(17), std::size_t(4096), std::size_t(8200)}) {
        const Scan got = scan("data: " + data + "\n\ndata: [DONE]\n\n", Surface::openai, piece);
        EXPECT_EQ(got.state, "malformed");
        EXPECT_EQ(got.error, expected) << "piece " << piece;
    }
}

TEST(StreamUsage, WhitespaceOnlyDataAndEmptyEventsAreSkipped) {
    const Scan got = scan("data:\n\ndata: \ndata:  \n\nevent: x\n\nid: 3\n\n"
                          "data: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n",
                          Surface::openai, 1);
    EXPECT_EQ(got.state, "found") << got.error;
    EXPECT_EQ(got.usage, describe(make_usage(1, 0, 0, 0, 2)));
}

TEST(StreamUsage, ByteOrderMarkAtTheStart) {
    const std::string bom = "\xef\xbb\xbf";
    const std::string body = "data: {\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n";
    for (std::size_t piece : kPieces) {
        const Scan got = scan(bom + body, Surface::openai, piece);
        EXPECT_EQ(got.state, "found") << got.error;
        EXPECT_EQ(got.usage, describe(make_usage(4, 0, 0, 0, 1)));
    }
    // Only one, only at the start: a second BOM makes the first field's name
    // unknown, so its usage line is ignored (and [DONE] still completes).
    for (const std::string &start : {bom + bom, std::string("\xef\xbb"), std::string("\xef")}) {
        for (std::size_t piece : kPieces) {
            const Scan got = scan(start + body, Surface::openai, piece);
            EXPECT_EQ(got.state, "no_usage") << got.error;
            EXPECT_EQ(got.usage, "none");
        }
    }
}

TEST(StreamUsage, UsageIsLiveWhileReadingAndFeedAfterFinishIsIgnored) {
    UsageScanner scanner(Surface::anthropic, BodyFormat::sse);
    scanner.feed("data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":9,");
    EXPECT_FALSE(scanner.usage().has_value());
    scanner.feed("\"output_tokens\":1}}}\n");
    // Only a dispatched event counts (one cut off by the end of the stream never does).
    EXPECT_FALSE(scanner.usage().has_value());
    scanner.feed("\n");
    ASSERT_TRUE(scanner.usage().has_value());
    EXPECT_EQ(describe(scanner.usage()), describe(make_usage(9, 0, 0, 0, 1)));
    EXPECT_EQ(scanner.state(), State::reading);
    scanner.feed("data: {\"type\":\"message_stop\"}\n\n");
    scanner.finish();
    EXPECT_EQ(scanner.state(), State::found);
    scanner.feed("data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":99}}\n\n");
    scanner.finish();
    EXPECT_EQ(describe(scanner.usage()), describe(make_usage(9, 0, 0, 0, 1)));
}

// ---------------------------------------------------------------------------
// Plain JSON bodies keep their behaviour through the new constructor

TEST(StreamUsage, JsonFormatIsUnchanged) {
    const Scan embeddings = scan(
        R"({"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.0023064255,-0.009327292]}],)"
        R"("model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}})",
        Surface::openai, 3, ContentEncoding::identity, BodyFormat::json);
    EXPECT_EQ(embeddings.state, "found") << embeddings.error;
    EXPECT_EQ(embeddings.usage, describe(make_usage(8, 0, 0, 0, 0)));
    // An SSE body declared as JSON is not JSON.
    const Scan sse_as_json = scan(read_stream("openai_chat.sse"), Surface::openai, 0, ContentEncoding::identity,
                                  BodyFormat::json);
    EXPECT_EQ(sse_as_json.state, "malformed");
    EXPECT_EQ(sse_as_json.error, "response body is invalid JSON at byte 0: unexpected 'd'");
    EXPECT_EQ(sse_as_json.usage, "none");
    // Under "message" / "response" only counts in streams.
    const Scan nested = scan(R"({"response":{"usage":{"prompt_tokens":1}}})", Surface::openai, 0,
                             ContentEncoding::identity, BodyFormat::json);
    EXPECT_EQ(nested.state, "no_usage");
}

// ---------------------------------------------------------------------------
// Tens of megabytes, bounded memory

namespace {

// Feeds what `produce` writes, 64 KiB at a time, checking the memory bound
// after every chunk.
struct BigFeed {
    UsageScanner scanner;
    std::size_t bound;
    std::size_t fed = 0;
    std::size_t peak = 0;
    std::string pending;

    BigFeed(Surface surface, BodyFormat format, ContentEncoding encoding, std::size_t bound)
        : scanner(surface, format, encoding), bound(bound) {}

    void push(std::string_view bytes) {
        pending.append(bytes.data(), bytes.size());
        while (pending.size() >= 65536) flush(65536);
    }
    void flush(std::size_t n) {
        scanner.feed(std::string_view(pending).substr(0, n));
        fed += n;
        peak = std::max(peak, scanner.memory_held());
        ASSERT_LE(scanner.memory_held(), bound) << "after " << fed << " bytes";
        pending.erase(0, n);
    }
    void end() {
        if (!pending.empty()) flush(pending.size());
        scanner.finish();
        peak = std::max(peak, scanner.memory_held());
    }
};

// A 40 MB body, written piece by piece.
void long_chat_stream(const std::function<void(std::string_view)> &out) {
    const std::string chunk =
        R"(data: {"id":"chatcmpl-x","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini",)"
        R"("choices":[{"index":0,"delta":{"content":"lorem ipsum \"usage\":{} dolor \u00e9 sit amet, )"
        R"(consectetur adipiscing elit"},"logprobs":null,"finish_reason":null}],"usage":null})"
        "\r\n\r\n: keep-alive\r\n\r\n";
    std::size_t written = 0;
    while (written < (40u << 20)) {
        out(chunk);
        written += chunk.size();
    }
    out("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":120000,\"completion_tokens\":400000,"
        "\"prompt_tokens_details\":{\"cached_tokens\":100000}}}\r\n\r\ndata: [DONE]\r\n\r\n");
}

// A Responses stream whose response.completed event holds 40 MB of output.
void huge_responses_completed(const std::function<void(std::string_view)> &out) {
    out("event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\","
        "\"status\":\"in_progress\",\"output\":[],\"usage\":null}}\n\n");
    out("event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":9,"
        "\"response\":{\"id\":\"resp_1\",\"status\":\"completed\",\"output\":[");
    const std::string item =
        R"({"id":"msg_1","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text",)"
        R"("text":"a long answer with \"usage\":{\"input_tokens\":1} inside \n and escapes \\ \/ \t",)"
        R"("annotations":[],"usage":{"input_tokens":999999}}]})";
    std::size_t written = 0;
    bool first = true;
    while (written < (40u << 20)) {
        if (!first) out(",");
        first = false;
        out(item);
        written += item.size() + 1;
    }
    out("],\"usage\":{\"input_tokens\":5000,\"input_tokens_details\":{\"cached_tokens\":1000},"
        "\"output_tokens\":300000,\"output_tokens_details\":{\"reasoning_tokens\":1000},\"total_tokens\":305000}}}\n\n");
}

}  // namespace

TEST(StreamUsageMemory, FortyMegabyteStreamsStayBounded) {
    struct Case {
        const char *name;
        std::function<void(const std::function<void(std::string_view)> &)> produce;
        Usage expected;
    } cases[] = {
        {"long chat stream", long_chat_stream, make_usage(20000, 100000, 0, 0, 400000)},
        {"huge response.completed", huge_responses_completed, make_usage(4000, 1000, 0, 0, 300000)},
    };
    for (const Case &c : cases) {
        BigFeed feed(Surface::openai, BodyFormat::sse, ContentEncoding::identity, UsageScanner::kMaxMemoryIdentity);
        c.produce([&](std::string_view bytes) { feed.push(bytes); });
        feed.end();
        EXPECT_GT(feed.fed, 40u << 20) << c.name;
        EXPECT_EQ(feed.scanner.state(), State::found) << c.name << ": " << feed.scanner.error();
        EXPECT_EQ(describe(feed.scanner.usage()), describe(c.expected)) << c.name;
        EXPECT_LE(feed.peak, UsageScanner::kMaxMemoryIdentity) << c.name;
        std::printf("[ memory   ] %s: %zu bytes fed, peak %zu bytes held\n", c.name, feed.fed, feed.peak);
    }
}
