// The one-pass reader of json_fields.h: a validator as strict as jansson
// that keeps a few named members and steps aside wherever it is unsure.
#include "json/fields.h"

#include <cstring>

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

using Value = JsonField;

// Which of the names a key is (its index), or -1.
template <std::size_t N>
int index_of(const std::array<std::string_view, N> &names, std::string_view key) {
    for (std::size_t i = 0; i < N && !names[i].empty(); ++i)
        if (names[i] == key) return static_cast<int>(i);
    return -1;
}

class Scanner {
public:
    Scanner(std::string_view doc, const JsonFieldNames &names,
            std::array<JsonField, JsonFieldNames::kMaxRoot> &root,
            std::array<std::array<JsonField, JsonFieldNames::kMaxMembers>, JsonFieldNames::kMaxNested> &nested)
        : p_(reinterpret_cast<const unsigned char *>(doc.data())), end_(p_ + doc.size()), names_(names),
          root_(root), nested_(nested) {}

    bool run() {
        skip_space();
        if (p_ == end_ || *p_ != '{') return false;
        if (!object(1, -1)) return false;
        skip_space();
        return p_ == end_;
    }

private:
    void skip_space() {
        while (p_ != end_ && is_space(*p_)) ++p_;
    }

    // After a member or an element: ',' (more follow) or `close` (the end).
    enum class Next { more, end, bad };
    Next after_item(unsigned char close) {
        skip_space();
        if (p_ == end_) return Next::bad;
        if (*p_ == ',') {
            ++p_;
            skip_space();
            return Next::more;
        }
        if (*p_ != close) return Next::bad;
        ++p_;
        return Next::end;
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

    // Any value at p_ (space skipped), in a container at `depth`; `nest`:
    // which nested object (names_.nested) it is, if it is one (-1: none).
    bool value(Value *out, std::size_t depth, int nest = -1) {
        if (p_ == end_) return false;
        const unsigned char c = *p_;
        if (c == '"') return string(out, false);
        if (c == '{') {
            if (out != nullptr) out->kind = Value::Kind::object;
            if (nest >= 0) nested_[nest] = {};  // a later one replaces all of an earlier one
            return object(depth + 1, nest);
        }
        if (c == '[') {
            if (out != nullptr) out->kind = Value::Kind::other;
            return array(depth + 1);
        }
        if (c == '-' || is_digit(c)) return number(out);
        return literal(out);
    }

    // An object at p_ ('{'), at `depth` (the root is 1); `nest`: which
    // nested object it is (-1: none).
    bool object(std::size_t depth, int nest) {
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
            // Where names are compared, as written: a key with an escape
            // could spell one of them.
            const bool compared = depth == 1 || nest >= 0;
            if (compared && key.escaped) return false;
            skip_space();
            if (p_ == end_ || *p_ != ':') return false;
            ++p_;
            skip_space();
            Value *kept = nullptr;
            int inner = -1;
            if (depth == 1) {
                const int i = index_of(names_.root, key.text);
                if (i >= 0) kept = &root_[i];
                for (std::size_t k = 0; k < JsonFieldNames::kMaxNested && inner < 0; ++k)
                    if (!names_.nested[k].object.empty() && names_.nested[k].object == key.text)
                        inner = static_cast<int>(k);
            } else if (nest >= 0) {
                const int i = index_of(names_.nested[nest].members, key.text);
                if (i >= 0) kept = &nested_[nest][i];
            }
            Value scratch;
            if (kept == nullptr && inner >= 0) kept = &scratch;
            if (kept != nullptr) *kept = Value{};
            if (!value(kept, depth, inner)) return false;
            if (inner >= 0 && kept->kind != Value::Kind::object) nested_[inner] = {};  // replaced by a non-object
            const Next next = after_item('}');
            if (next != Next::more) return next == Next::end;
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
            const Next next = after_item(']');
            if (next != Next::more) return next == Next::end;
        }
    }

    const unsigned char *p_;
    const unsigned char *end_;
    const JsonFieldNames &names_;
    std::array<JsonField, JsonFieldNames::kMaxRoot> &root_;
    std::array<std::array<JsonField, JsonFieldNames::kMaxMembers>, JsonFieldNames::kMaxNested> &nested_;
};

}  // namespace

bool JsonFieldReader::read(std::string_view document) {
    root_ = {};
    nested_ = {};
    return Scanner(document, names_, root_, nested_).run();
}

}  // namespace spendcap
