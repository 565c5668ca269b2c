// The worker's Redis client, on hiredis's async API and NGINX's event loop.
// Nothing here blocks: commands are queued, timeouts come from NGINX timers,
// reconnects from a backoff timer, and a connection that stops answering is
// noticed and replaced (ngx_http_spend_cap_redis_connection.h). Every
// command is an EVALSHA of one of the core's scripts, which names in its KEYS
// every key it touches, all in one slot: on a Redis Cluster each goes to the
// master of its first key's slot (ngx_http_spend_cap_redis_nodes.h).
#pragma once

#include <string>
#include <vector>

#include "ngx.h"
#include "ngx_http_spend_cap_redis_backlog.h"     // RedisDescribe
#include "ngx_http_spend_cap_redis_nodes.h"       // RedisSettings
#include "redis/command.h"
#include "redis/reply.h"
#include "redis/script.h"

struct redisReply;

namespace spendcap_ngx {

enum class RedisStatus {
    reply,        // `reply` holds Redis's answer (which may be an error reply)
    unavailable,  // no connection, or it failed before the reply
    timeout,      // no reply within the caller's timeout
};

// hiredis's reply as the core reads it (a copy).
spendcap::Reply to_reply(const redisReply *reply);

// Called at most once per command, on the event loop. `reply` is only valid
// during the call.
using RedisDone = void (*)(void *data, RedisStatus status, const redisReply *reply);

struct RedisOp;

// Starts the worker's client (init_process) and ends it (exit_process).
// `resolver`: NGINX's, when one is configured (host names are then resolved
// again at each connect).
void redis_start(RedisSettings settings, ngx_resolver_t *resolver, ngx_log_t *log);
void redis_stop();

// Sends an EVALSHA command; on NOSCRIPT the script is loaded and the command
// sent again, once. Returns nullptr, calling nothing, when there is no
// connection. `done` may be nullptr (nobody waits for the answer).
RedisOp *redis_eval(std::vector<std::string> argv, const std::string *script,
                    ngx_msec_t timeout, RedisDone done, void *data);
inline RedisOp *redis_eval(spendcap::Command command, ngx_msec_t timeout, RedisDone done, void *data) {
    return redis_eval(std::move(command.argv), command.script, timeout, done, data);
}

// Its caller will not hear of `op` (sent by redis_eval, not yet answered:
// the caller clears its pointer when `done` runs); the command still runs.
void redis_forget(RedisOp *op);

// Whether a command would be taken now (a connection is up or being made).
bool redis_ready();
// Whether every connection of this worker is up (spend_cap_redis_up).
bool redis_up();

// A write that must land, besides its command.
struct MustLand {
    const spendcap::Script *script = nullptr;  // for NOSCRIPT
    // What it is, for this worker's log lines; called only when one is written.
    RedisDescribe describe;
    // What it is, short, kept with it in the node's shared backlog for the
    // worker that sends it if this one is gone ("3 settlements of org acme").
    std::string summary;
    unsigned settlements = 0;  // what the backlog gauge counts of it
    // Its last argument is "0", and becomes "1" once a send may have landed
    // without its reply (or WAIT's confirmation) coming back.
    bool says_sent_before = false;
};

// A write that must land (a settlement): idempotent, so it is sent again
// until Redis accepts it, in the order submitted. It waits in the node's
// bounded shared backlog while Redis is unreachable or answers an error that
// clears by itself (LOADING, BUSY, OOM, READONLY, ...), retried with backoff,
// and is sent by another worker if this one is gone; a reply that can never
// succeed drops it with one error line naming what `describe` says.
void redis_eval_reliably(std::vector<std::string> argv, MustLand what);

}  // namespace spendcap_ngx
