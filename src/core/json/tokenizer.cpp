// Incremental JSON tokenizer: a state machine over single bytes, so that a
// chunk may end anywhere (inside a string, an escape, a number or a literal).
#include "json/tokenizer.h"

#include <cstdio>

namespace spendcap {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

}  // namespace

void JsonTokenizer::reset() {
    state_ = State::value;
    number_part_ = NumberPart::minus;
    in_key_ = false;
    started_ = false;
    text_truncated_ = false;
    unicode_digits_ = 0;
    unicode_value_ = 0;
    literal_ = nullptr;
    literal_matched_ = 0;
    depth_ = 0;
    object_at_.reset();
    offset_ = 0;
    text_.clear();
    error_.clear();
}

namespace {

// Heap bytes behind a std::string: none while it fits its inline buffer.
std::size_t string_heap_bytes(const std::string &s) {
    const char *data = s.data();
    const char *self = reinterpret_cast<const char *>(&s);
    return data >= self && data < self + sizeof s ? 0 : s.capacity() + 1;
}

}  // namespace

std::size_t JsonTokenizer::heap_bytes() const {
    return string_heap_bytes(text_) + string_heap_bytes(error_);
}

JsonTokenizer::Token JsonTokenizer::fail(std::uint64_t at, const std::string &why) {
    state_ = State::failed;
    error_ = "invalid JSON at byte " + std::to_string(at) + ": " + why;
    return Token::error;
}

JsonTokenizer::Token JsonTokenizer::unexpected(std::uint64_t at, char c) {
    char shown[32];
    const unsigned char byte = static_cast<unsigned char>(c);
    if (byte >= 0x20 && byte < 0x7f)
        std::snprintf(shown, sizeof shown, "unexpected '%c'", c);
    else
        std::snprintf(shown, sizeof shown, "unexpected byte 0x%02x", byte);
    return fail(at, shown);
}

void JsonTokenizer::append_text(char c) {
    if (text_.size() < kMaxText)
        text_.push_back(c);
    else
        text_truncated_ = true;
}

void JsonTokenizer::append_code_unit(unsigned code) {
    if (code < 0x80) {
        append_text(static_cast<char>(code));
    } else if (code < 0x800) {
        append_text(static_cast<char>(0xc0 | (code >> 6)));
        append_text(static_cast<char>(0x80 | (code & 0x3f)));
    } else {
        append_text(static_cast<char>(0xe0 | (code >> 12)));
        append_text(static_cast<char>(0x80 | ((code >> 6) & 0x3f)));
        append_text(static_cast<char>(0x80 | (code & 0x3f)));
    }
}

JsonTokenizer::Token JsonTokenizer::end_value(Token t) {
    state_ = depth_ == 0 ? State::done : State::after_value;
    return t;
}

// The first byte of a value, already consumed (so it sits at offset_ - 1).
JsonTokenizer::Token JsonTokenizer::start_value(char c) {
    started_ = true;
    switch (c) {
    case '{':
    case '[':
        if (depth_ == kMaxDepth)
            return fail(offset_ - 1, "nested deeper than " + std::to_string(kMaxDepth) + " levels");
        object_at_[depth_] = (c == '{');
        ++depth_;
        state_ = c == '{' ? State::object_first : State::array_first;
        return c == '{' ? Token::object_begin : Token::array_begin;
    case '"':
        state_ = State::string;
        in_key_ = false;
        text_.clear();
        text_truncated_ = depth_ > text_depth_;
        return Token::need_more;
    case '-':
        state_ = State::number;
        number_part_ = NumberPart::minus;
        return Token::need_more;
    case 't':
    case 'f':
    case 'n':
        state_ = State::literal;
        literal_ = c == 't' ? "true" : c == 'f' ? "false" : "null";
        literal_matched_ = 1;
        return Token::need_more;
    default:
        if (is_digit(c)) {
            state_ = State::number;
            number_part_ = c == '0' ? NumberPart::zero : NumberPart::integer;
            return Token::need_more;
        }
        return unexpected(offset_ - 1, c);
    }
}

