// Files the programs read whole (the policy, the relay's file), and the error
// that names where in one a mistake is.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>

namespace spendcap {

// A bad file: what() is "FILE:LINE: REASON" (the line 1-based, 0 when the
// mistake has no line, such as a file that cannot be read).
class FileError : public std::runtime_error {
public:
    FileError(std::string file, int line, std::string reason);
    const std::string &file() const { return file_; }
    int line() const { return line_; }
    const std::string &reason() const { return reason_; }

private:
    std::string file_;
    int line_;
    std::string reason_;
};

// The file's bytes, or nullopt with `why_not` ("cannot open WHAT: No such
// file or directory").
std::optional<std::string> read_text_file(const std::string &path, const std::string &what, std::string &why_not);

}  // namespace spendcap
