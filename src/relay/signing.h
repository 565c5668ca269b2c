// Standard Webhooks (standardwebhooks.com) signing, apart from any endpoint:
// what the file's reader needs to check a secret, and what a request is
// signed with.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace spendcap::relay {

// The HMAC key of a "whsec_BASE64" secret. Throws std::invalid_argument
// (whose message never holds the secret) unless the prefix is there and the
// rest is canonical, padded, non-empty base64.
std::vector<unsigned char> decode_secret(std::string_view whsec);

// "v1," and base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")).
std::string sign(const std::vector<unsigned char> &key, std::string_view id, std::int64_t timestamp,
                 std::string_view body);

}  // namespace spendcap::relay
