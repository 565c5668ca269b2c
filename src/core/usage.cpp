// The response side: the `usage` object of each API and its cost, and the
// scanner that finds the top-level usage in a plain JSON body as it streams by.
#include "usage.h"

#include <jansson.h>

#include "json_stream.h"

namespace spendcap {

namespace {

struct JsonDeleter {
    void operator()(json_t *value) const { json_decref(value); }
};
using JsonPtr = std::unique_ptr<json_t, JsonDeleter>;

// A token count field: absent or null leaves `out` empty; a present value
// that is not a non-negative integer makes the whole usage unreadable.
bool read_count(json_t *object, const char *name, std::optional<std::int64_t> &out) {
    json_t *value = object ? json_object_get(object, name) : nullptr;
    if (!value || json_is_null(value)) return true;
    if (!json_is_integer(value) || json_integer_value(value) < 0) return false;
    out = json_integer_value(value);
    return true;
}

// A details object ({"cached_tokens": N, ...}): absent or null is fine.
bool read_details(json_t *usage, const char *name, json_t *&out) {
    json_t *value = json_object_get(usage, name);
    out = nullptr;
    if (!value || json_is_null(value)) return true;
    if (!json_is_object(value)) return false;
    out = value;
    return true;
}

// OpenAI: Chat Completions / Completions / Embeddings (prompt_tokens, which
// include cached ones) or Responses (input_tokens, likewise inclusive).
std::optional<Usage> openai_usage(json_t *usage) {
    std::optional<std::int64_t> prompt, completion, input, output, cached;
    json_t *details = nullptr;
    if (!read_count(usage, "prompt_tokens", prompt)) return std::nullopt;
    if (prompt) {
        if (!read_count(usage, "completion_tokens", completion)) return std::nullopt;
        if (!read_details(usage, "prompt_tokens_details", details)) return std::nullopt;
        input = prompt;
        output = completion;  // absent for embeddings
    } else {
        if (!read_count(usage, "input_tokens", input) || !input) return std::nullopt;
        if (!read_count(usage, "output_tokens", output)) return std::nullopt;
        if (!read_details(usage, "input_tokens_details", details)) return std::nullopt;
    }
    if (!read_count(details, "cached_tokens", cached)) return std::nullopt;
    const std::int64_t cached_tokens = cached.value_or(0);
    if (cached_tokens > *input) return std::nullopt;  // inconsistent: cached is part of input

    Usage u;
    u.input = *input - cached_tokens;
    u.cached_input = cached_tokens;
    u.output = output.value_or(0);
    return u;
}

// Anthropic Messages: input_tokens excludes the cache tokens, which are
// counted apart. A stream's message_delta may carry output_tokens alone.
std::optional<Usage> anthropic_usage(json_t *usage) {
    std::optional<std::int64_t> input, output, cache_write, cache_read;
    if (!read_count(usage, "input_tokens", input) || !read_count(usage, "output_tokens", output) ||
        !read_count(usage, "cache_creation_input_tokens", cache_write) ||
        !read_count(usage, "cache_read_input_tokens", cache_read))
        return std::nullopt;
    if (!input && !output) return std::nullopt;
    Usage u;
    u.input = input.value_or(0);
    u.output = output.value_or(0);
    u.cache_write = cache_write.value_or(0);
    u.cache_read = cache_read.value_or(0);
    return u;
}

}  // namespace

std::optional<Usage> parse_usage_object(std::string_view json, Surface surface) {
    try {
        json_error_t error;
        JsonPtr root(json_loadb(json.data(), json.size(), JSON_ALLOW_NUL, &error));
        if (!root || !json_is_object(root.get())) return std::nullopt;
        return surface == Surface::anthropic ? anthropic_usage(root.get())
                                             : openai_usage(root.get());
    } catch (...) {
        return std::nullopt;
    }
}

Nanos usage_cost(const Usage &u, const ModelPrice &price) {
    return cost_of({
        {u.input, price.input},
        {u.cached_input, price.cached_input.value_or(price.input)},
        {u.cache_write, price.cache_write.value_or(price.input)},
        {u.cache_read, price.cache_read.value_or(price.input)},
        {u.output, price.output},
    });
}

// ---------------------------------------------------------------------------
// UsageScanner

struct UsageScanner::Impl {
    explicit Impl(Surface s) : surface(s) {}

