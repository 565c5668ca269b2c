// JSON string literals of any bytes, for the answers built by hand (error
// envelopes, the management API): their field order is the documented one.
#pragma once

#include <string>
#include <string_view>

namespace spendcap {

// Appends `text` as a JSON string literal; invalid UTF-8 becomes U+FFFD, so
// the answer always parses whatever bytes a message or an id holds.
void append_json_string(std::string &out, std::string_view text);

}  // namespace spendcap