JsonTokenizer::Token JsonTokenizer::next(std::string_view chunk, std::size_t &pos) {
    if (state_ == State::failed) return Token::error;
    const char *data = chunk.data();
    const std::size_t size = chunk.size();
    Token token = Token::need_more;
    // offset_ always counts the bytes consumed so far, so errors can name
    // the offending byte as offset_ (the byte at pos is not yet consumed).
    auto consume = [&]() -> char {
        ++offset_;
        return data[pos++];
    };

    while (pos < size && token == Token::need_more) {
        const char c = data[pos];
        switch (state_) {
        case State::string: {
            // Fast path: run over plain string bytes (most of a large body).
            std::size_t end = pos;
            const auto *bytes = reinterpret_cast<const unsigned char *>(data);
            while (end < size && !kJsonStringStops[bytes[end]]) ++end;
            if (!text_truncated_) {
                const std::size_t room = kMaxText - text_.size();
                const std::size_t run = end - pos;
                text_.append(data + pos, run < room ? run : room);
                if (run > room) text_truncated_ = true;
            }
            offset_ += end - pos;
            pos = end;
            if (pos == size) break;
            if (data[pos] == '"') {
                consume();
                if (in_key_) {
                    state_ = State::colon;
                    token = Token::key;
                } else {
                    token = end_value(Token::string);
                }
            } else if (data[pos] == '\\') {
                consume();
                state_ = State::string_escape;
            } else {
                token = fail(offset_, "control character inside a string");
            }
            break;
        }
        case State::string_escape: {
            char decoded = 0;
            switch (c) {
            case '"': case '\\': case '/': decoded = c; break;
            case 'b': decoded = '\b'; break;
            case 'f': decoded = '\f'; break;
            case 'n': decoded = '\n'; break;
            case 'r': decoded = '\r'; break;
            case 't': decoded = '\t'; break;
            case 'u':
                consume();
                state_ = State::string_unicode;
                unicode_digits_ = 0;
                unicode_value_ = 0;
                continue;
            default:
                token = fail(offset_, "invalid escape in a string");
                continue;
            }
            consume();
            append_text(decoded);
            state_ = State::string;
            break;
        }
        case State::string_unicode: {
            const int v = hex_value(c);
            if (v < 0) {
                token = fail(offset_, "\\u must be followed by four hex digits");
                break;
            }
            consume();
            unicode_value_ = unicode_value_ * 16 + static_cast<unsigned>(v);
            if (++unicode_digits_ == 4) {
                append_code_unit(unicode_value_);
                state_ = State::string;
            }
            break;
        }
        case State::number: {
            const bool digit = is_digit(c);
            bool may_end = false;
            NumberPart next_part = number_part_;
            switch (number_part_) {
            case NumberPart::minus:
                if (digit) next_part = c == '0' ? NumberPart::zero : NumberPart::integer;
                break;
            case NumberPart::zero:
                may_end = true;
                if (c == '.') next_part = NumberPart::fraction0;
                else if (c == 'e' || c == 'E') next_part = NumberPart::exponent0;
                break;
            case NumberPart::integer:
                may_end = true;
                if (c == '.') next_part = NumberPart::fraction0;
                else if (c == 'e' || c == 'E') next_part = NumberPart::exponent0;
                break;
            case NumberPart::fraction0:
                if (digit) next_part = NumberPart::fraction;
                break;
            case NumberPart::fraction:
                may_end = true;
                if (c == 'e' || c == 'E') next_part = NumberPart::exponent0;
                break;
            case NumberPart::exponent0:
                if (c == '+' || c == '-') next_part = NumberPart::exponent_sign;
                else if (digit) next_part = NumberPart::exponent;
                break;
            case NumberPart::exponent_sign:
                if (digit) next_part = NumberPart::exponent;
                break;
            case NumberPart::exponent:
                may_end = true;
                break;
            }
            // Digits continue every part that accepts them; the rest changed part above.
            const bool continues =
                next_part != number_part_ ||
                (digit && (number_part_ == NumberPart::integer ||
                           number_part_ == NumberPart::fraction ||
                           number_part_ == NumberPart::exponent));
            if (continues) {
                consume();
                number_part_ = next_part;
            } else if (may_end) {
                token = end_value(Token::number);  // c belongs to what follows
            } else {
                token = unexpected(offset_, c);
            }
            break;
        }
        case State::literal:
            if (c != literal_[literal_matched_]) {
                token = unexpected(offset_, c);
                break;
            }
            consume();
            if (literal_[++literal_matched_] == '\0')
                token = end_value(literal_[0] == 't'   ? Token::true_value
                                  : literal_[0] == 'f' ? Token::false_value
                                                       : Token::null_value);
            break;
        case State::failed:
            token = Token::error;
            break;
        default:
            // Structural states: whitespace is skipped between tokens.
            if (is_space(c)) {
                consume();
                break;
            }
            switch (state_) {
            case State::value:
                consume();
                token = start_value(c);
                break;
            case State::array_first:
                if (c == ']') {
                    consume();
                    --depth_;
                    token = end_value(Token::array_end);
                } else {
                    consume();
                    token = start_value(c);
                }
                break;
            case State::object_first:
            case State::key:
                if (c == '"') {
                    consume();
                    state_ = State::string;
                    in_key_ = true;
                    text_.clear();
                    text_truncated_ = depth_ > text_depth_;
                } else if (c == '}' && state_ == State::object_first) {
                    consume();
                    --depth_;
                    token = end_value(Token::object_end);
                } else {
                    token = unexpected(offset_, c);
                }
                break;
            case State::colon:
                if (c == ':') {
                    consume();
                    state_ = State::value;
                } else {
                    token = unexpected(offset_, c);
                }
                break;
            case State::after_value:
                if (c == ',') {
                    consume();
                    state_ = in_object() ? State::key : State::value;
                } else if ((c == '}' && in_object()) || (c == ']' && !in_object())) {
                    consume();
                    --depth_;
                    token = end_value(c == '}' ? Token::object_end : Token::array_end);
                } else {
                    token = unexpected(offset_, c);
                }
                break;
            case State::done:
                token = fail(offset_, std::string("unexpected data after the JSON document"));
                break;
            default:
                token = fail(offset_, "internal tokenizer state");
                break;
            }
            break;
        }
    }
    return token;
}

JsonTokenizer::Token JsonTokenizer::finish() {
    switch (state_) {
    case State::failed:
        return Token::error;
    case State::done:
        return Token::need_more;
    case State::number:
        if (depth_ == 0 && (number_part_ == NumberPart::zero ||
                            number_part_ == NumberPart::integer ||
                            number_part_ == NumberPart::fraction ||
                            number_part_ == NumberPart::exponent))
            return end_value(Token::number);
        break;
    default:
        break;
    }
    state_ = State::failed;
    error_ = started_ ? "input ended inside the JSON document" : "no JSON document in the input";
    return Token::error;
}

}  // namespace spendcap
