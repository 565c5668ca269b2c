// The management API's secrets: new key secrets and ids from the system's
// random source, and the admin token's check.
#pragma once

#include <string>
#include <string_view>

namespace spendcap::admin {

// The admin token check, in time independent of where they differ.
bool token_matches(std::string_view expected, std::string_view presented);

// A new secret: "sk-sc-" and 43 base62 characters (256 random bits), and a
// new key id "key_" and 16 base62 characters. Throws std::runtime_error if
// the system's random source fails.
std::string new_secret();
std::string new_key_id();

}  // namespace spendcap::admin
