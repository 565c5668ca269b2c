// One pass over a request body that validates it as strictly as jansson and
// keeps only the root's members parse_request_body reads. A body it is not
// sure of goes to jansson, so it never has to explain an error.
#include "request_scan.h"

#include <cstdint>
#include <cstring>
#include <vector>

namespace spendcap {

namespace {

constexpr std::size_t kMaxDepth = 512;  // jansson's own limit is 2048

bool is_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
bool is_hex(unsigned char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

unsigned hex_value(const unsigned char *p) {
    unsigned v = 0;
    for (int i = 0; i < 4; ++i) {
        const unsigned char c = p[i];
        v = v * 16 + (is_digit(c) ? c - '0' : (c | 0x20) - 'a' + 10);
    }
    return v;
}

// A member's value, as far as the fields of interest need it.
struct Value {
    enum class Kind { null, boolean, integer, string, object, other } kind = Kind::other;
    bool boolean = false;
    std::int64_t integer = 0;
    std::string_view text;  // a string without escapes
    bool escaped = false;
};

class Scanner {
public:
    explicit Scanner(std::string_view body)
        : p_(reinterpret_cast<const unsigned char *>(body.data())), end_(p_ + body.size()) {}

    std::optional<RequestInfo> run() {
        skip_space();
        if (p_ == end_ || *p_ != '{') return std::nullopt;
        if (!object(1)) return std::nullopt;
        skip_space();
        if (p_ != end_) return std::nullopt;
        return finish();
    }

private:
    // The root's fields of interest, each as its last occurrence left it.
    struct Seen {
        bool present = false;
        Value value;
    };
    Seen model_, max_tokens_[3], choices_[2], stream_, options_;
    Seen include_usage_;  // of the last stream_options object

    void skip_space() {
        while (p_ != end_ && is_space(*p_)) ++p_;
    }

    // Strict UTF-8 (as jansson: no overlongs, no surrogates, at most U+10FFFF).
    bool utf8() {
        const unsigned char c = *p_;
        std::size_t n;
        unsigned min;
        unsigned v;
        if (c >= 0xC2 && c <= 0xDF) {
            n = 1, min = 0x80, v = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 2, min = 0x800, v = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3, min = 0x10000, v = c & 0x07;
        } else {
            return false;
        }
        if (static_cast<std::size_t>(end_ - p_) <= n) return false;
        for (std::size_t i = 1; i <= n; ++i) {
            if ((p_[i] & 0xC0) != 0x80) return false;
            v = (v << 6) | (p_[i] & 0x3F);
        }
        if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return false;
        p_ += n + 1;
        return true;
    }

    // A string at p_ ('"'); `key`: a NUL (\u0000) is refused there, as jansson does.
    bool string(Value *out, bool key) {
        ++p_;
        const unsigned char *start = p_;
        bool escaped = false;
        for (;;) {
            // plain ASCII runs first
            while (p_ != end_ && *p_ >= 0x20 && *p_ < 0x80 && *p_ != '"' && *p_ != '\\') ++p_;
            if (p_ == end_) return false;
            const unsigned char c = *p_;
            if (c == '"') break;
            if (c < 0x20) return false;  // a control character
            if (c >= 0x80) {
                if (!utf8()) return false;
                continue;
            }
            // an escape
            escaped = true;
            if (end_ - p_ < 2) return false;
            const unsigned char e = p_[1];
            if (e == 'u') {
                if (end_ - p_ < 6 || !is_hex(p_[2]) || !is_hex(p_[3]) || !is_hex(p_[4]) || !is_hex(p_[5]))
                    return false;
                const unsigned v = hex_value(p_ + 2);
                p_ += 6;
                if (v == 0 && key) return false;
                if (v >= 0xDC00 && v <= 0xDFFF) return false;  // a lone low surrogate
                if (v >= 0xD800 && v <= 0xDBFF) {              // must pair with a low one
                    if (end_ - p_ < 6 || p_[0] != '\\' || p_[1] != 'u' || !is_hex(p_[2]) || !is_hex(p_[3])
                        || !is_hex(p_[4]) || !is_hex(p_[5]))
                        return false;
                    const unsigned low = hex_value(p_ + 2);
                    if (low < 0xDC00 || low > 0xDFFF) return false;
                    p_ += 6;
                }
                continue;
            }
            if (e != '"' && e != '\\' && e != '/' && e != 'b' && e != 'f' && e != 'n' && e != 'r' && e != 't')
                return false;
            p_ += 2;
        }
        if (out != nullptr) {
            out->kind = Value::Kind::string;
            out->text = std::string_view(reinterpret_cast<const char *>(start), p_ - start);
            out->escaped = escaped;
        }
        ++p_;
        return true;
    }

    // A number at p_; only those jansson certainly reads without an error.
    bool number(Value *out) {
        const unsigned char *start = p_;
        const bool negative = *p_ == '-';
        if (negative) ++p_;
        if (p_ == end_ || !is_digit(*p_)) return false;
        if (*p_ == '0') {
            ++p_;
            if (p_ != end_ && is_digit(*p_)) return false;
        } else {
            while (p_ != end_ && is_digit(*p_)) ++p_;
        }
        const std::size_t int_digits = p_ - start - (negative ? 1 : 0);
        bool real = false;
        if (p_ != end_ && *p_ == '.') {
            real = true;
            ++p_;
            if (p_ == end_ || !is_digit(*p_)) return false;
            while (p_ != end_ && is_digit(*p_)) ++p_;
        }
        if (p_ != end_ && (*p_ == 'e' || *p_ == 'E')) {
            real = true;
            ++p_;
            if (p_ != end_ && (*p_ == '+' || *p_ == '-')) ++p_;
            const unsigned char *exp = p_;
            while (p_ != end_ && is_digit(*p_)) ++p_;
            if (p_ == exp) return false;
            if (p_ - exp > 2) return false;  // |exponent| >= 100: might overflow a double
        }
        if (real) {
            if (p_ - start > 200) return false;  // with an exponent below 100: below 1e300
            if (out != nullptr) out->kind = Value::Kind::other;
            return true;
        }
        if (int_digits > 18) return false;  // jansson refuses beyond int64
        if (out != nullptr) {
            std::int64_t v = 0;
            for (const unsigned char *d = start + (negative ? 1 : 0); d != p_; ++d) v = v * 10 + (*d - '0');
            out->kind = Value::Kind::integer;
            out->integer = negative ? -v : v;
        }
        return true;
    }

    // true / false / null, followed by a delimiter (jansson reads a word).
    bool literal(Value *out) {
        static const struct {
            const char *word;
            std::size_t size;
            Value::Kind kind;
            bool value;
        } words[] = {{"true", 4, Value::Kind::boolean, true},
                     {"false", 5, Value::Kind::boolean, false},
                     {"null", 4, Value::Kind::null, false}};
        for (const auto &w : words) {
            if (static_cast<std::size_t>(end_ - p_) >= w.size && std::memcmp(p_, w.word, w.size) == 0) {
                const unsigned char *after = p_ + w.size;
                if (after != end_ && !is_space(*after) && *after != ',' && *after != '}' && *after != ']')
                    return false;
                p_ = after;
                if (out != nullptr) {
                    out->kind = w.kind;
                    out->boolean = w.value;
                }
                return true;
            }
        }
        return false;
    }

    // Any value at p_ (space skipped); `depth` of the container holding it.
    // `options`: the value is the root's stream_options.
    bool value(Value *out, std::size_t depth, bool options = false) {
        if (p_ == end_) return false;
        const unsigned char c = *p_;
        if (c == '"') return string(out, false);
        if (c == '{') {
            if (out != nullptr) out->kind = Value::Kind::object;
            if (options) include_usage_ = Seen{};  // a later stream_options replaces an earlier one
            return object(depth + 1, options);
        }
        if (c == '[') {
            if (out != nullptr) out->kind = Value::Kind::other;
            return array(depth + 1);
        }
        if (c == '-' || is_digit(c)) return number(out);
        return literal(out);
    }

    Seen *field_of(std::string_view key) {
        if (key == "model") return &model_;
        if (key == "max_tokens") return &max_tokens_[0];
        if (key == "max_completion_tokens") return &max_tokens_[1];
        if (key == "max_output_tokens") return &max_tokens_[2];
        if (key == "n") return &choices_[0];
        if (key == "best_of") return &choices_[1];
        if (key == "stream") return &stream_;
        if (key == "stream_options") return &options_;
        return nullptr;
    }

    // An object at p_ ('{'), at `depth`: the root is 1, the root's
    // stream_options (`options`) 2.
    bool object(std::size_t depth, bool options = false) {
        if (depth > kMaxDepth) return false;
        ++p_;
        skip_space();
        if (p_ != end_ && *p_ == '}') {
            ++p_;
            return true;
        }
        for (;;) {
            if (p_ == end_ || *p_ != '"') return false;
            Value key;
            if (!string(&key, true)) return false;
            // Keys that matter are compared as written: one with an escape
            // could spell one of them.
            const bool tracked = depth == 1 || options;
            if (tracked && key.escaped) return false;
            skip_space();
            if (p_ == end_ || *p_ != ':') return false;
            ++p_;
            skip_space();
            Seen *seen = nullptr;
            if (depth == 1) {
                seen = field_of(key.text);
            } else if (options && key.text == "include_usage") {
                seen = &include_usage_;
            }
            if (seen != nullptr) {
                seen->present = true;
                seen->value = Value{};
                if (!value(&seen->value, depth, depth == 1 && seen == &options_)) return false;
            } else if (!value(nullptr, depth)) {
                return false;
            }
            skip_space();
            if (p_ == end_) return false;
            if (*p_ == ',') {
                ++p_;
                skip_space();
                continue;
            }
            if (*p_ == '}') {
                ++p_;
                return true;
            }
            return false;
        }
    }

    bool array(std::size_t depth) {
        if (depth > kMaxDepth) return false;
        ++p_;
        skip_space();
        if (p_ != end_ && *p_ == ']') {
            ++p_;
            return true;
        }
        for (;;) {
            if (!value(nullptr, depth)) return false;
            skip_space();
            if (p_ == end_) return false;
            if (*p_ == ',') {
                ++p_;
                skip_space();
                continue;
            }
            if (*p_ == ']') {
                ++p_;
                return true;
            }
            return false;
        }
    }

    // What parse_request_body would make of the fields, or nullopt where it
    // would refuse the body (jansson then says why) or the form is not plain.
    std::optional<RequestInfo> finish() const {
        RequestInfo info;
        if (!model_.present || model_.value.kind != Value::Kind::string || model_.value.escaped
            || model_.value.text.empty())
            return std::nullopt;
        info.model.assign(model_.value.text);
        for (const Seen &bound : max_tokens_) {
            if (!bound.present || bound.value.kind == Value::Kind::null) continue;
            if (bound.value.kind != Value::Kind::integer || bound.value.integer < 0) return std::nullopt;
            if (!info.max_output_tokens || bound.value.integer > *info.max_output_tokens)
                info.max_output_tokens = bound.value.integer;
        }
        for (const Seen &choices : choices_) {
            if (!choices.present || choices.value.kind == Value::Kind::null) continue;
            if (choices.value.kind != Value::Kind::integer || choices.value.integer < 1) return std::nullopt;
            if (choices.value.integer > info.choices) info.choices = choices.value.integer;
        }
        if (stream_.present && stream_.value.kind != Value::Kind::null) {
            if (stream_.value.kind != Value::Kind::boolean) return std::nullopt;
            info.stream = stream_.value.boolean;
        }
        if (options_.present && options_.value.kind != Value::Kind::null) {
            if (options_.value.kind != Value::Kind::object) return std::nullopt;
            if (include_usage_.present && include_usage_.value.kind != Value::Kind::null) {
                if (include_usage_.value.kind != Value::Kind::boolean) return std::nullopt;
                info.include_usage = include_usage_.value.boolean;
            }
        }
        return info;
    }

    const unsigned char *p_;
    const unsigned char *end_;
};

}  // namespace

std::optional<RequestInfo> scan_request_body(std::string_view body) {
    try {
        return Scanner(body).run();
    } catch (...) {
        return std::nullopt;  // out of memory copying the model: jansson will say so
    }
}

}  // namespace spendcap
