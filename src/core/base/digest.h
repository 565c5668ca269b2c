// Hex digests: SHA-256 names a secret (only its hash is stored), SHA-1 a
// script (EVALSHA).
#pragma once

#include <string>
#include <string_view>

namespace spendcap {

// Lowercase hex SHA-256 of a secret (the form keys are stored in); "" if it fails.
std::string sha256_hex(std::string_view data);
// Lowercase hex SHA-1 (Redis EVALSHA names scripts by it); "" if it fails.
std::string sha1_hex(std::string_view data);

}  // namespace spendcap
