// dashboard/: spend_cap_dashboard's prefix, page, lookup, types, ETags and
// answers (SPEC section 11).
#include "dashboard/files.h"
#include "dashboard/prefix.h"
#include "dashboard/serve.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

namespace spendcap::dashboard {
namespace {

namespace fs = std::filesystem;

std::string header_value(const Answer &a, std::string_view name) {
    for (const Header &h : a.headers) {
        if (h.name == name) {
            return std::string(h.value);
        }
    }
    return "<absent>";
}

TEST(DashboardPrefix, AcceptsPathsAndRejectsWhatCouldLeaveTheAttribute) {
    EXPECT_FALSE(api_prefix_problem("/spend-cap/"));
    EXPECT_FALSE(api_prefix_problem("/spend-cap"));
    EXPECT_FALSE(api_prefix_problem("/"));
    EXPECT_FALSE(api_prefix_problem("/a_b-c.d/~x%20/"));
    EXPECT_FALSE(api_prefix_problem("/" + std::string(255, 'a')));
    EXPECT_TRUE(api_prefix_problem("/" + std::string(256, 'a')));
    EXPECT_TRUE(api_prefix_problem(""));
    EXPECT_TRUE(api_prefix_problem("relative/"));
    EXPECT_TRUE(api_prefix_problem("https://example.com/"));
    for (const char *bad : {"/a b/", "/a\"b/", "/a'b/", "/a<b/", "/a>b/", "/a&b/", "/a\\b/", "/a\tb/", "/a\x7f",
                            "/caf\xc3\xa9/"}) {
        EXPECT_TRUE(api_prefix_problem(bad)) << bad;
    }
    EXPECT_NE(api_prefix_problem("/a<b")->find('<'), std::string::npos);  // names the character
}

TEST(DashboardPrefix, NormalizingAppendsOneSlash) {
    EXPECT_EQ(normalized_api_prefix("/spend-cap"), "/spend-cap/");
    EXPECT_EQ(normalized_api_prefix("/spend-cap/"), "/spend-cap/");
    EXPECT_EQ(normalized_api_prefix("/"), "/");
}

TEST(DashboardPage, ThePlaceholderTakesThePrefix) {
    EXPECT_EQ(page_with_prefix(R"(<meta name="spend-cap-api" content="@API_PREFIX@">)", "/api/"),
              R"(<meta name="spend-cap-api" content="/api/">)");
    EXPECT_EQ(page_with_prefix("no placeholder", "/api/"), "no placeholder");
    EXPECT_EQ(page_with_prefix("@API_PREFIX@", "/x/"), "/x/");
    EXPECT_EQ(page_with_prefix("", "/x/"), "");
}

TEST(DashboardPage, TheLocationsPageIsTheEmbeddedIndexWithItsPrefix) {
    const UiFile *index = find_ui_file("index.html");
    ASSERT_NE(index, nullptr);
    Dashboard dashboard("/spend-cap");
    EXPECT_EQ(dashboard.page(), page_with_prefix(index->text, "/spend-cap/"));
    EXPECT_EQ(dashboard.page().find(kApiPrefixPlaceholder), std::string::npos);
}

TEST(DashboardFiles, TheTableHoldsThePageTheAppAndUplot) {
    for (const char *name :
         {"index.html", "app.js", "style.css", "favicon.svg", "uPlot.iife.min.js", "uPlot.min.css", "LICENSE"}) {
        EXPECT_NE(find_ui_file(name), nullptr) << name;
    }
    EXPECT_EQ(find_ui_file("nope.js"), nullptr);
    std::set<std::string_view> names;
    for (const UiFile &file : ui_files()) {
        EXPECT_TRUE(names.insert(file.name).second) << file.name << " twice";
    }
}

TEST(DashboardFiles, EachEmbeddedTextIsTheFileByteForByte) {
    std::size_t compared = 0;
    for (const fs::directory_entry &entry : fs::recursive_directory_iterator(SPEND_CAP_UI_DIR)) {
        const std::string name = entry.path().filename().string();
        if (!entry.is_regular_file() || name.front() == '.') {
            continue;
        }
        std::ifstream in(entry.path(), std::ios::binary);
        std::ostringstream text;
        text << in.rdbuf();
        const UiFile *file = find_ui_file(name);
        ASSERT_NE(file, nullptr) << entry.path();
        EXPECT_EQ(file->text, text.str()) << entry.path();
        ++compared;
    }
    EXPECT_EQ(compared, ui_files().size());
}

TEST(DashboardFiles, ContentTypesByExtension) {
    EXPECT_EQ(content_type_of("index.html"), "text/html; charset=utf-8");
    EXPECT_EQ(content_type_of("app.js"), "text/javascript; charset=utf-8");
    EXPECT_EQ(content_type_of("uPlot.iife.min.js"), "text/javascript; charset=utf-8");
    EXPECT_EQ(content_type_of("style.css"), "text/css; charset=utf-8");
    EXPECT_EQ(content_type_of("favicon.svg"), "image/svg+xml");
    EXPECT_EQ(content_type_of("data.json"), "application/json");
    EXPECT_EQ(content_type_of("VERSION.md"), "text/plain; charset=utf-8");
    EXPECT_EQ(content_type_of("notes.txt"), "text/plain; charset=utf-8");
    EXPECT_EQ(content_type_of("LICENSE"), "text/plain; charset=utf-8");
    EXPECT_EQ(content_type_of("font.woff2"), "application/octet-stream");
    EXPECT_EQ(content_type_of("js"), "application/octet-stream");
}

TEST(DashboardLookup, ThePageTheFlatVendorFilesAndNothingElse) {
    Dashboard dashboard("/spend-cap/");
    const Asset *root = dashboard.asset_for("/spend-cap/ui/");
    ASSERT_NE(root, nullptr);
    EXPECT_EQ(root->body, dashboard.page());
    EXPECT_EQ(root->content_type, "text/html; charset=utf-8");
    EXPECT_EQ(dashboard.asset_for("/spend-cap/ui/index.html"), root);
    EXPECT_EQ(dashboard.asset_for("/"), root);

    const Asset *uplot = dashboard.asset_for("/spend-cap/ui/uPlot.iife.min.js");
    ASSERT_NE(uplot, nullptr);
    EXPECT_EQ(uplot->body, find_ui_file("uPlot.iife.min.js")->text);
    EXPECT_EQ(uplot->content_type, "text/javascript; charset=utf-8");
    ASSERT_NE(dashboard.asset_for("/spend-cap/ui/uPlot.min.css"), nullptr);
    ASSERT_NE(dashboard.asset_for("/spend-cap/ui/app.js"), nullptr);
    EXPECT_EQ(dashboard.asset_for("/spend-cap/ui/app.js")->body, find_ui_file("app.js")->text);

    EXPECT_EQ(dashboard.asset_for("/spend-cap/ui/nope.js"), nullptr);
    EXPECT_EQ(dashboard.asset_for("/spend-cap/ui/vendor"), nullptr);
    EXPECT_EQ(dashboard.asset_for("/spend-cap/ui/app.js/"), root);  // the name is after the last '/'
}

TEST(DashboardEtag, StrongStableAndPerBody) {
    const std::string etag = strong_etag("body");
    EXPECT_EQ(etag.size(), 18u);
    EXPECT_EQ(etag.front(), '"');
    EXPECT_EQ(etag.back(), '"');
    EXPECT_EQ(etag.find_first_not_of("0123456789abcdef", 1), 17u);
    EXPECT_EQ(strong_etag("body"), etag);
    EXPECT_NE(strong_etag("body2"), etag);

    Dashboard a("/one/");
    Dashboard again("/one/");
    Dashboard b("/two/");
    EXPECT_EQ(a.asset_for("/")->etag, again.asset_for("/")->etag);
    EXPECT_NE(a.asset_for("/")->etag, b.asset_for("/")->etag);  // each prefix its own page
    EXPECT_EQ(a.asset_for("/app.js")->etag, b.asset_for("/app.js")->etag);
    EXPECT_EQ(a.asset_for("/app.js")->etag, strong_etag(find_ui_file("app.js")->text));
}

TEST(DashboardEtag, IfNoneMatchListsStarsAndWeakTags) {
    const std::string etag = "\"0123456789abcdef\"";
    EXPECT_TRUE(if_none_match_matches(etag, etag));
    EXPECT_TRUE(if_none_match_matches("*", etag));
    EXPECT_TRUE(if_none_match_matches("W/\"0123456789abcdef\"", etag));
    EXPECT_TRUE(if_none_match_matches("\"aaaa\", \"0123456789abcdef\"", etag));
    EXPECT_TRUE(if_none_match_matches("\"aaaa\",W/\"0123456789abcdef\" ,\"b\"", etag));
    EXPECT_FALSE(if_none_match_matches("\"aaaa\"", etag));
    EXPECT_FALSE(if_none_match_matches("0123456789abcdef", etag));  // unquoted is another tag
    EXPECT_FALSE(if_none_match_matches("", etag));
    EXPECT_FALSE(if_none_match_matches(" , ", etag));
}

TEST(DashboardAnswer, OkWithEveryHeader) {
    Dashboard dashboard("/spend-cap/");
    Answer a = answer(dashboard, true, "/spend-cap/ui/", std::nullopt);
    EXPECT_EQ(a.status, 200);
    EXPECT_EQ(a.body, dashboard.page());
    EXPECT_EQ(a.content_type, "text/html; charset=utf-8");
    EXPECT_EQ(header_value(a, "ETag"), dashboard.asset_for("/")->etag);
    EXPECT_EQ(header_value(a, "Cache-Control"), "no-cache");
    EXPECT_EQ(header_value(a, "X-Content-Type-Options"), "nosniff");
    EXPECT_EQ(header_value(a, "Referrer-Policy"), "no-referrer");
    EXPECT_EQ(header_value(a, "X-Frame-Options"), "DENY");
    EXPECT_EQ(header_value(a, "Cross-Origin-Opener-Policy"), "same-origin");
    EXPECT_EQ(header_value(a, "Content-Security-Policy"),
              "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
              "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'");
    EXPECT_EQ(header_value(a, "Allow"), "<absent>");
}

TEST(DashboardAnswer, NotModifiedNotFoundNotAllowed) {
    Dashboard dashboard("/spend-cap/");
    const std::string etag = dashboard.asset_for("/x/style.css")->etag;
    Answer same = answer(dashboard, true, "/x/style.css", etag);
    EXPECT_EQ(same.status, 304);
    EXPECT_TRUE(same.body.empty());
    EXPECT_EQ(header_value(same, "ETag"), etag);
    EXPECT_EQ(header_value(same, "Cache-Control"), "no-cache");
    EXPECT_EQ(answer(dashboard, true, "/x/style.css", std::string_view("\"0000000000000000\"")).status, 200);

    Answer missing = answer(dashboard, true, "/x/nope.js", std::nullopt);
    EXPECT_EQ(missing.status, 404);
    EXPECT_EQ(missing.content_type, "text/plain; charset=utf-8");
    EXPECT_FALSE(missing.body.empty());
    EXPECT_EQ(header_value(missing, "ETag"), "<absent>");
    EXPECT_EQ(header_value(missing, "X-Frame-Options"), "DENY");
    EXPECT_EQ(answer(dashboard, true, "/x/nope.js", std::string_view("*")).status, 404);

    Answer post = answer(dashboard, false, "/x/", std::nullopt);
    EXPECT_EQ(post.status, 405);
    EXPECT_EQ(header_value(post, "Allow"), "GET, HEAD");
    EXPECT_EQ(header_value(post, "Content-Security-Policy").substr(0, 19), "default-src 'none';");
}

}  // namespace
}  // namespace spendcap::dashboard
