// The response side: token counts by how they are billed (Usage), their
// plausibility and their cost, and the scanner that finds usage in a response
// body (plain JSON or an SSE stream, identity or gzip / deflate) as it streams by.
#include "usage/usage.h"

#include "base/saturating.h"

#include "json/event.h"

#include <cstring>

#include <zlib.h>

#include <algorithm>
#include <initializer_list>
#include <limits>
#include <new>

#include "json/tokenizer.h"

namespace spendcap {

std::int64_t Usage::input_total() const {
    return saturating_sum({input, cached_input, cache_write, cache_write_1h, cache_read});
}

std::int64_t Usage::total() const { return saturating_sum({input_total(), output}); }

bool plausible(const Usage &u) {
    for (std::int64_t v : {u.input, u.cached_input, u.cache_write, u.cache_write_1h, u.cache_read, u.output})
        if (v < 0 || v > kMaxPlausibleTokens) return false;
    return true;
}

Nanos usage_cost(const Usage &u, const ModelPrice &price) {
    return cost_of({
        {u.input, price.input},
        {u.cached_input, price.cached_input.value_or(price.input)},
        {u.cache_write, price.cache_write.value_or(price.input)},
        {u.cache_write_1h, price.cache_write_1h.value_or(price.cache_write.value_or(price.input))},
        {u.cache_read, price.cache_read.value_or(price.input)},
        {u.output, price.output},
    });
}

// ---------------------------------------------------------------------------
// UsageScanner
//
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

namespace {

using Token = JsonTokenizer::Token;

constexpr std::string_view kDone = "[DONE]";
constexpr unsigned char kBom[3] = {0xef, 0xbb, 0xbf};
constexpr std::size_t kInflateBuffer = 16 * 1024;
constexpr std::size_t kInflateSlice = std::size_t(1) << 30;  // z_stream counts in uInt
constexpr std::size_t kControlBlock = 2 * sizeof(void *);     // make_shared's counts

const std::string kOutOfMemory = "out of memory while reading the response";
const std::string kNoScanner = "usage scanner could not be created (out of memory)";

// What the top-level "type" of an SSE event's data says.
enum class EventType : std::uint8_t { none, other, final_event, error };

EventType classify_event_type(std::string_view type) {
    if (type == "message_stop" || type == "response.completed" || type == "response.incomplete" ||
        type == "response.failed")
        return EventType::final_event;
    if (type == "error") return EventType::error;
    return EventType::other;
}

void merge_max(Usage &into, const Usage &u) {
    into.input = std::max(into.input, u.input);
    into.cached_input = std::max(into.cached_input, u.cached_input);
    into.cache_write = std::max(into.cache_write, u.cache_write);
    into.cache_write_1h = std::max(into.cache_write_1h, u.cache_write_1h);
    into.cache_read = std::max(into.cache_read, u.cache_read);
    into.output = std::max(into.output, u.output);
}

std::size_t string_heap_bytes(const std::string &s) {
    const char *data = s.data();
    const char *self = reinterpret_cast<const char *>(&s);
    return data >= self && data < self + sizeof s ? 0 : s.capacity() + 1;
}

// A zlib header (RFC 1950): deflate method, window <= 32 KiB, check bits.
bool is_zlib_header(unsigned char cmf, unsigned char flg) {
    return (cmf & 0x0f) == 8 && (cmf >> 4) <= 7 && ((unsigned(cmf) << 8) | flg) % 31 == 0;
}

}  // namespace

struct UsageScanner::Impl {
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

void UsageScanner::Impl::set_malformed(std::string why) {
    state = State::malformed;
    error = std::move(why);
    release_capture();
}

void UsageScanner::Impl::release_capture() {
    capturing = false;
    capture.clear();
    capture.shrink_to_fit();
}

std::size_t UsageScanner::Impl::memory_held() const {
    return sizeof(Impl) + kControlBlock + string_heap_bytes(capture) + string_heap_bytes(error) +
           tokenizer.heap_bytes() + zlib_bytes;
}

void UsageScanner::Impl::feed(std::string_view chunk) {
    if (encoding == ContentEncoding::identity)
        feed_plain(chunk);
    else
        feed_compressed(chunk);
}

void UsageScanner::Impl::feed_plain(std::string_view bytes) {
    if (format == BodyFormat::sse)
        feed_sse(bytes);
    else
        feed_json_body(bytes);
}

void UsageScanner::Impl::conclude() {
    if (state != State::reading) return;
    if (encoding != ContentEncoding::identity &&
        ((z_started && !z_ended && z_pending) || (!z_started && sniffed > 0))) {
        set_malformed("compressed body ended early");
        return;
    }
    if (format == BodyFormat::sse)
        conclude_sse();
    else
        conclude_json_body();
}

// ---------------------------------------------------------------------------
// Stage 1: inflate

voidpf UsageScanner::Impl::z_alloc(voidpf opaque, uInt items, uInt size) {
    constexpr std::size_t header = 16;  // keeps the block 16-byte aligned
    const std::size_t bytes = std::size_t(items) * std::size_t(size);
    void *block = ::operator new(bytes + header, std::nothrow);
    if (!block) return Z_NULL;
    *static_cast<std::size_t *>(block) = bytes;
    static_cast<Impl *>(opaque)->zlib_bytes += bytes;
    return static_cast<unsigned char *>(block) + header;
}

void UsageScanner::Impl::z_free(voidpf opaque, voidpf address) {
    if (!address) return;
    unsigned char *block = static_cast<unsigned char *>(address) - 16;
    static_cast<Impl *>(opaque)->zlib_bytes -= *reinterpret_cast<std::size_t *>(block);
    ::operator delete(block);
}

bool UsageScanner::Impl::start_inflate(int window_bits) {
    z.zalloc = &Impl::z_alloc;
    z.zfree = &Impl::z_free;
    z.opaque = this;
    z.next_in = Z_NULL;
    z.avail_in = 0;
    const int rc = inflateInit2(&z, window_bits);
    if (rc != Z_OK) {
        set_malformed(rc == Z_MEM_ERROR ? kOutOfMemory : "could not start inflating the response body");
        return false;
    }
    z_started = true;
    return true;
}

void UsageScanner::Impl::feed_compressed(std::string_view chunk) {
    const auto *data = reinterpret_cast<const unsigned char *>(chunk.data());
    std::size_t size = chunk.size();
    if (!z_started) {
        if (size == 0) return;
        if (encoding == ContentEncoding::gzip) {
            // 15 + 32: a gzip or zlib header, detected.
            if (!start_inflate(15 + 32)) return;
        } else {
            // "deflate" is meant to be zlib-wrapped (RFC 9110), but some
            // servers send raw deflate: the first two bytes tell.
            while (sniffed < 2 && size > 0) {
                sniff[sniffed++] = *data++;
                --size;
            }
            if (sniffed < 2) return;
            if (!start_inflate(is_zlib_header(sniff[0], sniff[1]) ? 15 : -15)) return;
            inflate_bytes(sniff, 2);
        }
    }
    inflate_bytes(data, size);
}

void UsageScanner::Impl::inflate_bytes(const unsigned char *data, std::size_t size) {
    unsigned char out[kInflateBuffer];
    while (size > 0 && state == State::reading) {
        const std::size_t take = size < kInflateSlice ? size : kInflateSlice;
        z.next_in = const_cast<Bytef *>(data);
        z.avail_in = static_cast<uInt>(take);
        data += take;
        size -= take;
        inflate_slice(out);
    }
}

// Inflates z.next_in until it is used up, passing the output on.
void UsageScanner::Impl::inflate_slice(unsigned char *out) {
    const char *kind = encoding == ContentEncoding::gzip ? "gzip" : "deflate";
    while (state == State::reading) {
        if (z_ended) {
            if (z.avail_in == 0) return;
            if (encoding != ContentEncoding::gzip) {
                set_malformed("compressed body has data after its end (deflate)");
                return;
            }
            // gzip allows several members one after another (as gunzip reads them).
            if (inflateReset(&z) != Z_OK) {
                set_malformed("could not restart inflating the response body");
                return;
            }
            z_ended = false;
        }
        z.next_out = out;
        z.avail_out = static_cast<uInt>(kInflateBuffer);
        const uInt in_before = z.avail_in;
        const int rc = inflate(&z, Z_NO_FLUSH);
        if (z.avail_in != in_before) z_pending = true;
        const std::size_t produced = kInflateBuffer - z.avail_out;
        if (produced > 0) {
            feed_plain(std::string_view(reinterpret_cast<const char *>(out), produced));
            if (state != State::reading) return;
        }
        switch (rc) {
        case Z_STREAM_END:
            z_ended = true;
            z_pending = false;
            continue;
        case Z_OK:
            if (z.avail_in == 0 && z.avail_out != 0) return;
            continue;
        case Z_BUF_ERROR:  // no progress possible: the input is used up
            return;
        case Z_NEED_DICT:
            set_malformed(std::string("compressed body is corrupt (") + kind +
                          ": needs a preset dictionary)");
            return;
        case Z_MEM_ERROR:
            set_malformed(kOutOfMemory);
            return;
        default:
            set_malformed(std::string("compressed body is corrupt (") + kind + ": " +
                          (z.msg ? z.msg : "invalid data") + ")");
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// The JSON document scanner

void UsageScanner::Impl::reset_document() {
    root_is_object = false;
    usage_value_next = type_value_next = parent_holds_usage = false;
    capturing = false;
    capture.clear();
}

void UsageScanner::Impl::start_capture(std::size_t from) {
    // Reserved once, so the buffer never grows past kMaxCapture + 1 bytes.
    if (capture.capacity() < kMaxCapture) capture.reserve(kMaxCapture);
    capture.clear();
    capturing = true;
    capture_depth = tokenizer.depth();
    capture_from = from;
}

void UsageScanner::Impl::capture_bytes(std::string_view bytes) {
    if (capture.size() + bytes.size() > kMaxCapture) {
        capturing = false;
        capture.clear();
        if (format == BodyFormat::json)
            usage_too_large = true;
        else
            event_usage_too_large = true;
        return;
    }
    capture.append(bytes.data(), bytes.size());
}

void UsageScanner::Impl::usage_not_object() {
    if (format == BodyFormat::json)
        usage_bad_type = true;
    else
        fail_event(EventFailure::usage_not_object);
}

// The usage object's closing brace was captured.
void UsageScanner::Impl::usage_ended() {
    if (format == BodyFormat::json) {
        usage_complete = true;  // parsed at the end: a later usage may replace it
        return;
    }
    const std::optional<Usage> parsed = parse_usage_object(capture, surface);
    if (!parsed) {
        fail_event(EventFailure::usage_unreadable);
        return;
    }
    if (!event_usage) event_usage = Usage{};
    merge_max(*event_usage, *parsed);
}

// `pos` is just past the token (see JsonTokenizer::next).
void UsageScanner::Impl::on_token(Token token, std::string_view chunk, std::size_t pos) {
    const std::size_t depth = tokenizer.depth();
    if (token == Token::key) {
        usage_value_next = type_value_next = false;
        const bool whole = !tokenizer.text_truncated();
        const std::string_view key = tokenizer.text();
        if (depth == 1) {
            usage_value_next = whole && key == "usage";
            if (format == BodyFormat::sse) {
                type_value_next = whole && key == "type";
                parent_holds_usage = whole && (key == "message" || key == "response");
            }
        } else if (depth == 2 && parent_holds_usage) {
            // A key at depth 2 is one of the top-level key's object value.
            usage_value_next = whole && key == "usage";
        }
        return;
    }
    if (type_value_next) {
        type_value_next = false;
        event_type = token == Token::string && !tokenizer.text_truncated()
                         ? classify_event_type(tokenizer.text())
                         : EventType::other;
        return;
    }
    if (usage_value_next) {
        // The first token of the usage value.
        usage_value_next = false;
        if (format == BodyFormat::json) usage_complete = usage_too_large = usage_bad_type = false;
        if (token == Token::object_begin)
            start_capture(pos - 1);  // the '{'
        else if (token != Token::null_value)  // "usage": null just means none
            usage_not_object();
        return;
    }
    if (token == Token::object_end && capturing && depth + 1 == capture_depth) {
        capture_bytes(chunk.substr(capture_from, pos - capture_from));
        if (!capturing) return;  // too large
        capturing = false;
        usage_ended();
    }
}

UsageScanner::Impl::Scan UsageScanner::Impl::scan_document(std::string_view chunk) {
    std::size_t pos = 0;
    while (state == State::reading && event_failure == EventFailure::none) {
        const Token token = tokenizer.next(chunk, pos);
        if (token == Token::need_more) break;
        if (token == Token::error) return Scan::invalid;
        if (!root_is_object) {
            // '{' is reported as soon as it is read, so any other first token
            // means the root is something else.
            if (token != Token::object_begin) return Scan::not_object;
            root_is_object = true;
            continue;
        }
        on_token(token, chunk, pos);
    }
    if (capturing) {
        capture_bytes(chunk.substr(capture_from));
        capture_from = 0;
    }
    return Scan::ok;
}

// ---------------------------------------------------------------------------
// json format: the top-level usage of one document

void UsageScanner::Impl::feed_json_body(std::string_view chunk) {
    switch (scan_document(chunk)) {
    case Scan::ok:
        break;
    case Scan::invalid:
        set_malformed("response body is " + tokenizer.error());
        break;
    case Scan::not_object:
        set_malformed("response body is not a JSON object");
        break;
    }
}

void UsageScanner::Impl::conclude_json_body() {
    if (tokenizer.finish() == Token::error) {
        set_malformed(tokenizer.started() ? "response ended inside the JSON body"
                                          : "response body is empty");
        return;
    }
    if (!root_is_object) {  // a bare top-level number
        set_malformed("response body is not a JSON object");
        return;
    }
    if (usage_too_large) {
        set_malformed("usage object larger than " + std::to_string(kMaxCapture) + " bytes");
        return;
    }
    if (usage_bad_type) {
        set_malformed("usage is not a JSON object");
        return;
    }
    if (!usage_complete) {
        state = State::no_usage;
        release_capture();
        return;
    }
    usage = parse_usage_object(capture, surface);
    if (!usage) {
        set_malformed(std::string("usage object is not in the ") + surface_name() + " format");
        return;
    }
    state = State::found;
    release_capture();
}

// ---------------------------------------------------------------------------
// sse format: an event stream, read line by line without holding a line

void UsageScanner::Impl::feed_sse(std::string_view chunk) {
    const char *p = chunk.data();
    const std::size_t n = chunk.size();
    std::size_t i = 0;
    // A UTF-8 byte order mark at the very start is skipped.
    while (!bom_decided && i < n) {
        if (static_cast<unsigned char>(p[i]) == kBom[bom_matched]) {
            ++i;
            if (++bom_matched == sizeof kBom) bom_decided = true;
        } else {
            bom_decided = true;
            if (bom_matched > 0) {  // those bytes began a field name: not one we read
                line = Line::name;
                name_size = 0;
                name_long = true;
            }
        }
    }
    while (i < n && state == State::reading) {
        const char c = p[i];
        if (after_cr) {
            after_cr = false;
            if (c == '\n') {  // the LF of a CRLF, even across chunks
                ++i;
                continue;
            }
        }
        switch (line) {
        case Line::start:
            if (c == '\r' || c == '\n') {  // a blank line: dispatch
                ++i;
                after_cr = c == '\r';
                dispatch_event();
                continue;
            }
            if (c == ':') {
                ++i;
                line = Line::comment;
                continue;
            }
            line = Line::name;
            name_size = 0;
            name_long = false;
            continue;  // c is the name's first byte
        case Line::name:
            if (c == ':') {
                ++i;
                begin_field();
                line = Line::value_start;
                continue;
            }
            if (c == '\r' || c == '\n') {  // a field name alone: an empty value
                ++i;
                begin_field();
                end_line(c);
                continue;
            }
            if (name_size < kMaxName)
                name[name_size++] = c;
            else
                name_long = true;
            ++i;
            continue;
        case Line::value_start:
            line = Line::value;
            value_fresh = true;
            if (c == ' ') ++i;  // one optional space after the colon
            continue;
        case Line::value:
        case Line::comment: {
            // The line's end: memchr runs over a whole event's data at once.
            const char *lf = static_cast<const char *>(std::memchr(p + i, '\n', n - i));
            const std::size_t lf_at = lf != nullptr ? static_cast<std::size_t>(lf - p) : n;
            const char *cr = static_cast<const char *>(std::memchr(p + i, '\r', lf_at - i));
            const std::size_t end = cr != nullptr ? static_cast<std::size_t>(cr - p) : lf_at;
            if (line == Line::value && end > i && !(value_fresh && read_whole_event(p, n, i, end)))
                field_value(p + i, end - i);
            value_fresh = false;
            if (end == n) {
                i = n;
                continue;
            }
            i = end + 1;
            end_line(p[end]);
            continue;
        }
        }
    }
}

void UsageScanner::Impl::end_line(char c) {
    line = Line::start;
    field = Field::ignored;
    after_cr = c == '\r';
}

void UsageScanner::Impl::begin_field() {
    field = Field::ignored;
    if (name_long) return;
    const std::string_view field_name(name, name_size);
    if (field_name == "data") {
        field = Field::data;
        // The data lines of one event are joined with "\n".
        if (data_lines++ > 0) feed_event_data("\n", 1);
    } else if (field_name == "event") {
        field = Field::event;
        event_name_size = 0;
        event_name_long = false;
    }
}

void UsageScanner::Impl::field_value(const char *data, std::size_t size) {
    if (field == Field::data) {
        feed_event_data(data, size);
    } else if (field == Field::event) {
        for (std::size_t k = 0; k < size; ++k) {
            if (event_name_size < kMaxName)
                event_name[event_name_size++] = data[k];
            else
                event_name_long = true;
        }
    }
}

// The event's only data line, [i, end) in this chunk, read in one pass when
// it is the whole event (a blank line follows in the chunk) and plain; false:
// read it byte by byte instead, which also says what is wrong with it.
bool UsageScanner::Impl::read_whole_event(const char *p, std::size_t n, std::size_t i, std::size_t end) {
    if (!fast_events || field != Field::data || data_lines != 1 || tokenizer.started()
        || event_failure != EventFailure::none || end >= n)
        return false;
    std::size_t next = end + 1;  // past the line's end
    if (p[end] == '\r' && next < n && p[next] == '\n') ++next;
    if (next >= n || (p[next] != '\n' && p[next] != '\r')) return false;
    const EventJson scan = scan_event_json(std::string_view(p + i, end - i), kMaxCapture);
    if (!scan.handled) return false;
    std::optional<Usage> merged;
    for (std::size_t k = 0; k < scan.usages; ++k) {
        const std::optional<Usage> parsed = parse_usage_object(scan.usage[k], surface);
        if (!parsed) return false;
        if (!merged) merged = Usage{};
        merge_max(*merged, *parsed);
    }
    if (merged) {
        if (!event_usage) event_usage = Usage{};
        merge_max(*event_usage, *merged);
    }
    if (scan.type == EventJson::Type::string)
        event_type = scan.type_text.size() <= JsonTokenizer::kMaxText ? classify_event_type(scan.type_text)
                                                                       : EventType::other;
    else if (scan.type == EventJson::Type::other)
        event_type = EventType::other;
    root_is_object = true;
    fast_document = true;
    done_possible = false;  // it is an object, not [DONE]
    return true;
}

bool UsageScanner::Impl::event_named_error() const {
    return !event_name_long && std::string_view(event_name, event_name_size) == "error";
}

void UsageScanner::Impl::feed_event_data(const char *data, std::size_t size) {
    if (done_possible) {
        for (std::size_t k = 0; k < size; ++k) {
            if (done_matched < kDone.size() && data[k] == kDone[done_matched]) {
                ++done_matched;
            } else {
                done_possible = false;
                break;
            }
        }
    }
    if (event_failure != EventFailure::none) return;
    // "[DONE]" reads as a JSON array that is not an object: judged at dispatch.
    switch (scan_document(std::string_view(data, size))) {
    case Scan::ok: break;
    case Scan::invalid: fail_event(EventFailure::invalid_json); break;
    case Scan::not_object: fail_event(EventFailure::not_object); break;
    }
}

void UsageScanner::Impl::fail_event(EventFailure why) {
    if (event_failure == EventFailure::none) event_failure = why;
    capturing = false;
}

std::string UsageScanner::Impl::event_failure_message() const {
    switch (event_failure) {
    case EventFailure::invalid_json: return "stream event data is " + tokenizer.error();
    case EventFailure::not_object: return "stream event data is not a JSON object";
    case EventFailure::usage_not_object: return "usage is not a JSON object";
    case EventFailure::usage_unreadable:
        return std::string("usage object is not in the ") + surface_name() + " format";
    case EventFailure::none: break;
    }
    return {};
}

void UsageScanner::Impl::dispatch_event() {
    if (data_lines == 0) {  // no data: no event (WHATWG), only its type is forgotten
        reset_event();
        return;
    }
    // What the provider reported counts, even in an event found malformed below.
    if (event_usage) {
        if (!usage) usage = Usage{};
        merge_max(*usage, *event_usage);
    }
    if (event_named_error()) {
        set_malformed("the provider reported an error mid-stream");
        return;
    }
    if (done_possible && done_matched == kDone.size()) {
        stream_complete = true;
        reset_event();
        return;
    }
    if (event_failure != EventFailure::none) {
        set_malformed(event_failure_message());
        return;
    }
    if (!fast_document && !tokenizer.started()) {  // data lines of whitespace only: nothing to read
        reset_event();
        return;
    }
    if (!fast_document && tokenizer.finish() == Token::error) {
        set_malformed("stream event data ended inside its JSON document");
        return;
    }
    if (!root_is_object) {  // a bare number
        set_malformed("stream event data is not a JSON object");
        return;
    }
    if (event_type == EventType::error) {
        set_malformed("the provider reported an error mid-stream");
        return;
    }
    if (event_usage_too_large) {
        set_malformed("usage object larger than " + std::to_string(kMaxCapture) + " bytes");
        return;
    }
    if (event_type == EventType::final_event) stream_complete = true;
    reset_event();
}

void UsageScanner::Impl::reset_event() {
    fast_document = false;
    tokenizer.reset();
    reset_document();
    data_lines = 0;
    done_matched = 0;
    done_possible = true;
    event_failure = EventFailure::none;
    event_usage_too_large = false;
    event_usage.reset();
    event_type = EventType::none;
    event_name_size = 0;
    event_name_long = false;
}

void UsageScanner::Impl::conclude_sse() {
    // An event not ended by a blank line is never dispatched (WHATWG).
    if (!stream_complete) {
        set_malformed("stream ended before its final event");
        return;
    }
    state = usage ? State::found : State::no_usage;
    release_capture();
}

// ---------------------------------------------------------------------------
// UsageScanner

UsageScanner::UsageScanner(Surface surface, BodyFormat format, ContentEncoding encoding) {
    try {
        impl_ = std::make_shared<Impl>(surface, format, encoding);
    } catch (...) {
        impl_.reset();  // every method then reports malformed
    }
}

void UsageScanner::feed(std::string_view chunk) {
    if (!impl_ || impl_->finished || impl_->state != State::reading) return;
    try {
        impl_->feed(chunk);
    } catch (...) {
        impl_->state = State::malformed;
        impl_->out_of_memory = true;
    }
}

void UsageScanner::finish() {
    if (!impl_ || impl_->finished) return;
    impl_->finished = true;
    try {
        impl_->conclude();
    } catch (...) {
        impl_->state = State::malformed;
        impl_->out_of_memory = true;
    }
}

UsageScanner::State UsageScanner::state() const {
    if (!impl_) return State::malformed;
    return impl_->finished ? impl_->state : State::reading;
}

const std::optional<Usage> &UsageScanner::usage() const {
    static const std::optional<Usage> kNone;
    return impl_ ? impl_->usage : kNone;
}

const std::string &UsageScanner::error() const {
    if (!impl_) return kNoScanner;
    return impl_->out_of_memory ? kOutOfMemory : impl_->error;
}

std::size_t UsageScanner::memory_held() const { return impl_ ? impl_->memory_held() : 0; }

void UsageScanner::read_whole_events(bool on) {
    if (impl_) impl_->fast_events = on;
}

}  // namespace spendcap
