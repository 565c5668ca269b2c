// Glob matching with '*' only, by the classic two-pointer walk that backs
// up to the last star: no recursion, so no caller-chosen model name can make
// it deep or exponential.
#include "policy/model_patterns.h"

namespace spendcap {

std::string model_pattern_problem(std::string_view pattern) {
    if (pattern.empty()) return "a model pattern must not be empty";
    if (pattern.size() > kMaxModelPatternBytes)
        return "a model pattern is at most " + std::to_string(kMaxModelPatternBytes) + " bytes";
    for (unsigned char c : pattern)
        if (c <= 0x20 || c >= 0x7f) return "a model pattern holds printable ASCII characters only, without spaces";
    return "";
}

bool model_matches(std::string_view pattern, std::string_view model) {
    std::size_t p = 0, m = 0;
    std::size_t star = std::string_view::npos, star_m = 0;
    while (m < model.size()) {
        if (p < pattern.size() && pattern[p] == '*') {
            star = p++;
            star_m = m;
        } else if (p < pattern.size() && pattern[p] == model[m]) {
            ++p;
            ++m;
        } else if (star != std::string_view::npos) {
            p = star + 1;
            m = ++star_m;
        } else {
            return false;
        }
    }
    while (p < pattern.size() && pattern[p] == '*') ++p;
    return p == pattern.size();
}

std::string encode_pattern(std::string_view pattern) {
    static const char kHex[] = "0123456789ABCDEF";
    std::string out;
    out.reserve(pattern.size());
    for (unsigned char c : pattern) {
        if (c == '%' || c == ':' || c == '{' || c == '}' || c <= 0x20 || c >= 0x7f) {
            out += '%';
            out += kHex[c >> 4];
            out += kHex[c & 15];
        } else {
            out += static_cast<char>(c);
        }
    }
    return out;
}

}  // namespace spendcap
