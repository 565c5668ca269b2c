// The usage scanner's SSE reader: a text/event-stream read line by line, never
// holding a line, each event's data streamed into the JSON document scanner.
#include "usage/scanner_impl.h"

#include <algorithm>
#include <cstring>

#include "json/event.h"

namespace spendcap {

namespace {

constexpr std::string_view kDone = "[DONE]";
constexpr unsigned char kBom[3] = {0xef, 0xbb, 0xbf};

}  // namespace

UsageScanner::Impl::EventType UsageScanner::Impl::classify_event_type(std::string_view type) {
    if (type == "message_stop" || type == "response.completed" || type == "response.incomplete" ||
        type == "response.failed")
        return EventType::final_event;
    if (type == "error") return EventType::error;
    return EventType::other;
}

void UsageScanner::Impl::merge_max(Usage &into, const Usage &u) {
    into.input = std::max(into.input, u.input);
    into.cached_input = std::max(into.cached_input, u.cached_input);
    into.cache_write = std::max(into.cache_write, u.cache_write);
    into.cache_write_1h = std::max(into.cache_write_1h, u.cache_write_1h);
    into.cache_read = std::max(into.cache_read, u.cache_read);
    into.output = std::max(into.output, u.output);
}

// An event stream, read line by line without holding a line. Each step reads
// one part of a line (its first byte, the field name, the optional space after
// the colon, the rest of the line) and returns where the next part begins.
void UsageScanner::Impl::feed_sse(std::string_view chunk) {
    const char *p = chunk.data();
    const std::size_t n = chunk.size();
    std::size_t i = skip_bom(p, n);
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
        case Line::start: i = start_line(c, i); break;
        case Line::name: i = read_field_name(p, n, i); break;
        case Line::value_start: i = skip_value_space(c, i); break;
        case Line::value:
        case Line::comment: i = read_to_line_end(p, n, i); break;
        }
    }
}

// Skips a UTF-8 byte order mark at the very start; returns where the stream's own bytes begin.
std::size_t UsageScanner::Impl::skip_bom(const char *p, std::size_t n) {
    std::size_t i = 0;
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
    return i;
}

// A line's first byte: a blank line (dispatch), a comment or a field name.
std::size_t UsageScanner::Impl::start_line(char c, std::size_t i) {
    if (c == '\r' || c == '\n') {  // a blank line: dispatch
        after_cr = c == '\r';
        dispatch_event();
        return i + 1;
    }
    if (c == ':') {
        line = Line::comment;
        return i + 1;
    }
    line = Line::name;
    name_size = 0;
    name_long = false;
    return i;  // c is the name's first byte
}

// The field name, up to its colon or line end (or the chunk's end).
std::size_t UsageScanner::Impl::read_field_name(const char *p, std::size_t n, std::size_t i) {
    for (; i < n; ++i) {
        const char c = p[i];
        if (c == ':') {
            begin_field();
            line = Line::value_start;
            return i + 1;
        }
        if (c == '\r' || c == '\n') {  // a field name alone: an empty value
            begin_field();
            end_line(c);
            return i + 1;
        }
        if (name_size < kMaxName)
            name[name_size++] = c;
        else
            name_long = true;
    }
    return n;
}

// The value begins after the colon and one optional space.
std::size_t UsageScanner::Impl::skip_value_space(char c, std::size_t i) {
    line = Line::value;
    value_fresh = true;
    return c == ' ' ? i + 1 : i;
}

// The rest of a value or comment line, up to its end or the chunk's.
std::size_t UsageScanner::Impl::read_to_line_end(const char *p, std::size_t n, std::size_t i) {
    // The line's end: memchr runs over a whole event's data at once.
    const char *lf = static_cast<const char *>(std::memchr(p + i, '\n', n - i));
    const std::size_t lf_at = lf != nullptr ? static_cast<std::size_t>(lf - p) : n;
    const char *cr = static_cast<const char *>(std::memchr(p + i, '\r', lf_at - i));
    const std::size_t end = cr != nullptr ? static_cast<std::size_t>(cr - p) : lf_at;
    if (line == Line::value && end > i && !(value_fresh && read_whole_event(p, n, i, end)))
        field_value(p + i, end - i);
    value_fresh = false;
    if (end == n) return n;
    end_line(p[end]);
    return end + 1;
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

}  // namespace spendcap
