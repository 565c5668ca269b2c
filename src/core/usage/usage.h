// The response side: token usage read from an upstream answer, and its cost.
// Implemented in usage.cpp (values, cost), parse.cpp (a usage object),
// headers.cpp, and scanner.cpp / sse.cpp / inflate.cpp (UsageScanner).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "base/money.h"
#include "policy/policy.h"
#include "request/request.h"

namespace spendcap {

// Tokens by how they are billed. For OpenAI, prompt_tokens includes cached
// tokens: `input` here holds prompt - cached. Reasoning tokens are part of output.
struct Usage {
    std::int64_t input = 0;         // billed at `input`
    std::int64_t cached_input = 0;  // billed at `cached_input` (else `input`)
    std::int64_t cache_write = 0;   // billed at `cache_write` (else `input`): 5-minute cache writes
    std::int64_t cache_read = 0;    // billed at `cache_read` (else `input`)
    std::int64_t output = 0;        // billed at `output`
    std::int64_t cache_write_1h = 0;  // billed at `cache_write_1h`: one-hour cache writes (Anthropic)

    std::int64_t input_total() const;  // every input kind, saturating
    std::int64_t total() const;        // input_total() + output, saturating
};

// No request of any model has come near this many tokens of one kind (the
// largest context windows hold a few million): a usage above it is an
// upstream's bug or a forgery, and is not taken at face value.
constexpr std::int64_t kMaxPlausibleTokens = 100'000'000;

// Every count within [0, kMaxPlausibleTokens].
bool plausible(const Usage &u);

// Parses one `usage` JSON object (the object's own text) of the given surface:
// OpenAI Chat Completions / Completions / Embeddings (prompt_tokens,
// completion_tokens, prompt_tokens_details.cached_tokens), OpenAI Responses
// (input_tokens, output_tokens, input_tokens_details.cached_tokens), Anthropic
// Messages (input_tokens, output_tokens, cache_creation_input_tokens of which
// cache_creation.ephemeral_1h_input_tokens are one-hour writes,
// cache_read_input_tokens). nullopt if it is not such an object.
std::optional<Usage> parse_usage_object(std::string_view json, Surface surface);
// The same with jansson alone (for the fuzzer and the tests that hold the
// one-pass reader to jansson's answers).
std::optional<Usage> parse_usage_object_with_jansson(std::string_view json, Surface surface);

Nanos usage_cost(const Usage &u, const ModelPrice &price);

enum class BodyFormat {
    json,  // one JSON document
    sse,   // text/event-stream: one JSON document per event's data
};

// text/event-stream (any case, parameters allowed) -> sse, anything else -> json.
BodyFormat body_format_for(std::string_view content_type);

enum class ContentEncoding { identity, gzip, deflate };

// Content-Encoding of a response: "" / "identity" -> identity, "gzip" /
// "x-gzip" -> gzip, "deflate" -> deflate (zlib-wrapped, or raw as some servers
// send it); nullopt for anything else (br, zstd, a list of codings): unreadable.
std::optional<ContentEncoding> content_encoding_for(std::string_view header_value);

// Reads a response body as it streams past, chunk by chunk split at any byte,
// inflating it first if it is compressed, and keeps only the usage objects.
// Memory stays under kMaxCapture bytes plus a small constant (plus zlib's
// fixed state for compressed bodies) whatever the body's length.
//
// json: the top-level "usage" object.
// sse: every event's data is one JSON document; usage objects at the top
// level (OpenAI Chat Completions / Completions final chunk, Anthropic
// message_delta) or under "message" / "response" (Anthropic message_start,
// Responses response.completed) are merged field by field when their event
// is dispatched, the largest count winning (stream counts are cumulative). The stream is complete when its
// final event was seen: `data: [DONE]` (OpenAI Chat Completions and
// Completions), an event of type message_stop (Anthropic), or
// response.completed / response.incomplete / response.failed (Responses).
// Events follow the WHATWG event-stream rules (LF / CRLF / CR line ends,
// comments, multi-line data joined with "\n", dispatch at a blank line, so an
// event cut off at the end never counts); events without data or with
// whitespace-only data are skipped. Malformed: event data that is not a JSON
// object (other than [DONE]), an `event: error` or "type": "error" event (the
// provider failed mid-stream), or a stream that ends before its final event;
// usage() then keeps what was merged so far.
class UsageScanner {
public:
    static constexpr std::size_t kMaxCapture = 8192;

    explicit UsageScanner(Surface surface, BodyFormat format = BodyFormat::json,
                          ContentEncoding encoding = ContentEncoding::identity);
    void feed(std::string_view chunk);
    // Call once at the end of the body.
    void finish();

    enum class State {
        reading,    // before finish()
        found,      // a complete body or stream with a parseable usage
        no_usage,   // complete, without a usage object
        malformed,  // not JSON, truncated, corrupt compression, or a usage that
                    // does not parse / is too large
    };
    State state() const;
    // The usage seen: complete when state() is found; when malformed, what was
    // seen before the body went wrong (possibly partial), so that settlement
    // never goes below it.
    const std::optional<Usage> &usage() const;
    // Why the state is malformed, for one warn log line.
    const std::string &error() const;

    // The heap memory this scanner holds now, for tests and accounting: its
    // state (< 1 KiB, fixed-size SSE field buffers included), the usage
    // capture buffer (kMaxCapture + 1 bytes, reserved once when a usage object
    // starts), the tokenizer's key / error text, and for compressed bodies
    // zlib's inflate state (~7 KiB) and 32 KiB window. Whatever the body's
    // length, it never exceeds kMaxMemoryIdentity (10 KiB) for an identity
    // body and kMaxMemory (52 KiB) for a gzip / deflate one (measured peaks:
    // 8.7 KiB and 47.7 KiB). feed() also uses a 16 KiB stack buffer while
    // inflating, released when it returns.
    std::size_t memory_held() const;
    // An SSE event whose data is one line, all in one chunk, is read in one
    // pass (json/event.h) unless this is off: for tests that compare it
    // with the byte-by-byte reader.
    void read_whole_events(bool on);
    static constexpr std::size_t kMaxMemoryIdentity = 10 * 1024;
    static constexpr std::size_t kMaxMemory = 52 * 1024;

private:
    struct Impl;
    std::shared_ptr<Impl> impl_;
};

}  // namespace spendcap
