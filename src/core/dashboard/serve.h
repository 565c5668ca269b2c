// What a spend_cap_dashboard location answers (SPEC section 11): its page
// (index.html with the location's API prefix), the other embedded files by
// basename, with strong ETags computed once at configuration time, the
// conditional GET, and the headers every answer carries.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace spendcap::dashboard {

// The placeholder index.html holds where the API prefix goes.
constexpr std::string_view kApiPrefixPlaceholder = "@API_PREFIX@";

struct Asset {
    std::string_view content_type;
    std::string_view body;  // the page's own string, or an embedded file's text
    std::string etag;       // "\"" + 16 hex digits of the body's SHA-256 + "\""
};

// Everything one location serves, built once when the configuration is read;
// no request computes a digest or copies a file.
class Dashboard {
public:
    // `api_prefix` is valid (api_prefix_problem); a '/' is appended if missing.
    explicit Dashboard(std::string_view api_prefix);
    Dashboard(const Dashboard &) = delete;
    Dashboard &operator=(const Dashboard &) = delete;

    // The asset a request's path names: what follows its last '/' ("" and
    // "index.html" are the page); nullptr when there is none.
    const Asset *asset_for(std::string_view uri_path) const;
    const std::string &page() const { return page_; }

private:
    std::string page_;
    std::optional<Asset> page_asset_;  // none if ui/ had no index.html
    std::map<std::string, Asset, std::less<>> files_;
};

// index.html's text with each placeholder replaced by the prefix (the text as
// it is if it has none).
std::string page_with_prefix(std::string_view index_html, std::string_view normalized_prefix);
// A strong ETag of `body`.
std::string strong_etag(std::string_view body);
// Whether an If-None-Match value (a list of tags, W/ ones compared weakly as
// RFC 9110 asks, or "*") matches `etag`.
bool if_none_match_matches(std::string_view if_none_match, std::string_view etag);

struct Header {
    std::string_view name;
    std::string_view value;
};

struct Answer {
    int status = 200;
    std::string_view content_type;
    std::string_view body;        // empty for a 304
    std::vector<Header> headers;  // all of them, Content-Type and Content-Length aside
};

// The answer to one request: GET and HEAD only (HEAD's body is dropped by
// the server), 304 when If-None-Match matches, 404 for an unknown name.
Answer answer(const Dashboard &dashboard, bool get_or_head, std::string_view uri_path,
              std::optional<std::string_view> if_none_match);

}  // namespace spendcap::dashboard
