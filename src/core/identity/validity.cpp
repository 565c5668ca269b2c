// A key's standing at a moment (validity.h).
#include "identity/validity.h"

namespace spendcap {

KeyStanding key_standing(const Identity &identity, std::int64_t now_ms) {
    // (a grace runs to the millisecond; expires_at is in whole seconds)
    if (identity.secret_until_ms && now_ms >= *identity.secret_until_ms) return KeyStanding::grace_over;
    if (identity.key.revoked) return KeyStanding::revoked;
    if (identity.key.expires_at && *identity.key.expires_at <= now_ms / 1000) return KeyStanding::expired;
    return KeyStanding::valid;
}

}  // namespace spendcap
