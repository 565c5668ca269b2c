// libFuzzer target: UsageScanner on any body, any format, any encoding, any
// chunking. Input: byte 0 picks surface / format / encoding, byte 1 the
// chunking, the rest is the body.
//
// Invariants checked (a violation aborts, which libFuzzer reports as a crash):
// - parse_usage_object (its one-pass reader) answers as jansson does;
// - the same result (state, usage, error) fed whole and fed in chunks, and
//   with SSE events read whole (json_event.h) or byte by byte;
// - a body compressed here (gzip, zlib or raw deflate) reads exactly like the
//   plain body;
// - usage counts are never negative; json: usage iff found; sse: found has a
//   usage, no_usage has none, and the usage only grows while reading;
// - memory_held() stays under the documented bound after every chunk;
// - the same state and usage as a simple, whole-body reference reader built on
//   jansson (WHATWG line splitting, then each event's data parsed whole), for
//   bodies where the two are meant to agree (jansson reads every document,
//   no duplicate keys in events, usage objects under the capture limit, no
//   nesting beyond the tokenizer's depth).
#include <jansson.h>
#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "usage/usage.h"

using namespace spendcap;

namespace {

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            std::fprintf(stderr, "usage_fuzzer: check failed: %s (line %d)\n", #cond, \
                         __LINE__);                                                  \
            std::abort();                                                            \
        }                                                                            \
    } while (0)

enum class Mode : std::uint8_t {
    identity,
    gzip_compressed,     // the body, gzip-compressed here
    zlib_compressed,     // the body, zlib-wrapped deflate
    raw_compressed,      // the body, raw deflate
    gzip_as_is,          // the body's bytes declared gzip (corrupt / crafted streams)
    deflate_as_is,       // the body's bytes declared deflate
};

std::string compress(std::string_view plain, int window_bits, int level) {
    z_stream z{};
    if (deflateInit2(&z, level, Z_DEFLATED, window_bits, 8, Z_DEFAULT_STRATEGY) != Z_OK) std::abort();
    std::string out;
    z.next_in = reinterpret_cast<Bytef *>(const_cast<char *>(plain.data()));
    z.avail_in = static_cast<uInt>(plain.size());
    unsigned char buffer[4096];
    int rc;
    do {
        z.next_out = buffer;
        z.avail_out = sizeof buffer;
        rc = deflate(&z, Z_FINISH);
        CHECK(rc != Z_STREAM_ERROR);
        out.append(reinterpret_cast<char *>(buffer), sizeof buffer - z.avail_out);
    } while (rc != Z_STREAM_END);
    deflateEnd(&z);
    return out;
}

struct Result {
    UsageScanner::State state;
    std::optional<Usage> usage;
    std::string error;
};

bool same_usage(const std::optional<Usage> &a, const std::optional<Usage> &b) {
    if (a.has_value() != b.has_value()) return false;
    if (!a) return true;
    return a->input == b->input && a->cached_input == b->cached_input && a->cache_write == b->cache_write &&
           a->cache_read == b->cache_read && a->output == b->output;
}

bool same(const Result &a, const Result &b) {
    return a.state == b.state && same_usage(a.usage, b.usage) && a.error == b.error;
}

bool at_most(const std::optional<Usage> &a, const std::optional<Usage> &b) {
    if (!a) return true;
    if (!b) return false;
    return a->input <= b->input && a->cached_input <= b->cached_input && a->cache_write <= b->cache_write &&
           a->cache_read <= b->cache_read && a->output <= b->output;
}

void check_result(const Result &r, BodyFormat format) {
    CHECK(r.state != UsageScanner::State::reading);
    if (r.usage) {
        CHECK(r.usage->input >= 0 && r.usage->cached_input >= 0 && r.usage->cache_write >= 0 &&
              r.usage->cache_read >= 0 && r.usage->output >= 0);
    }
    if (format == BodyFormat::json) CHECK(r.usage.has_value() == (r.state == UsageScanner::State::found));
    if (r.state == UsageScanner::State::found) CHECK(r.usage.has_value());
    if (r.state == UsageScanner::State::no_usage) CHECK(!r.usage.has_value());
    CHECK((r.state == UsageScanner::State::malformed) == !r.error.empty());
}

