// What a Redis error reply means for a command that must land: will the same
// command succeed if sent again later, or never?
#pragma once

#include <string_view>

namespace spendcap {

enum class RedisErrorKind {
    transient,       // Redis cannot run it now (LOADING, BUSY, OOM, READONLY, ...): send it again later
    script_missing,  // NOSCRIPT: load the script, then send it again
    permanent,       // the command itself is refused (a script error, WRONGTYPE, an overflow): never
};

struct RedisErrorClass {
    RedisErrorKind kind = RedisErrorKind::permanent;
    // The connection itself is stale: a restart lost its AUTH (NOAUTH), or it
    // reaches a replica after a failover (READONLY). Reconnect before retrying.
    bool reconnect = false;
    // A Redis Cluster's slot being migrated (TRYAGAIN) or a failover under
    // way (CLUSTERDOWN): read the slot map again, send again shortly.
    bool cluster_changing = false;
};

// Classifies an error reply by its code (the first word), as go-redis's
// shouldRetry does, plus the codes of a server that refuses writes for a
// while (MISCONF, NOREPLICAS) or its clients (max number of clients).
// Everything not known to clear by itself is permanent, so that one bad
// command can never hold up those behind it forever: MOVED and ASK too,
// since a client of one Redis that meets a Cluster's slot of another node
// can never succeed there.
RedisErrorClass classify_redis_error(std::string_view message);

}  // namespace spendcap
