// The one-pass request reader (request_scan.h) against jansson: on every
// body, the fast path either steps aside or gives jansson's answer.
#include "request/scan.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

using namespace spendcap;

namespace {

void expect_same(const RequestParse &a, const RequestParse &b, const std::string &body) {
    EXPECT_EQ(a.ok, b.ok) << body;
    EXPECT_EQ(a.error, b.error) << body;
    EXPECT_EQ(a.info.model, b.info.model) << body;
    EXPECT_EQ(a.info.max_output_tokens, b.info.max_output_tokens) << body;
    EXPECT_EQ(a.info.stream, b.info.stream) << body;
    EXPECT_EQ(a.info.include_usage, b.info.include_usage) << body;
    EXPECT_EQ(a.info.choices, b.info.choices) << body;
}

// What the fast path says of `body`: the jansson answer if it answers at all.
bool scanned(const std::string &body) {
    const std::optional<RequestInfo> fast = scan_request_body(body);
    const RequestParse slow = parse_request_body_with_jansson(body);
    if (fast) {
        EXPECT_TRUE(slow.ok) << body << ": the fast path accepted what jansson refuses: " << slow.error;
        RequestParse as_parse;
        as_parse.ok = true;
        as_parse.info = *fast;
        expect_same(as_parse, slow, body);
    }
    expect_same(parse_request_body(body), slow, body);
    return fast.has_value();
}

}  // namespace

TEST(RequestScan, PlainRequestsTakeTheFastPathWithJanssonsFields) {
    for (const std::string body : {
             R"({"model":"gpt-4o-mini","max_tokens":16,"messages":[{"role":"user","content":"Say hello."}]})",
             R"({"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[]})",
             R"({"model":"m","max_tokens":5,"max_completion_tokens":9,"max_output_tokens":7,"n":3,"best_of":4})",
             R"( {"model" : "m" , "temperature": 0.7, "top_p": 1e-2, "stop": null, "tools": [[], {}, [1, -0, 2.5E+3]]} )",
             R"({"model":"m","max_tokens":null,"n":null,"stream":null,"stream_options":null})",
             R"({"model":"m","max_tokens":5,"max_tokens":null})",        // the last duplicate wins
             R"({"model":"a","model":"b","stream":true,"stream":false})",
             R"({"model":"m","stream_options":{"include_usage":true},"stream_options":{}})",
             R"({"model":"m","stream_options":{"include_usage":true,"x":{"include_usage":false}}})",
             R"({"model":"m","messages":[{"content":"caf\u00e9 \ud83d\ude00 \"quoted\" \\ \/ \b\f\n\r\t \u0000"}]})",
             "{\"model\":\"m\",\"messages\":[{\"content\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \x7f\"}]}",
             R"({"model":"m","max_tokens":999999999999999999})",
             R"({"model":"m","x":{"\u006dodel":"nested keys with escapes are fine"}})",
             R"({"model":"m","x":-123456789012345678,"y":-1.5e99})",
         }) {
        EXPECT_TRUE(scanned(body)) << body;
    }
}

TEST(RequestScan, AnythingUnsureOrRefusedGoesToJansson) {
    const std::vector<std::string> bodies = {
        "", " ", "[]", "\"m\"", "1", "null", "{", "}", "{}", R"({"model":"m")", R"({"model":"m"} x)",
        R"({"model":"m",})", R"({"model":"m",,"n":1})", R"({"model" "m"})", R"({model:"m"})", R"({'model':'m'})",
        R"({"model":""})", R"({"model":null})", R"({"model":5})", R"({"model":"a\"b"})",  // escaped model: jansson
        R"({"\u006dodel":"m"})",                                                          // an escaped root key
        R"({"model":"m","max_tokens":-1})", R"({"model":"m","max_tokens":1.0})", R"({"model":"m","max_tokens":"5"})",
        R"({"model":"m","max_tokens":9223372036854775807})",   // 19 digits: jansson decides
        R"({"model":"m","max_tokens":99999999999999999999})",  // too big for jansson
        R"({"model":"m","x":1e400})", R"({"model":"m","x":1e100})", R"({"model":"m","x":01})", R"({"model":"m","x":1.})",
        R"({"model":"m","x":.5})", R"({"model":"m","x":-})", R"({"model":"m","x":1e})", R"({"model":"m","x":+1})",
        R"({"model":"m","n":0})", R"({"model":"m","best_of":-2})", R"({"model":"m","stream":1})",
        R"({"model":"m","stream":"true"})", R"({"model":"m","stream_options":true})",
        R"({"model":"m","stream_options":{"include_usage":1}})", R"({"model":"m","stream_options":{"\u0069nclude_usage":true}})",
        R"({"model":"m","x":tru})", R"({"model":"m","x":truex})", R"({"model":"m","x":nul})", R"({"model":"m","x":True})",
        R"({"model":"m","x":"\ud800"})", R"({"model":"m","x":"\udc00"})", R"({"model":"m","x":"\ud800\u0041"})",
        R"({"model":"m","x":"\x"})", R"({"model":"m","x":"\u12"})", R"({"model":"m","x":"\u12g4"})",
        R"({"model":"m","x":{"\u0000":1}})",  // NUL in a key: jansson refuses
        std::string("{\"model\":\"m\",\"x\":\"a\x01\"}"), std::string("{\"model\":\"m\",\"x\":\"a\0b\"}", 20),
        std::string("{\"model\":\"m\"}\0", 14),
        "{\"model\":\"m\",\"x\":\"\xc0\xaf\"}",      // overlong
        "{\"model\":\"m\",\"x\":\"\xed\xa0\x80\"}",  // a surrogate in UTF-8
        "{\"model\":\"m\",\"x\":\"\xf4\x90\x80\x80\"}",  // past U+10FFFF
        "{\"model\":\"m\",\"x\":\"\xe2\x82\"}",      // truncated
        "{\"model\":\"m\",\"x\":\"\x80\"}",          // a lone continuation byte
        "\xef\xbb\xbf{\"model\":\"m\"}",             // a BOM
        std::string(600, '[') + std::string(600, ']'),
        "{\"model\":\"m\",\"x\":" + std::string(600, '[') + std::string(600, ']') + "}",  // deeper than 512
    };
    for (const std::string &body : bodies) EXPECT_FALSE(scanned(body)) << body;
}

TEST(RequestScan, NestingUpTo512IsRead) {
    const std::string body = "{\"model\":\"m\",\"x\":" + std::string(510, '[') + std::string(510, ']') + "}";
    EXPECT_TRUE(scanned(body));
}