// Feeds `body` in chunks whose sizes come from `seed` (0: whole).
Result run(std::string_view body, Surface surface, BodyFormat format, ContentEncoding encoding,
           std::uint8_t seed, bool whole_events = true) {
    UsageScanner scanner(surface, format, encoding);
    scanner.read_whole_events(whole_events);
    const std::size_t bound = encoding == ContentEncoding::identity ? UsageScanner::kMaxMemoryIdentity
                                                                    : UsageScanner::kMaxMemory;
    std::uint32_t state = 0x9e3779b9u ^ seed;
    std::size_t at = 0;
    std::optional<Usage> previous;
    while (at < body.size()) {
        std::size_t n = body.size() - at;
        if (seed != 0) {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            const std::size_t most = 1 + seed % 61;
            n = std::min<std::size_t>(n, 1 + state % most);
        }
        scanner.feed(body.substr(at, n));
        at += n;
        CHECK(scanner.memory_held() <= bound);
        CHECK(scanner.state() == UsageScanner::State::reading);
        if (format == BodyFormat::sse) {
            CHECK(at_most(previous, scanner.usage()));  // stream usage only grows
            previous = scanner.usage();
        }
    }
    scanner.finish();
    CHECK(scanner.memory_held() <= bound);
    if (format == BodyFormat::sse) CHECK(at_most(previous, scanner.usage()));
    return {scanner.state(), scanner.usage(), scanner.error()};
}


// ---------------------------------------------------------------------------
// The reference reader: whole body in memory, jansson for the JSON.

struct JsonDeleter {
    void operator()(json_t *value) const { json_decref(value); }
};
using JsonPtr = std::unique_ptr<json_t, JsonDeleter>;

struct Reference {
    bool decided = false;  // false: the body is outside what the reference judges
    UsageScanner::State state = UsageScanner::State::malformed;
    std::optional<Usage> usage;
};

// Outside what the reference judges: nesting the tokenizer refuses, usage
// objects that may pass the capture limit, and raw NUL bytes (jansson takes
// one after a number as the end of it; JSON does not allow it there).
bool too_deep_or_large(std::string_view text) {
    std::size_t brackets = 0;
    for (char c : text) {
        brackets += c == '{' || c == '[';
        if (c == '\0') return true;
    }
    return brackets >= 1000 || text.size() > 8000;
}

bool string_is(json_t *value, const char *name) {
    return json_is_string(value) && json_string_length(value) == std::strlen(name) &&
           std::memcmp(json_string_value(value), name, std::strlen(name)) == 0;
}

// One usage value: nullopt + ok for null; false when it makes the body malformed.
bool read_usage(json_t *value, Surface surface, std::optional<Usage> &out) {
    out.reset();
    if (!value || json_is_null(value)) return true;
    if (!json_is_object(value)) return false;
    char *text = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text) std::abort();
    out = parse_usage_object(text, surface);
    std::free(text);
    return out.has_value();
}

void merge(std::optional<Usage> &into, const Usage &u) {
    if (!into) into = Usage{};
    into->input = std::max(into->input, u.input);
    into->cached_input = std::max(into->cached_input, u.cached_input);
    into->cache_write = std::max(into->cache_write, u.cache_write);
    into->cache_read = std::max(into->cache_read, u.cache_read);
    into->output = std::max(into->output, u.output);
}

