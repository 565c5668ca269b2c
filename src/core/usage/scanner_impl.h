// The usage scanner's state and its stages, shared by the files that implement
// them (scanner.cpp, sse.cpp, inflate.cpp). Private to src/core/usage.
#pragma once

#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "json/tokenizer.h"
#include "usage/usage.h"

namespace spendcap {

// Two stages: an optional inflater (zlib) turns the compressed bytes into the
// body's bytes, 16 KiB at a time into a stack buffer; the body's bytes go to a
// JSON document scanner (json format) or to an SSE reader that streams each
// event's data into the same document scanner, reset per event. Nothing ever
// holds a line, an event or a document: only the usage object being captured
// (at most kMaxCapture bytes) and a few fixed-size fields.
//
// Memory held between calls (UsageScanner::memory_held(), bounded by
// kMaxMemoryIdentity / kMaxMemory): the Impl object itself (~0.6 KiB with its
// shared_ptr control block), the capture buffer (reserved once at kMaxCapture + 1 bytes, only
// when a usage object starts), the tokenizer's key/error text (< 0.3 KiB), the
// error message, and for compressed bodies zlib's inflate state (~7 KiB) and
// its 32 KiB window, allocated through counting hooks. feed() also uses a
// 16 KiB stack buffer while it inflates.
struct UsageScanner::Impl {
    using Token = JsonTokenizer::Token;
    // What the top-level "type" of an SSE event's data says.
    enum class EventType : std::uint8_t { none, other, final_event, error };
    static EventType classify_event_type(std::string_view type);
    // Count by count, the larger (stream counts are cumulative).
    static void merge_max(Usage &into, const Usage &u);
    // What error() says after a failed allocation.
    static const std::string kOutOfMemory;

    Impl(Surface s, BodyFormat f, ContentEncoding e) : surface(s), format(f), encoding(e) {
        tokenizer.keep_text_to_depth(2);  // on_token reads keys at depths 1 and 2 only
    }
    ~Impl() {
        if (z_started) inflateEnd(&z);
    }
    Impl(const Impl &) = delete;
    Impl &operator=(const Impl &) = delete;

    void feed(std::string_view chunk);
    void conclude();
    std::size_t memory_held() const;

    // Stage 1: compressed bodies.
    void feed_compressed(std::string_view chunk);
    bool start_inflate(int window_bits);
    void inflate_bytes(const unsigned char *data, std::size_t size);
    void inflate_slice(unsigned char *out);
    static voidpf z_alloc(voidpf opaque, uInt items, uInt size);
    static void z_free(voidpf opaque, voidpf address);

    // Stage 2: the body's own bytes.
    void feed_plain(std::string_view bytes);

    // The JSON document: a whole body, or one SSE event's data.
    enum class Scan : std::uint8_t { ok, invalid, not_object };
    Scan scan_document(std::string_view chunk);
    void on_token(Token token, std::string_view chunk, std::size_t pos);
    void start_capture(std::size_t from);
    void capture_bytes(std::string_view bytes);
    void usage_ended();
    void usage_not_object();
    void reset_document();

    // json format.
    void feed_json_body(std::string_view chunk);
    void conclude_json_body();

    // sse format.
    void feed_sse(std::string_view chunk);
    std::size_t skip_bom(const char *p, std::size_t n);
    // The steps of feed_sse: each reads from p[i] (c) and returns where the next begins.
    std::size_t start_line(char c, std::size_t i);
    std::size_t read_field_name(const char *p, std::size_t n, std::size_t i);
    std::size_t skip_value_space(char c, std::size_t i);
    std::size_t read_to_line_end(const char *p, std::size_t n, std::size_t i);
    void begin_field();
    void field_value(const char *data, std::size_t size);
    void end_line(char c);
    void feed_event_data(const char *data, std::size_t size);
    bool read_whole_event(const char *p, std::size_t n, std::size_t i, std::size_t end);
    // sse: what is wrong with the current event; judged when it is
    // dispatched (an event cut off by the end of the stream never counts).
    enum class EventFailure : std::uint8_t {
        none, invalid_json, not_object, usage_not_object, usage_unreadable,
    };
    void fail_event(EventFailure why);
    std::string event_failure_message() const;
    bool event_named_error() const;
    void dispatch_event();
    void reset_event();
    void conclude_sse();

    void set_malformed(std::string why);
    void release_capture();
    const char *surface_name() const { return surface == Surface::anthropic ? "Anthropic" : "OpenAI"; }

    const Surface surface;
    const BodyFormat format;
    const ContentEncoding encoding;
    State state = State::reading;
    bool finished = false;
    bool out_of_memory = false;  // error() is kOutOfMemory (set without allocating)
    std::optional<Usage> usage;
    std::string error;

    // --- the document scanner
    JsonTokenizer tokenizer;
    bool root_is_object = false;
    bool usage_value_next = false;    // a "usage" key was just read where usage counts
    bool type_value_next = false;     // sse: the top-level key "type" was just read
    bool parent_holds_usage = false;  // sse: the open top-level key is "message" / "response"
    bool capturing = false;           // inside a usage object
    std::size_t capture_depth = 0;    // the tokenizer's depth inside the usage object
    std::size_t capture_from = 0;     // where the capture resumes in the current chunk
    std::string capture;
    // json: about the last top-level "usage" (a later one replaces an
    // earlier one, as JSON parsers do).
    bool usage_complete = false;
    bool usage_too_large = false;
    bool usage_bad_type = false;

    // --- the SSE reader (WHATWG event-stream rules)
    enum class Line : std::uint8_t { start, name, value_start, value, comment };
    enum class Field : std::uint8_t { ignored, data, event };
    static constexpr std::size_t kMaxName = 16;
    Line line = Line::start;
    Field field = Field::ignored;
    bool after_cr = false;            // a CR ended the last line: a LF right after belongs to it
    bool bom_decided = false;
    std::uint8_t bom_matched = 0;
    char name[kMaxName] = {};         // the field name being read (longer names are ignored)
    std::uint8_t name_size = 0;
    bool name_long = false;
    char event_name[kMaxName] = {};   // the event's `event:` field
    std::uint8_t event_name_size = 0;
    bool event_name_long = false;
    std::uint64_t data_lines = 0;     // data lines of the current event
    std::uint8_t done_matched = 0;    // bytes of the event's data that spell a prefix of [DONE]
    bool done_possible = true;
    EventFailure event_failure = EventFailure::none;  // the data is read no further
    // A usage object outgrew the capture. Not a failure that stops reading:
    // where it is noticed depends on the chunking, so a JSON error anywhere
    // in the event must still win, whatever the chunks.
    bool event_usage_too_large = false;
    std::optional<Usage> event_usage;  // the event's usage objects, merged when it is dispatched
    EventType event_type = EventType::none;
    bool stream_complete = false;     // the final event was seen
    bool value_fresh = false;         // no byte of the current line's value was read yet
    bool fast_document = false;       // the event's data was read whole by scan_event_json
    bool fast_events = true;          // try scan_event_json (tests turn it off to compare)

    // --- the inflater
    z_stream z{};
    bool z_started = false;
    bool z_ended = false;             // the current deflate stream / gzip member ended
    bool z_pending = false;           // bytes of an unfinished stream were consumed
    unsigned char sniff[2] = {};      // deflate: the first two bytes tell zlib from raw
    std::uint8_t sniffed = 0;
    std::size_t zlib_bytes = 0;       // held by zlib now
};

}  // namespace spendcap
