// UsageScanner: the scanner's entry points, the JSON document scanner that
// captures usage objects (a whole body, or one SSE event's data), and the json
// format's verdict. The SSE reader is in sse.cpp, the inflater in inflate.cpp.
#include "usage/scanner_impl.h"

#include <memory>

namespace spendcap {

namespace {

constexpr std::size_t kControlBlock = 2 * sizeof(void *);     // make_shared's counts

const std::string kNoScanner = "usage scanner could not be created (out of memory)";

std::size_t string_heap_bytes(const std::string &s) {
    const char *data = s.data();
    const char *self = reinterpret_cast<const char *>(&s);
    return data >= self && data < self + sizeof s ? 0 : s.capacity() + 1;
}

}  // namespace

const std::string UsageScanner::Impl::kOutOfMemory = "out of memory while reading the response";

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
    return impl_->out_of_memory ? Impl::kOutOfMemory : impl_->error;
}

std::size_t UsageScanner::memory_held() const { return impl_ ? impl_->memory_held() : 0; }

void UsageScanner::read_whole_events(bool on) {
    if (impl_) impl_->fast_events = on;
}

}  // namespace spendcap