Reference reference_json(std::string_view body, Surface surface) {
    Reference r;
    if (too_deep_or_large(body)) return r;
    json_error_t error;
    JsonPtr root(json_loadb(body.data(), body.size(), JSON_DECODE_ANY | JSON_ALLOW_NUL, &error));
    if (!root) return r;  // jansson also checks UTF-8 and number ranges
    r.decided = true;
    if (!json_is_object(root.get())) return r;
    json_t *usage = json_object_get(root.get(), "usage");
    if (!usage || json_is_null(usage)) {
        r.state = UsageScanner::State::no_usage;
        return r;
    }
    std::optional<Usage> u;
    if (!read_usage(usage, surface, u)) return r;
    r.state = UsageScanner::State::found;
    r.usage = u;
    return r;
}

Reference reference_sse(std::string_view body, Surface surface) {
    Reference r;
    if (body.substr(0, 3) == "\xef\xbb\xbf") body.remove_prefix(3);
    // Lines (LF, CRLF, CR); the last one, unterminated, is dropped.
    std::vector<std::string_view> lines;
    std::size_t start = 0;
    for (std::size_t i = 0; i < body.size(); ++i) {
        if (body[i] != '\r' && body[i] != '\n') continue;
        lines.push_back(body.substr(start, i - start));
        if (body[i] == '\r' && i + 1 < body.size() && body[i + 1] == '\n') ++i;
        start = i + 1;
    }
    // A body ending in CR might still be followed by a LF: the same either way.
    std::string data, event;
    bool has_data = false, complete = false;
    std::optional<Usage> merged;
    auto malformed = [&]() {
        r.decided = true;
        r.state = UsageScanner::State::malformed;
        r.usage = merged;
        return r;
    };
    for (std::string_view line : lines) {
        if (!line.empty()) {
            if (line[0] == ':') continue;
            const std::size_t colon = line.find(':');
            std::string_view name = line.substr(0, colon), value;
            if (colon != std::string_view::npos) {
                value = line.substr(colon + 1);
                if (!value.empty() && value[0] == ' ') value.remove_prefix(1);
            }
            if (name == "data") {
                if (has_data) data += '\n';
                data.append(value.data(), value.size());
                has_data = true;
            } else if (name == "event") {
                event.assign(value.data(), value.size());
            }
            continue;
        }
        // Dispatch.
        if (!has_data) {
            event.clear();
            continue;
        }
        if (event == "error") return malformed();
        if (data == "[DONE]") {
            complete = true;
        } else if (data.find_first_not_of(" \t\n\r") != std::string::npos) {
            if (too_deep_or_large(data)) return r;
            json_error_t error;
            JsonPtr root(json_loadb(data.data(), data.size(),
                                    JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES, &error));
            if (!root) return r;  // maybe only jansson's stricter checks
            if (!json_is_object(root.get())) return malformed();
            std::optional<Usage> u;
            json_t *places[] = {
                json_object_get(root.get(), "usage"),
                json_object_get(json_object_get(root.get(), "message"), "usage"),
                json_object_get(json_object_get(root.get(), "response"), "usage"),
            };
            // The scanner merges usages as they close, so a later bad one in
            // the same event leaves an earlier one merged: compare the usage
            // only when the stream is not malformed.
            for (json_t *place : places) {
                if (!read_usage(place, surface, u)) return malformed();
                if (u) merge(merged, *u);
            }
            json_t *type = json_object_get(root.get(), "type");
            if (string_is(type, "error")) return malformed();
            if (string_is(type, "message_stop") || string_is(type, "response.completed") ||
                string_is(type, "response.incomplete") || string_is(type, "response.failed"))
                complete = true;
        }
        data.clear();
        event.clear();
        has_data = false;
    }
    r.decided = true;
    r.usage = merged;
    r.state = !complete ? UsageScanner::State::malformed
              : merged  ? UsageScanner::State::found
                        : UsageScanner::State::no_usage;
    return r;
}

