// What a response's Content-Type and Content-Encoding headers tell the usage
// scanner: the body's format and how it is compressed.
#include "usage/usage.h"

namespace spendcap {

namespace {

bool is_ows(char c) { return c == ' ' || c == '\t'; }

std::string_view trim_ows(std::string_view s) {
    while (!s.empty() && is_ows(s.front())) s.remove_prefix(1);
    while (!s.empty() && is_ows(s.back())) s.remove_suffix(1);
    return s;
}

char ascii_lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool equals_ignoring_case(std::string_view a, std::string_view lower) {
    if (a.size() != lower.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (ascii_lower(a[i]) != lower[i]) return false;
    return true;
}

}  // namespace

BodyFormat body_format_for(std::string_view content_type) {
    const std::string_view media_type = trim_ows(content_type.substr(0, content_type.find(';')));
    return equals_ignoring_case(media_type, "text/event-stream") ? BodyFormat::sse : BodyFormat::json;
}

std::optional<ContentEncoding> content_encoding_for(std::string_view header_value) {
    const std::string_view coding = trim_ows(header_value);
    if (coding.empty() || equals_ignoring_case(coding, "identity")) return ContentEncoding::identity;
    if (equals_ignoring_case(coding, "gzip") || equals_ignoring_case(coding, "x-gzip"))
        return ContentEncoding::gzip;
    if (equals_ignoring_case(coding, "deflate")) return ContentEncoding::deflate;
    return std::nullopt;
}

}  // namespace spendcap
