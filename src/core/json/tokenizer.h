// A byte-level, incremental JSON tokenizer: it reads a document fed in chunks
// split at any byte and reports its structure token by token, without ever
// holding the document. Memory is a fixed-size nesting stack and a short text
// buffer, whatever the input's length. The usage scanner (plain JSON bodies)
// is built on it, and an SSE reader can feed it one `data:` event at a time.
#pragma once

#include <bitset>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace spendcap {

// The bytes that end a run of plain string content: '"', '\\' and the
// controls below 0x20 (shared by the tokenizer and json_event's one pass).
struct JsonStringStops {
    bool stop[256] = {};
    constexpr JsonStringStops() {
        for (int b = 0; b < 0x20; ++b) stop[b] = true;
        stop[static_cast<unsigned char>('"')] = true;
        stop[static_cast<unsigned char>('\\')] = true;
    }
    bool operator[](unsigned char b) const { return stop[b]; }
};
inline constexpr JsonStringStops kJsonStringStops{};

class JsonTokenizer {
public:
    static constexpr std::size_t kMaxDepth = 1024;  // deeper nesting is an error
    static constexpr std::size_t kMaxText = 64;     // bytes of a key / string value kept

    enum class Token {
        need_more,     // the chunk is used up; feed the next one
        object_begin,  // '{' (depth() counts it)
        object_end,    // '}' (depth() no longer counts it)
        array_begin,   // '['
        array_end,     // ']'
        key,           // an object key ended; text() holds it
        string,        // a string value ended; text() holds its start
        number,        // a number ended (the byte after it is not consumed)
        true_value,
        false_value,
        null_value,
        error,         // not JSON; error() says why. Sticky until reset().
    };

    // Reads `chunk` from `pos` up to and including the next token and moves
    // `pos` past the bytes consumed. A token's last byte is chunk[pos - 1],
    // except for `number`, which ends just before chunk[pos]. Returns
    // need_more with pos == chunk.size() when the chunk holds no more tokens.
    Token next(std::string_view chunk, std::size_t &pos);

    // The input has ended: completes a top-level number still being read
    // (returns `number`), or fails if the document is unfinished (returns
    // `error`). Otherwise need_more.
    Token finish();

    // Ready for a new document (an SSE reader reuses one tokenizer per event).
    void reset();

    // One whole JSON value has been read, followed by whitespace only.
    bool complete() const { return state_ == State::done; }
    // Anything but whitespace has been seen.
    bool started() const { return started_; }
    bool failed() const { return state_ == State::failed; }
    // Open containers around the current position: 1 inside the root object.
    std::size_t depth() const { return depth_; }
    // Innermost open container is an object (false for an array or at depth 0).
    bool in_object() const { return depth_ > 0 && object_at_[depth_ - 1]; }
    // The last key or string value, decoded, cut at kMaxText bytes. Escapes
    // \uXXXX are written as UTF-8 per code unit (surrogates are not paired):
    // enough to compare with ASCII names.
    std::string_view text() const { return text_; }
    bool text_truncated() const { return text_truncated_; }
    // Keeps the text only of keys and strings at most `depth` containers
    // deep (1: the root object's own keys and values); deeper ones read as
    // empty and truncated. Copying what nobody reads is most of the cost of
    // a document of many small strings. Default: every depth. Kept by reset().
    void keep_text_to_depth(std::size_t depth) { text_depth_ = depth; }
    // Bytes consumed since the last reset().
    std::uint64_t offset() const { return offset_; }
    const std::string &error() const { return error_; }
    // Bytes held on the heap (the text and error buffers), for memory accounting.
    std::size_t heap_bytes() const;

private:
    enum class State : std::uint8_t {
        value,           // a value must come (document start, after ':' or an array's ',')
        array_first,     // after '[': a value or ']'
        object_first,    // after '{': a key or '}'
        key,             // after an object's ',': a key
        colon,           // after a key
        after_value,     // inside a container after a value: ',' or its closing bracket
        done,            // the document is complete: whitespace only
        string,          // inside a key or string value
        string_escape,   // after a backslash
        string_unicode,  // inside \uXXXX
        number,
        literal,         // inside true / false / null
        failed,
    };
    enum class NumberPart : std::uint8_t {
        minus,       // "-": a digit must come
        zero,        // a leading 0: '.', an exponent or the end
        integer,     // 1-9 digits...
        fraction0,   // after '.': a digit must come
        fraction,
        exponent0,   // after 'e': a sign or digit
        exponent_sign,
        exponent,
    };

    Token start_value(char c);
    Token end_value(Token t);
    Token fail(std::uint64_t at, const std::string &why);
    Token unexpected(std::uint64_t at, char c);
    void append_text(char c);
    void append_code_unit(unsigned code);

    State state_ = State::value;
    NumberPart number_part_ = NumberPart::minus;
    bool in_key_ = false;
    bool started_ = false;
    bool text_truncated_ = false;
    std::size_t text_depth_ = static_cast<std::size_t>(-1);
    std::uint8_t unicode_digits_ = 0;
    unsigned unicode_value_ = 0;
    const char *literal_ = nullptr;  // "true", "false" or "null"
    std::uint8_t literal_matched_ = 0;
    std::size_t depth_ = 0;
    std::bitset<kMaxDepth> object_at_;  // per level: object (1) or array (0)
    std::uint64_t offset_ = 0;
    std::string text_;
    std::string error_;
};

}  // namespace spendcap