void check_reference(const Result &got, std::string_view plain, Surface surface, BodyFormat format) {
    const Reference want = format == BodyFormat::json ? reference_json(plain, surface) : reference_sse(plain, surface);
    if (!want.decided) return;
    if (got.state != want.state) {
        std::fprintf(stderr, "reference: state %d, scanner: state %d (%s)\n", int(want.state), int(got.state),
                     got.error.c_str());
        std::abort();
    }
    if (got.state != UsageScanner::State::malformed || format == BodyFormat::json) {
        if (!same_usage(got.usage, want.usage)) {
            std::fprintf(stderr, "reference and scanner disagree on the usage\n");
            std::abort();
        }
    }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    if (size < 2) return 0;
    const std::uint8_t config = data[0];
    const std::uint8_t chunking = data[1];
    const std::string_view rest(reinterpret_cast<const char *>(data + 2), size - 2);

    const Surface surface = config & 1 ? Surface::anthropic : Surface::openai;
    // A usage object read in one pass (json_fields.h) is read as jansson reads it.
    for (const Surface s : {Surface::openai, Surface::anthropic}) {
        const std::optional<Usage> fast = parse_usage_object(rest, s), slow = parse_usage_object_with_jansson(rest, s);
        CHECK(fast.has_value() == slow.has_value());
        if (fast) {
            CHECK(fast->input == slow->input && fast->cached_input == slow->cached_input
                  && fast->cache_write == slow->cache_write && fast->cache_read == slow->cache_read
                  && fast->output == slow->output);
        }
    }
    const BodyFormat format = config & 2 ? BodyFormat::sse : BodyFormat::json;
    const Mode mode = static_cast<Mode>(((config >> 2) & 7) % 6);
    const int level = 1 + (config >> 5);  // 1..8

    std::string body;
    ContentEncoding encoding = ContentEncoding::identity;
    switch (mode) {
    case Mode::identity: body.assign(rest); break;
    case Mode::gzip_compressed: body = compress(rest, 15 + 16, level); encoding = ContentEncoding::gzip; break;
    case Mode::zlib_compressed: body = compress(rest, 15, level); encoding = ContentEncoding::deflate; break;
    case Mode::raw_compressed: body = compress(rest, -15, level); encoding = ContentEncoding::deflate; break;
    case Mode::gzip_as_is: body.assign(rest); encoding = ContentEncoding::gzip; break;
    case Mode::deflate_as_is: body.assign(rest); encoding = ContentEncoding::deflate; break;
    }

    const Result whole = run(body, surface, format, encoding, 0);
    check_result(whole, format);
    const Result chunked = run(body, surface, format, encoding, chunking == 0 ? 1 : chunking);
    check_result(chunked, format);
    if (!same(whole, chunked)) {
        std::fprintf(stderr, "whole: %d %s\nchunked: %d %s\n", int(whole.state), whole.error.c_str(),
                     int(chunked.state), chunked.error.c_str());
        std::abort();
    }
    // Events read whole in one pass (json_event.h) read as byte by byte.
    const Result bytewise = run(body, surface, format, encoding, 0, false);
    if (!same(whole, bytewise)) {
        std::fprintf(stderr, "whole events: %d %s\nbyte by byte: %d %s\n", int(whole.state), whole.error.c_str(),
                     int(bytewise.state), bytewise.error.c_str());
        std::abort();
    }
    if (mode != Mode::gzip_as_is && mode != Mode::deflate_as_is) check_reference(whole, rest, surface, format);
    if (mode == Mode::gzip_compressed || mode == Mode::zlib_compressed || mode == Mode::raw_compressed) {
        // Inflating is transparent.
        const Result plain = run(rest, surface, format, ContentEncoding::identity, chunking);
        if (!same(whole, plain)) {
            std::fprintf(stderr, "compressed: %d %s\nplain: %d %s\n", int(whole.state), whole.error.c_str(),
                         int(plain.state), plain.error.c_str());
            std::abort();
        }
    }
    return 0;
}
