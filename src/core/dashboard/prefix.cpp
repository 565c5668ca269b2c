#include "dashboard/prefix.h"

namespace spendcap::dashboard {

std::optional<std::string> api_prefix_problem(std::string_view prefix) {
    if (prefix.empty() || prefix.front() != '/') {
        return "the API prefix must start with '/'";
    }
    if (prefix.size() > kMaxApiPrefixBytes) {
        return "the API prefix is longer than 256 bytes";
    }
    for (char c : prefix) {
        const auto byte = static_cast<unsigned char>(c);
        if (byte <= 0x20 || byte >= 0x7f) {
            return "the API prefix must be printable ASCII without spaces";
        }
        switch (c) {
        case '"':
        case '\'':
        case '<':
        case '>':
        case '&':
        case '\\':
            return std::string("the API prefix must not hold '") + c + "' (it is written into the page's HTML)";
        default:
            break;
        }
    }
    return std::nullopt;
}

std::string normalized_api_prefix(std::string_view prefix) {
    std::string out(prefix);
    if (out.empty() || out.back() != '/') {
        out += '/';
    }
    return out;
}

}  // namespace spendcap::dashboard
