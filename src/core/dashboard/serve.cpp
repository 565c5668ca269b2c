#include "dashboard/serve.h"

#include "base/digest.h"
#include "dashboard/files.h"
#include "dashboard/prefix.h"

namespace spendcap::dashboard {

namespace {

constexpr std::string_view kPageName = "index.html";

// On every answer: revalidate with the ETag each time (a new module's files
// show at once), nothing from another origin, not framed, not sniffed.
const Header kCommonHeaders[] = {
    {"Cache-Control", "no-cache"},
    {"Content-Security-Policy",
     "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
     "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"},
    {"X-Content-Type-Options", "nosniff"},
    {"Referrer-Policy", "no-referrer"},
    {"X-Frame-Options", "DENY"},
    {"Cross-Origin-Opener-Policy", "same-origin"},
};

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

Answer plain(int status, std::string_view body) {
    Answer a;
    a.status = status;
    a.content_type = "text/plain; charset=utf-8";
    a.body = body;
    a.headers.assign(std::begin(kCommonHeaders), std::end(kCommonHeaders));
    return a;
}

}  // namespace

std::string page_with_prefix(std::string_view index_html, std::string_view normalized_prefix) {
    std::string out;
    out.reserve(index_html.size() + normalized_prefix.size());
    std::size_t from = 0;
    for (std::size_t at; (at = index_html.find(kApiPrefixPlaceholder, from)) != std::string_view::npos;) {
        out.append(index_html.substr(from, at - from));
        out.append(normalized_prefix);
        from = at + kApiPrefixPlaceholder.size();
    }
    out.append(index_html.substr(from));
    return out;
}

std::string strong_etag(std::string_view body) {
    return "\"" + sha256_hex(body).substr(0, 16) + "\"";
}

bool if_none_match_matches(std::string_view if_none_match, std::string_view etag) {
    std::string_view rest = if_none_match;
    while (!rest.empty()) {
        const std::size_t comma = rest.find(',');
        std::string_view tag = trim(rest.substr(0, comma));
        rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
        if (tag == "*") {
            return true;
        }
        if (tag.substr(0, 2) == "W/") {
            tag.remove_prefix(2);  // If-None-Match compares weakly: W/"x" matches "x"
        }
        if (!tag.empty() && tag == etag) {
            return true;
        }
    }
    return false;
}

Dashboard::Dashboard(std::string_view api_prefix) {
    for (const UiFile &file : ui_files()) {
        if (file.name == kPageName) {
            page_ = page_with_prefix(file.text, normalized_api_prefix(api_prefix));
            page_asset_ = Asset{content_type_of(kPageName), page_, strong_etag(page_)};
        } else {
            files_.emplace(std::string(file.name), Asset{content_type_of(file.name), file.text, strong_etag(file.text)});
        }
    }
}

const Asset *Dashboard::asset_for(std::string_view uri_path) const {
    const std::size_t slash = uri_path.rfind('/');
    const std::string_view name = slash == std::string_view::npos ? uri_path : uri_path.substr(slash + 1);
    if (name.empty() || name == kPageName) {
        return page_asset_ ? &*page_asset_ : nullptr;
    }
    auto found = files_.find(name);
    return found != files_.end() ? &found->second : nullptr;
}

Answer answer(const Dashboard &dashboard, bool get_or_head, std::string_view uri_path,
              std::optional<std::string_view> if_none_match) {
    if (!get_or_head) {
        Answer a = plain(405, "method not allowed: GET or HEAD\n");
        a.headers.push_back({"Allow", "GET, HEAD"});
        return a;
    }
    const Asset *asset = dashboard.asset_for(uri_path);
    if (asset == nullptr) {
        return plain(404, "not found\n");
    }
    Answer a;
    a.content_type = asset->content_type;
    a.headers.assign(std::begin(kCommonHeaders), std::end(kCommonHeaders));
    a.headers.push_back({"ETag", asset->etag});
    if (if_none_match && if_none_match_matches(*if_none_match, asset->etag)) {
        a.status = 304;
        return a;
    }
    a.status = 200;
    a.body = asset->body;
    return a;
}

}  // namespace spendcap::dashboard
