// A strict one-pass JSON validator over a whole buffer, that also notes the
// few keys the usage scanner reads. It accepts only what JsonTokenizer
// accepts; when unsure it hands the document back (handled = false).
#include "json/event.h"

#include "json/tokenizer.h"

#include <cstdint>
#include <cstring>

namespace spendcap {

namespace {

constexpr int kMaxFastDepth = 64;  // deeper: the incremental reader

bool is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

class Reader {
public:
    Reader(std::string_view doc, std::size_t max_usage, EventJson &out)
        : p_(doc.data()), end_(doc.data() + doc.size()), max_usage_(max_usage), out_(out) {}

    bool document() {
        space();
        if (p_ == end_ || *p_ != '{') return false;
        if (!object(1, Holder::root)) return false;
        space();
        return p_ == end_;
    }

private:
    // What an object's keys may hold: the root's "usage", "type", "message",
    // "response"; a message's or response's "usage".
    enum class Holder { root, usage_parent, none };

    void space() {
        while (p_ != end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
    }

    // Skips plain string bytes, eight at a time: a word has
    // a stop when a byte is '"' or '\\' (its xor with the pattern has a zero
    // byte) or below 0x20 (the classic has-less-than test).
    void skip_plain() {
        constexpr std::uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
        constexpr bool little_endian = __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__;
        while (little_endian && end_ - p_ >= 8) {
            std::uint64_t w;
            std::memcpy(&w, p_, 8);
            const std::uint64_t quote = w ^ (ones * '"'), backslash = w ^ (ones * '\\');
            const std::uint64_t stops = ((quote - ones) & ~quote) | ((backslash - ones) & ~backslash)
                                        | ((w - ones * 0x20) & ~w);
            if (const std::uint64_t found = stops & highs) {
                // Borrows only flag bytes after a true stop: the lowest
                // flagged byte (the first, little-endian) is the stop.
                p_ += __builtin_ctzll(found) >> 3;
                return;
            }
            p_ += 8;
        }
        while (p_ != end_ && !kJsonStringStops[static_cast<unsigned char>(*p_)]) ++p_;
    }

    // A string at p_ ('"'). `plain`: its content, when it has no escapes.
    bool string(std::string_view &plain, bool &escaped) {
        ++p_;
        const char *begin = p_;
        escaped = false;
        for (;;) {
            skip_plain();
            if (p_ == end_) return false;
            const char c = *p_;
            if (c == '"') {
                plain = std::string_view(begin, static_cast<std::size_t>(p_ - begin));
                ++p_;
                return true;
            }
            if (c != '\\') return false;  // a control character
            escaped = true;
            if (++p_ == end_) return false;
            switch (*p_) {
            case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
                ++p_;
                break;
            case 'u':
                if (end_ - p_ < 5 || !is_hex(p_[1]) || !is_hex(p_[2]) || !is_hex(p_[3]) || !is_hex(p_[4]))
                    return false;
                p_ += 5;
                break;
            default:
                return false;
            }
        }
    }

    bool number() {
        if (*p_ == '-') ++p_;
        if (p_ == end_ || !is_digit(*p_)) return false;
        if (*p_ == '0') {
            ++p_;
        } else {
            while (p_ != end_ && is_digit(*p_)) ++p_;
        }
        if (p_ != end_ && *p_ == '.') {
            ++p_;
            if (p_ == end_ || !is_digit(*p_)) return false;
            while (p_ != end_ && is_digit(*p_)) ++p_;
        }
        if (p_ != end_ && (*p_ == 'e' || *p_ == 'E')) {
            ++p_;
            if (p_ != end_ && (*p_ == '+' || *p_ == '-')) ++p_;
            if (p_ == end_ || !is_digit(*p_)) return false;
            while (p_ != end_ && is_digit(*p_)) ++p_;
        }
        // The tokenizer ends a number at any byte that cannot continue it;
        // what follows is judged as the next token.
        return true;
    }

    bool literal(const char *word, std::size_t size) {
        if (static_cast<std::size_t>(end_ - p_) < size) return false;
        for (std::size_t k = 0; k < size; ++k)
            if (p_[k] != word[k]) return false;
        p_ += size;
        return true;
    }

    bool value(int depth) {
        if (p_ == end_) return false;
        switch (*p_) {
        case '{': return depth < kMaxFastDepth && object(depth + 1, Holder::none);
        case '[': return depth < kMaxFastDepth && array(depth + 1);
        case '"': {
            std::string_view text;
            bool escaped;
            return string(text, escaped);
        }
        case 't': return literal("true", 4);
        case 'f': return literal("false", 5);
        case 'n': return literal("null", 4);
        default: return number();
        }
    }

    bool array(int depth) {
        ++p_;  // '['
        space();
        if (p_ != end_ && *p_ == ']') {
            ++p_;
            return true;
        }
        for (;;) {
            space();
            if (!value(depth)) return false;
            space();
            if (p_ == end_) return false;
            if (*p_ == ']') {
                ++p_;
                return true;
            }
            if (*p_ != ',') return false;
            ++p_;
        }
    }

    // A usage value: an object (noted) or null; anything else is the
    // incremental reader's to report.
    bool usage_value(int depth) {
        if (p_ != end_ && *p_ == 'n') return literal("null", 4);
        if (p_ == end_ || *p_ != '{' || depth >= kMaxFastDepth) return false;
        const char *begin = p_;
        if (!object(depth + 1, Holder::none)) return false;
        const std::size_t size = static_cast<std::size_t>(p_ - begin);
        if (size > max_usage_ || out_.usages == EventJson::kMaxUsages) return false;
        out_.usage[out_.usages++] = std::string_view(begin, size);
        return true;
    }

    bool object(int depth, Holder holder) {
        ++p_;  // '{'
        space();
        if (p_ != end_ && *p_ == '}') {
            ++p_;
            return true;
        }
        for (;;) {
            space();
            if (p_ == end_ || *p_ != '"') return false;
            std::string_view key;
            bool escaped;
            if (!string(key, escaped)) return false;
            // A key the scanner might read, spelt with escapes: its way.
            if (escaped && holder != Holder::none) return false;
            space();
            if (p_ == end_ || *p_ != ':') return false;
            ++p_;
            space();
            bool ok;
            if (holder != Holder::none && key == "usage") {
                ok = usage_value(depth);
            } else if (holder == Holder::root && key == "type") {
                ok = type_value(depth);
            } else if (holder == Holder::root && (key == "message" || key == "response") && p_ != end_
                       && *p_ == '{') {
                ok = depth < kMaxFastDepth && object(depth + 1, Holder::usage_parent);
            } else {
                ok = value(depth);
            }
            if (!ok) return false;
            space();
            if (p_ == end_) return false;
            if (*p_ == '}') {
                ++p_;
                return true;
            }
            if (*p_ != ',') return false;
            ++p_;
        }
    }

    bool type_value(int depth) {
        if (p_ != end_ && *p_ == '"') {
            std::string_view text;
            bool escaped;
            if (!string(text, escaped)) return false;
            if (escaped) return false;  // its decoded text is the tokenizer's to give
            out_.type = EventJson::Type::string;
            out_.type_text = text;
            return true;
        }
        out_.type = EventJson::Type::other;
        out_.type_text = {};
        return value(depth);
    }

    const char *p_;
    const char *const end_;
    const std::size_t max_usage_;
    EventJson &out_;
};

}  // namespace

EventJson scan_event_json(std::string_view doc, std::size_t max_usage) {
    EventJson out;
    Reader reader(doc, max_usage, out);
    if (!reader.document()) return EventJson{};
    out.handled = true;
    return out;
}

}  // namespace spendcap
