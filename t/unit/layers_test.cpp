// The core's folders are layers: each includes only its own folder and the
// folders before it in kLayers (docs/ARCHITECTURE.md), and none includes an
// NGINX header. A new include that breaks the order fails here.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

const std::vector<std::string> kLayers = {"base",  "json",     "policy",     "request", "usage",
                                          "redis", "identity", "accounting", "http",    "admin",
                                          "dashboard"};

std::ptrdiff_t rank_of(const std::string &layer) {
    auto at = std::find(kLayers.begin(), kLayers.end(), layer);
    return at == kLayers.end() ? -1 : at - kLayers.begin();
}

}  // namespace

TEST(Layers, EveryFolderIsALayer) {
    for (const fs::directory_entry &entry : fs::directory_iterator(SPEND_CAP_CORE_DIR)) {
        if (entry.is_directory()) {
            EXPECT_GE(rank_of(entry.path().filename().string()), 0)
                << entry.path() << " is not in kLayers (and docs/ARCHITECTURE.md)";
        }
    }
}

TEST(Layers, IncludesGoOnlyDownward) {
    const std::regex include(R"(^\s*#\s*include\s*[<"]([^">]+)[">])");
    std::size_t files = 0;
    for (const fs::directory_entry &entry : fs::recursive_directory_iterator(SPEND_CAP_CORE_DIR)) {
        const std::string ext = entry.path().extension().string();
        if (!entry.is_regular_file() || (ext != ".h" && ext != ".cpp")) {
            continue;
        }
        ++files;
        const std::string layer = fs::relative(entry.path(), SPEND_CAP_CORE_DIR).begin()->string();
        const std::ptrdiff_t rank = rank_of(layer);
        std::ifstream in(entry.path());
        std::string line;
        std::smatch m;
        while (std::getline(in, line)) {
            if (!std::regex_search(line, m, include)) {
                continue;
            }
            const std::string target = m[1];
            EXPECT_EQ(target.rfind("ngx", 0), std::string::npos) << entry.path() << " includes " << target;
            const std::size_t slash = target.find('/');
            if (slash == std::string::npos) {
                continue;  // a system or library header, or one of its own folder
            }
            const std::ptrdiff_t used = rank_of(target.substr(0, slash));
            if (used < 0) {
                continue;  // a library's own path (gtest/..., hiredis/...)
            }
            EXPECT_LE(used, rank) << entry.path() << " (" << layer << ") includes " << target
                                  << ", a layer above it";
        }
    }
    EXPECT_GT(files, 20u);
}
