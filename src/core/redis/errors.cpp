#include "redis/errors.h"

namespace spendcap {

RedisErrorClass classify_redis_error(std::string_view message) {
    const std::string_view code = message.substr(0, message.find(' '));
    auto is = [&](std::string_view c) { return code == c; };
    if (is("NOSCRIPT")) return {RedisErrorKind::script_missing, false};
    if (is("NOAUTH") || is("READONLY") || is("WRONGPASS")) return {RedisErrorKind::transient, true};
    if (is("TRYAGAIN") || is("CLUSTERDOWN")) return {RedisErrorKind::transient, false, true};
    if (is("LOADING") || is("BUSY") || is("OOM") || is("MASTERDOWN") || is("MISCONF") || is("NOREPLICAS") || is("UNBLOCKED"))
        return {RedisErrorKind::transient, false};
    if (message.rfind("ERR max number of clients reached", 0) == 0) return {RedisErrorKind::transient, true};
    return {RedisErrorKind::permanent, false};
}

}  // namespace spendcap
