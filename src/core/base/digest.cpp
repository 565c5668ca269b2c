// SHA-256 and SHA-1 through OpenSSL's EVP interface, each digest fetched once.
#include "base/digest.h"

#include <openssl/evp.h>

namespace spendcap {

namespace {

std::string hex_digest(std::string_view data, const EVP_MD *md) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    if (EVP_Digest(data.data(), data.size(), digest, &length, md, nullptr) != 1) return {};
    static const char kHex[] = "0123456789abcdef";
    std::string hex;
    hex.reserve(length * 2);
    for (unsigned int i = 0; i < length; ++i) {
        hex.push_back(kHex[digest[i] >> 4]);
        hex.push_back(kHex[digest[i] & 0x0f]);
    }
    return hex;
}

}  // namespace

std::string sha256_hex(std::string_view data) {
    try {
        // Fetched once: OpenSSL 3 would otherwise look the digest up on every call.
        static EVP_MD *const sha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
        return hex_digest(data, sha256 ? sha256 : EVP_sha256());
    } catch (...) {
        return {};
    }
}

std::string sha1_hex(std::string_view data) {
    try {
        static EVP_MD *const sha1 = EVP_MD_fetch(nullptr, "SHA1", nullptr);
        return hex_digest(data, sha1 ? sha1 : EVP_sha1());
    } catch (...) {
        return {};
    }
}


}  // namespace spendcap
