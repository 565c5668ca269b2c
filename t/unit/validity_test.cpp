// identity/validity.h: a key's standing, judged at each use.
#include "identity/validity.h"

#include <gtest/gtest.h>

namespace spendcap {
namespace {

constexpr std::int64_t kNowMs = 1795000000123;

Identity key(bool revoked = false, std::optional<std::int64_t> expires_at = std::nullopt,
             std::optional<std::int64_t> secret_until_ms = std::nullopt) {
    Identity id;
    id.key.id = "k1";
    id.key.revoked = revoked;
    id.key.expires_at = expires_at;
    id.secret_until_ms = secret_until_ms;
    return id;
}

TEST(KeyStanding, ValidUntilSomethingSaysOtherwise) {
    EXPECT_EQ(key_standing(key(), kNowMs), KeyStanding::valid);
    EXPECT_EQ(key_standing(key(false, kNowMs / 1000 + 1), kNowMs), KeyStanding::valid);
    EXPECT_EQ(key_standing(key(false, std::nullopt, kNowMs + 1), kNowMs), KeyStanding::valid);
}

TEST(KeyStanding, ARotatedSecretsGraceEndsToTheMillisecond) {
    EXPECT_EQ(key_standing(key(false, std::nullopt, kNowMs + 1), kNowMs), KeyStanding::valid);
    EXPECT_EQ(key_standing(key(false, std::nullopt, kNowMs), kNowMs), KeyStanding::grace_over);
    EXPECT_EQ(key_standing(key(false, std::nullopt, kNowMs - 1), kNowMs), KeyStanding::grace_over);
}

TEST(KeyStanding, ExpiryIsToTheSecondAndItsSecondCounts) {
    const std::int64_t second = kNowMs / 1000;
    EXPECT_EQ(key_standing(key(false, second), kNowMs), KeyStanding::expired);
    EXPECT_EQ(key_standing(key(false, second), second * 1000), KeyStanding::expired);
    EXPECT_EQ(key_standing(key(false, second), second * 1000 - 1), KeyStanding::valid);
}

TEST(KeyStanding, TheSecretComesFirstThenRevocationThenExpiry) {
    EXPECT_EQ(key_standing(key(true, 1, kNowMs), kNowMs), KeyStanding::grace_over);
    EXPECT_EQ(key_standing(key(true, 1), kNowMs), KeyStanding::revoked);
    EXPECT_EQ(key_standing(key(false, 1), kNowMs), KeyStanding::expired);
}

}  // namespace
}  // namespace spendcap
