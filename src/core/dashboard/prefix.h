// spend_cap_dashboard's API_PREFIX: where the page finds the management API.
// It is written into the page's HTML, so only characters that cannot leave
// an attribute value or start markup are accepted.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace spendcap::dashboard {

constexpr std::size_t kMaxApiPrefixBytes = 256;

// Why `prefix` cannot be an API prefix, or nothing when it can: it starts
// with '/', is at most 256 bytes of printable ASCII, without a space, '"',
// '\'', '<', '>', '&' or a backslash.
std::optional<std::string> api_prefix_problem(std::string_view prefix);
// The prefix with a trailing '/' (the page appends paths such as "orgs").
std::string normalized_api_prefix(std::string_view prefix);

}  // namespace spendcap::dashboard
