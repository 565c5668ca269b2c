// One Redis connection per worker, driven by hiredis's async API on NGINX's
// event loop. Nothing here blocks: commands are queued, timeouts come from
// NGINX timers, reconnects from a backoff timer, and a connection that stops
// answering is noticed and replaced.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "ngx.h"

struct redisReply;

#include "redis/reply.h"

namespace spendcap_ngx {

struct RedisEndpoint {
    std::string host;       // numeric address, resolved at configuration time
    int port = 6379;
    std::string unix_path;  // set for unix:/path
    std::string password;
    int db = 0;
    std::string display;    // as configured, for log lines
};

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

// Starts the worker's connection (init_process) and ends it (exit_process).
void redis_start(const RedisEndpoint &endpoint, ngx_log_t *log);
void redis_stop();

// Sends an EVALSHA command; on NOSCRIPT it is sent again once as EVAL with
// `script`. Returns nullptr, calling nothing, when there is no connection.
// `done` may be nullptr (nobody waits for the answer).
RedisOp *redis_eval(std::vector<std::string> argv, const std::string *script,
                    ngx_msec_t timeout, RedisDone done, void *data);

// Its caller will not hear of `op` (sent by redis_eval, not yet answered:
// the caller clears its pointer when `done` runs); the command still runs.
void redis_forget(RedisOp *op);

// Whether a command would be taken now (a connection is up or being made).
bool redis_ready();

// What a write that must land is, for log lines (e.g. "settlement of
// request R (org O, ...)"); called only when a line is written.
using RedisDescribe = std::function<std::string()>;

// A write that must land (a settlement): idempotent, so it is sent again
// until Redis accepts it, in the order submitted. It waits in a bounded
// per-worker backlog while Redis is unreachable or answers an error that
// clears by itself (LOADING, BUSY, OOM, READONLY, ...), retried with backoff;
// a reply that can never succeed drops it with one error line naming what
// `describe` says.
void redis_eval_reliably(std::vector<std::string> argv, const std::string *script, RedisDescribe describe);

}  // namespace spendcap_ngx
