// The management API's secrets: new ones from the system's random source,
// and the admin token compared in constant time.
#include "admin/secret.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <algorithm>
#include <stdexcept>

namespace spendcap::admin {

namespace {

// `count` base62 characters, each equally likely: a byte of 248 or more
// (248 = 4 * 62) is drawn again instead of wrapping the alphabet.
std::string random_base62(std::size_t count) {
    static const char kAlphabet[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    std::string out;
    out.reserve(count);
    unsigned char buffer[64];
    while (out.size() < count) {
        if (RAND_bytes(buffer, sizeof buffer) != 1) {
            OPENSSL_cleanse(buffer, sizeof buffer);
            throw std::runtime_error("the system's random source failed");
        }
        for (unsigned char byte : buffer) {
            if (byte >= 248) continue;
            out += kAlphabet[byte % 62];
            if (out.size() == count) break;
        }
    }
    OPENSSL_cleanse(buffer, sizeof buffer);
    return out;
}

}  // namespace

bool token_matches(std::string_view expected, std::string_view presented) {
    // Every byte of the longer one is read whatever the content; only the
    // lengths decide how many.
    const std::size_t longest = std::max(expected.size(), presented.size());
    unsigned difference = expected.size() != presented.size() ? 1u : 0u;
    for (std::size_t i = 0; i < longest; ++i) {
        const unsigned char a = i < expected.size() ? static_cast<unsigned char>(expected[i]) : 0;
        const unsigned char b = i < presented.size() ? static_cast<unsigned char>(presented[i]) : 0;
        difference |= static_cast<unsigned>(a ^ b);
    }
    // An empty token would let an empty bearer in; config load refuses one, and so does this.
    return difference == 0 && !expected.empty();
}

std::string new_secret() { return "sk-sc-" + random_base62(43); }
std::string new_key_id() { return "key_" + random_base62(16); }

}  // namespace spendcap::admin
