// Standard Webhooks signing: the secret's key, and the signature of one attempt.
#include "relay/signing.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstdint>
#include <stdexcept>

namespace spendcap::relay {
namespace {

constexpr std::string_view kSecretPrefix = "whsec_";

int base64_value(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

// Standard base64 with its padding, nothing else: no whitespace, no url-safe
// alphabet, and unused bits zero, so each key has exactly one spelling.
bool decode_base64_strict(std::string_view text, std::vector<unsigned char> &out) {
    out.clear();
    if (text.empty() || text.size() % 4 != 0) return false;
    std::size_t padding = 0;
    if (text.back() == '=') padding = text[text.size() - 2] == '=' ? 2 : 1;
    const std::size_t data_chars = text.size() - padding;
    std::uint32_t bits = 0;
    int bit_count = 0;
    for (std::size_t i = 0; i < data_chars; ++i) {
        const int value = base64_value(text[i]);
        if (value < 0) return false;
        bits = (bits << 6) | static_cast<std::uint32_t>(value);
        bit_count += 6;
        if (bit_count >= 8) {
            bit_count -= 8;
            out.push_back(static_cast<unsigned char>(bits >> bit_count));
            bits &= (1u << bit_count) - 1;
        }
    }
    return bits == 0;
}

std::string encode_base64(const unsigned char *data, std::size_t size) {
    std::string out(4 * ((size + 2) / 3), '\0');
    const int written = EVP_EncodeBlock(reinterpret_cast<unsigned char *>(out.data()), data, static_cast<int>(size));
    out.resize(written > 0 ? static_cast<std::size_t>(written) : 0);
    return out;
}

}  // namespace

std::vector<unsigned char> decode_secret(std::string_view whsec) {
    std::vector<unsigned char> key;
    if (whsec.substr(0, kSecretPrefix.size()) != kSecretPrefix ||
        !decode_base64_strict(whsec.substr(kSecretPrefix.size()), key) || key.empty())
        throw std::invalid_argument("a secret must start with whsec_ and hold base64");
    return key;
}

std::string sign(const std::vector<unsigned char> &key, std::string_view id, std::int64_t timestamp,
                 std::string_view body) {
    std::string content;
    content.reserve(id.size() + body.size() + 24);
    content.append(id).append(".").append(std::to_string(timestamp)).append(".").append(body);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_size = 0;
    if (!HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
              reinterpret_cast<const unsigned char *>(content.data()), content.size(), mac, &mac_size))
        throw std::runtime_error("HMAC-SHA256 failed");
    return "v1," + encode_base64(mac, mac_size);
}

}  // namespace spendcap::relay
