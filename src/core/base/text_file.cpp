#include "base/text_file.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace spendcap {

FileError::FileError(std::string file, int line, std::string reason)
    : std::runtime_error(file + ":" + std::to_string(line) + ": " + reason),
      file_(std::move(file)),
      line_(line),
      reason_(std::move(reason)) {}

std::optional<std::string> read_text_file(const std::string &path, const std::string &what, std::string &why_not) {
    std::FILE *file = std::fopen(path.c_str(), "rb");
    if (!file) {
        why_not = "cannot open " + what + ": " + std::strerror(errno);
        return std::nullopt;
    }
    std::string text;
    char buffer[65536];
    std::size_t n;
    while ((n = std::fread(buffer, 1, sizeof buffer, file)) > 0) text.append(buffer, n);
    const bool failed = std::ferror(file) != 0;
    const int read_errno = errno;
    std::fclose(file);
    if (failed) {
        why_not = "cannot read " + what + ": " + std::strerror(read_errno);
        return std::nullopt;
    }
    return text;
}

}  // namespace spendcap
