#include "relay/leases.h"

namespace spendcap::relay {
namespace {

// Renews, or gives back, only a lease that is still ours.
const char *kRenewLua =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0";
const char *kReleaseLua = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

}  // namespace

std::string lease_key(const std::string &org) { return "sc:{" + org + "}:relay:lease"; }

bool take_lease(RedisLink &redis, const std::string &org, const std::string &relay_id) {
    Reply r = redis.command({"SET", lease_key(org), relay_id, "NX", "PX", std::to_string(kLeaseMs)});
    return r.type == Reply::Type::status;
}

bool renew_lease(RedisLink &redis, const std::string &org, const std::string &relay_id) {
    Reply r = redis.command({"EVAL", kRenewLua, "1", lease_key(org), relay_id, std::to_string(kLeaseMs)}, 3);
    return r.type == Reply::Type::integer && r.integer == 1;
}

void give_back_lease(RedisLink &redis, const std::string &org, const std::string &relay_id) {
    redis.command({"EVAL", kReleaseLua, "1", lease_key(org), relay_id}, 3);
}

}  // namespace spendcap::relay
