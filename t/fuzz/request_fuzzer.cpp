// libFuzzer target: parse_request_body and with_stream_usage on any body.
//
// Invariants checked (a violation aborts):
// - parse_request_body (its one-pass reader, request_scan.h) gives jansson's
//   answer, and the reader accepts only bodies jansson accepts;
// - an edited body parses (jansson), has stream: true and
//   stream_options.include_usage: true, and every other member of the root
//   and of stream_options is unchanged;
// - the edit is small (the bytes outside it are the original's) and needs no
//   second edit;
// - a body parse_request_body accepted is still accepted, asking for usage;
// - when jansson reads a streaming request without include_usage: true, an
//   edit is made (unless the body nests deeper than the tokenizer reads);
// - reach_of reads any accepted body; for one without an output bound that it
//   does not refuse (no duplicated bound), with_output_bound gives a body that
//   parses to the same model with exactly that bound, whichever field names it.
#include <jansson.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "json/tokenizer.h"
#include "request/request.h"
#include "request/reach.h"
#include "request/scan.h"

using namespace spendcap;

namespace {

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            std::fprintf(stderr, "request_fuzzer: check failed: %s (line %d)\n", #cond, \
                         __LINE__);                                                    \
            std::abort();                                                              \
        }                                                                              \
    } while (0)

struct JsonDeleter {
    void operator()(json_t *value) const { json_decref(value); }
};
using JsonPtr = std::unique_ptr<json_t, JsonDeleter>;

JsonPtr load(std::string_view text) {
    json_error_t error;
    return JsonPtr(json_loadb(text.data(), text.size(), JSON_ALLOW_NUL, &error));
}

bool wants_edit(json_t *root) {
    if (!json_is_object(root) || !json_is_true(json_object_get(root, "stream"))) return false;
    json_t *options = json_object_get(root, "stream_options");
    return !(json_is_object(options) && json_is_true(json_object_get(options, "include_usage")));
}

bool tokenizer_reads(std::string_view body) {
    JsonTokenizer t;
    std::size_t pos = 0;
    JsonTokenizer::Token token;
    while ((token = t.next(body, pos)) != JsonTokenizer::Token::need_more)
        if (token == JsonTokenizer::Token::error) return false;
    t.finish();
    return t.complete();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    const std::string_view body(reinterpret_cast<const char *>(data), size);
    const RequestParse parsed = parse_request_body(body);
    // The one-pass reader answers only where jansson answers the same.
    const RequestParse judged = parse_request_body_with_jansson(body);
    CHECK(parsed.ok == judged.ok && parsed.error == judged.error && parsed.info.model == judged.info.model
          && parsed.info.max_output_tokens == judged.info.max_output_tokens
          && parsed.info.stream == judged.info.stream && parsed.info.include_usage == judged.info.include_usage
          && parsed.info.choices == judged.info.choices);
    if (scan_request_body(body)) CHECK(judged.ok);
    if (parsed.ok) {
        const RequestReach reach = reach_of(body);
        if (reach.refusal.empty() && !parsed.info.max_output_tokens) {
            for (std::string_view field : {"max_tokens", "max_completion_tokens", "max_output_tokens"}) {
                const std::optional<std::string> bounded = with_output_bound(body, field, 4242);
                if (!bounded) {
                    CHECK(!tokenizer_reads(body));
                    continue;
                }
                const RequestParse again = parse_request_body(*bounded);
                CHECK(again.ok && again.info.model == parsed.info.model);
                CHECK(again.info.max_output_tokens == std::optional<std::int64_t>(4242));
                CHECK(reach_of(*bounded).refusal.empty());
            }
        }
    }
    const std::optional<std::string> edited = with_stream_usage(body);
    JsonPtr before = load(body);

    if (!edited) {
        if (before && wants_edit(before.get())) CHECK(!tokenizer_reads(body));
        return 0;
    }
    CHECK(before && wants_edit(before.get()));

    JsonPtr after = load(*edited);
    CHECK(after && json_is_object(after.get()));
    CHECK(json_is_true(json_object_get(after.get(), "stream")));
    json_t *options = json_object_get(after.get(), "stream_options");
    CHECK(json_is_object(options));
    CHECK(json_is_true(json_object_get(options, "include_usage")));

    // stream_options: the original's members (if it was an object) plus include_usage.
    json_t *old_options = json_object_get(before.get(), "stream_options");
    JsonPtr expected(json_is_object(old_options) ? json_deep_copy(old_options) : json_object());
    CHECK(expected);
    json_object_set_new(expected.get(), "include_usage", json_true());
    CHECK(json_equal(options, expected.get()));
    // Every other member unchanged.
    json_object_del(before.get(), "stream_options");
    json_object_del(after.get(), "stream_options");
    CHECK(json_equal(before.get(), after.get()));

    // A small edit: outside it, the bytes are the original's.
    std::size_t prefix = 0;
    while (prefix < body.size() && prefix < edited->size() && body[prefix] == (*edited)[prefix]) ++prefix;
    std::size_t suffix = 0;
    while (suffix < body.size() - prefix && suffix < edited->size() - prefix &&
           body[body.size() - 1 - suffix] == (*edited)[edited->size() - 1 - suffix])
        ++suffix;
    CHECK(edited->size() - prefix - suffix <= std::string_view(R"("stream_options":{"include_usage":true},)").size());

    CHECK(!with_stream_usage(*edited).has_value());
    if (parsed.ok) {
        const RequestParse again = parse_request_body(*edited);
        CHECK(again.ok);
        CHECK(again.info.stream && again.info.include_usage);
        CHECK(again.info.model == parsed.info.model);
        CHECK(again.info.max_output_tokens == parsed.info.max_output_tokens);
    }
    return 0;
}
