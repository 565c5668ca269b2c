// One relay at a time delivers an org, so that its order holds with several
// relays running: a lease in the org's slot (sc:{ORG}:relay:lease = the
// relay's id), taken for 10 s, renewed every 3 s while the org has work,
// given back once it is caught up; a relay that dies loses it within 10 s.
#pragma once

#include <cstdint>
#include <string>

#include "relay/redis_link.h"

namespace spendcap::relay {

constexpr std::int64_t kLeaseMs = 10000, kLeaseRenewEveryMs = 3000;

std::string lease_key(const std::string &org);
bool take_lease(RedisLink &redis, const std::string &org, const std::string &relay_id);
// Only while it is ours: false when another relay has it now.
bool renew_lease(RedisLink &redis, const std::string &org, const std::string &relay_id);
void give_back_lease(RedisLink &redis, const std::string &org, const std::string &relay_id);

}  // namespace spendcap::relay
