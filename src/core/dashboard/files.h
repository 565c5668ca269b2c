// The dashboard's files, embedded at build time from ui/ by
// scripts/embed_ui.sh (vendor/ included), found by basename, and the
// Content-Type each is served with.
#pragma once

#include <string_view>
#include <vector>

namespace spendcap::dashboard {

struct UiFile {
    std::string_view name;  // its basename: the dashboard serves its files flat
    std::string_view text;
};

// Every embedded file, in the generator's order (sorted by path).
const std::vector<UiFile> &ui_files();
// The embedded file named `name`, or nullptr.
const UiFile *find_ui_file(std::string_view name);
// The Content-Type of a file by its name's extension (LICENSE as text).
std::string_view content_type_of(std::string_view name);

}  // namespace spendcap::dashboard