    void scan(std::string_view chunk);
    void on_token(JsonTokenizer::Token token, std::string_view chunk, std::size_t pos);
    void capture_bytes(std::string_view bytes);
    void conclude();
    void set_malformed(std::string why) {
        state = State::malformed;
        error = std::move(why);
        capture.clear();
        capture.shrink_to_fit();
    }

    Surface surface;
    JsonTokenizer tokenizer;
    State state = State::reading;
    bool finished = false;
    bool root_is_object = false;

    // About the last top-level "usage" (a later one replaces an earlier one,
    // as JSON parsers do).
    bool usage_value_next = false;  // the top-level key "usage" was just read
    bool capturing = false;         // inside the usage object
    std::size_t capture_from = 0;   // where the capture resumes in the current chunk
    bool usage_complete = false;
    bool usage_too_large = false;
    bool usage_not_object = false;
    std::string capture;

    std::optional<Usage> usage;
    std::string error;
};

void UsageScanner::Impl::capture_bytes(std::string_view bytes) {
    if (capture.size() + bytes.size() > kMaxCapture) {
        usage_too_large = true;
        capturing = false;
        capture.clear();
        capture.shrink_to_fit();
        return;
    }
    capture.append(bytes.data(), bytes.size());
}

// `pos` is just past the token (see JsonTokenizer::next).
void UsageScanner::Impl::on_token(JsonTokenizer::Token token, std::string_view chunk,
                                  std::size_t pos) {
    using Token = JsonTokenizer::Token;
    if (token == Token::key) {
        usage_value_next = tokenizer.depth() == 1 && !tokenizer.text_truncated() &&
                           tokenizer.text() == "usage";
        return;
    }
    if (usage_value_next) {
        // The first token of the usage value.
        usage_value_next = false;
        usage_complete = usage_too_large = usage_not_object = false;
        capture.clear();
        if (token == Token::object_begin) {
            capturing = true;
            capture_from = pos - 1;  // the '{'
        } else if (token != Token::null_value) {  // "usage": null just means none
            usage_not_object = true;
        }
        return;
    }
    if (token == Token::object_end && capturing && tokenizer.depth() == 1) {
        capture_bytes(chunk.substr(capture_from, pos - capture_from));
        if (capturing) usage_complete = true;
        capturing = false;
    }
}

void UsageScanner::Impl::scan(std::string_view chunk) {
    using Token = JsonTokenizer::Token;
    std::size_t pos = 0;
    while (true) {
        const Token token = tokenizer.next(chunk, pos);
        if (token == Token::need_more) break;
        if (token == Token::error) {
            set_malformed("response body is " + tokenizer.error());
            return;
        }
        if (!root_is_object) {
            // '{' is reported as soon as it is read, so any other first token
            // means the root is something else.
            if (token != Token::object_begin) {
                set_malformed("response body is not a JSON object");
                return;
            }
            root_is_object = true;
            continue;
        }
        on_token(token, chunk, pos);
    }
    if (capturing) {
        capture_bytes(chunk.substr(capture_from));
        capture_from = 0;
    }
}

void UsageScanner::Impl::conclude() {
    if (state != State::reading) return;
    if (tokenizer.finish() == JsonTokenizer::Token::error) {
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
    if (usage_not_object) {
        set_malformed("usage is not a JSON object");
        return;
    }
    if (!usage_complete) {
        state = State::no_usage;
        return;
    }
    usage = parse_usage_object(capture, surface);
    if (!usage) {
        set_malformed(std::string("usage object is not in the ") +
                      (surface == Surface::anthropic ? "Anthropic" : "OpenAI") + " format");
        return;
    }
    state = State::found;
    capture.clear();
    capture.shrink_to_fit();
}

UsageScanner::UsageScanner(Surface surface) {
    try {
        impl_ = std::make_shared<Impl>(surface);
    } catch (...) {
        impl_.reset();  // every method then reports malformed
    }
}

void UsageScanner::feed(std::string_view chunk) {
    if (!impl_ || impl_->finished || impl_->state != State::reading) return;
    try {
        impl_->scan(chunk);
    } catch (...) {
        impl_->set_malformed("out of memory while reading the response");
    }
}

void UsageScanner::finish() {
    if (!impl_ || impl_->finished) return;
    impl_->finished = true;
    try {
        impl_->conclude();
    } catch (...) {
        impl_->state = State::malformed;
        impl_->error = "out of memory while reading the response";
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
    static const std::string kNoScanner = "usage scanner could not be created (out of memory)";
    return impl_ ? impl_->error : kNoScanner;
}

}  // namespace spendcap
