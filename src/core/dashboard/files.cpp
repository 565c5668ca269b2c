#include "dashboard/files.h"

namespace spendcap::dashboard {

// What scripts/embed_ui.sh writes (dashboard_files.cpp of the build directory).
struct EmbeddedFile {
    const char *name;
    const char *text;
    unsigned long size;
};
extern const EmbeddedFile kFiles[];
extern const unsigned kFileCount;

const std::vector<UiFile> &ui_files() {
    static const std::vector<UiFile> all = [] {
        std::vector<UiFile> out;
        out.reserve(kFileCount);
        for (unsigned i = 0; i < kFileCount; ++i) {
            out.push_back({kFiles[i].name, std::string_view(kFiles[i].text, kFiles[i].size)});
        }
        return out;
    }();
    return all;
}

const UiFile *find_ui_file(std::string_view name) {
    for (const UiFile &file : ui_files()) {
        if (file.name == name) {
            return &file;
        }
    }
    return nullptr;
}

namespace {

bool ends_with(std::string_view s, std::string_view suffix) {
    return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace

std::string_view content_type_of(std::string_view name) {
    if (ends_with(name, ".html")) return "text/html; charset=utf-8";
    if (ends_with(name, ".js")) return "text/javascript; charset=utf-8";
    if (ends_with(name, ".css")) return "text/css; charset=utf-8";
    if (ends_with(name, ".svg")) return "image/svg+xml";
    if (ends_with(name, ".json")) return "application/json";
    if (ends_with(name, ".md") || ends_with(name, ".txt") || name == "LICENSE") {
        return "text/plain; charset=utf-8";
    }
    return "application/octet-stream";
}

}  // namespace spendcap::dashboard
