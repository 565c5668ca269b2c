// Whether a resolved key may spend now: its secret (a rotated one only within
// its grace), its revocation, its expiry. Decided here for the request path
// and the API alike; a cached identity is judged again at each use.
#pragma once

#include <cstdint>

#include "identity/records.h"

namespace spendcap {

enum class KeyStanding {
    valid,
    grace_over,  // the secret was rotated away and its grace has ended
    revoked,
    expired,     // expires_at has come (to the second)
};

KeyStanding key_standing(const Identity &identity, std::int64_t now_ms);

}  // namespace spendcap
