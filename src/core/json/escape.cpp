// JSON string literals of any bytes: escaped, invalid UTF-8 written as U+FFFD.
#include "json/escape.h"

#include <cstdint>
#include <cstdio>

namespace spendcap {

void append_json_string(std::string &out, std::string_view text) {
    out += '"';
    const std::size_t n = text.size();
    for (std::size_t i = 0; i < n;) {
        const unsigned char c = static_cast<unsigned char>(text[i]);
        if (c < 0x80) {
            switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\b': out += "\\b"; break;
            case '\f': out += "\\f"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (c < 0x20 || c == 0x7f) {
                    char escaped[8];
                    std::snprintf(escaped, sizeof escaped, "\\u%04x", c);
                    out += escaped;
                } else {
                    out += static_cast<char>(c);
                }
            }
            ++i;
            continue;
        }
        // Multi-byte sequence: check length, continuation bytes, overlongs,
        // surrogates and the U+10FFFF ceiling before copying it through.
        std::size_t length = 0;
        std::uint32_t code_point = 0;
        if (c >= 0xc2 && c <= 0xdf) {
            length = 2;
            code_point = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            length = 3;
            code_point = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            length = 4;
            code_point = c & 0x07;
        }
        bool valid = length != 0 && i + length <= n;
        for (std::size_t k = 1; valid && k < length; ++k) {
            const unsigned char continuation = static_cast<unsigned char>(text[i + k]);
            if ((continuation & 0xc0) != 0x80) valid = false;
            code_point = (code_point << 6) | (continuation & 0x3f);
        }
        if (valid) {
            if ((length == 3 && code_point < 0x800) || (length == 4 && code_point < 0x10000) ||
                (code_point >= 0xd800 && code_point <= 0xdfff) || code_point > 0x10ffff)
                valid = false;
        }
        if (valid) {
            out.append(text, i, length);
            i += length;
        } else {
            out += "\\ufffd";
            ++i;
        }
    }
    out += '"';
}

}  // namespace spendcap
