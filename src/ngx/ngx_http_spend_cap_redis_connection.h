// One connection to one Redis server, kept alive: connect (with a timeout,
// the host name resolved again first when NGINX's `resolver` is set), AUTH
// and SELECT ahead of everything, reconnect with backoff, and liveness (a
// connection whose commands get no reply is dropped; an idle one is probed).
// What goes over it, and what a failure means for each command, is its
// owner's business (ngx_http_spend_cap_redis.cpp). A Redis Cluster client
// holds one per master (ngx_http_spend_cap_redis_nodes.h).
#pragma once

#include <string>
#include <string_view>

#include "ngx.h"
#include "ngx_http_spend_cap_redis_adapter.h"

struct redisAsyncContext;
struct redisReply;

namespace spendcap_ngx {

struct RedisEndpoint {
    std::string host;       // numeric address, resolved at configuration time
    std::string hostname;   // the name configured, when not an address: resolved again at each connect with a resolver
    int port = 6379;
    std::string unix_path;  // set for unix:/path
    std::string password;
    int db = 0;
    std::string display;    // as configured, for log lines
};

class RedisConnection {
public:
    // What the connection asks of its owner.
    class Owner {
    public:
        virtual ~Owner() = default;
        // Connected (after a connect or a reconnect): commands flow again.
        virtual void connection_ready() = 0;
        // Whether writes that must land still wait: its timers then keep a
        // stopping worker alive (bounded by worker_shutdown_timeout).
        virtual bool writes_waiting() const = 0;
        // The connection failed or was lost (it reconnects by itself).
        virtual void connection_lost(RedisConnection &) {}
    };

    // The hiredis callback of a command: `reply` nullptr when the connection
    // failed or was dropped before the reply (hiredis calls it then, at once).
    using Callback = void (*)(redisAsyncContext *ac, void *reply, void *privdata);

    // `resolver`: NGINX's, when configured (nullptr: the address found at load).
    RedisConnection(RedisEndpoint endpoint, ngx_log_t *log, Owner &owner, ngx_resolver_t *resolver = nullptr);
    ~RedisConnection();
    RedisConnection(const RedisConnection &) = delete;
    RedisConnection &operator=(const RedisConnection &) = delete;

    void start();
    // Best effort: writes what is queued, then ends the connection (every
    // command still waiting is answered with no reply).
    void stop();

    // A command would be queued now (connected, or connecting).
    bool usable() const { return ac_ != nullptr; }
    bool connected() const { return flags_.connected; }
    const std::string &name() const { return endpoint_.display; }
    const RedisEndpoint &endpoint() const { return endpoint_; }

    // Queues a RESP-encoded command; false when there is no connection.
    bool send(const std::string &resp, Callback done, void *privdata);
    // SCRIPT LOAD, queued ahead of what follows on this connection.
    bool load_script(const std::string &script);
    // ASKING, queued just ahead of the command a Cluster's ASK sends here.
    bool send_asking();
    // A reply to a command of send() came (the owner's callback says so).
    void replied();
    // Ends the connection soon, outside the hiredis callback that found why.
    void drop_soon(std::string_view why);

private:
    void connect_now();
    void connect_to(const std::string &host);
    void connect_known(const std::string &host);
    void resolve_then_connect();
    void on_resolved(ngx_resolver_ctx_t *ctx);
    void schedule_reconnect();
    void drop(const char *why);
    void arm(ngx_event_t *timer, ngx_msec_t after);
    bool send_setup(int argc, const char **argv, const size_t *lens, Callback done);
    void sent_one();
    void on_connect(int status);
    void on_disconnect(int status);
    void check_liveness();

    static void connect_callback(const redisAsyncContext *ac, int status);
    static void disconnect_callback(const redisAsyncContext *ac, int status);
    static void on_reconnect_timer(ngx_event_t *ev);
    static void on_connect_timeout(ngx_event_t *ev);
    static void on_liveness_tick(ngx_event_t *ev);
    static void on_drop_timer(ngx_event_t *ev);
    static void resolve_handler(ngx_resolver_ctx_t *ctx);

    RedisEndpoint endpoint_;
    ngx_log_t *log_;
    Owner &owner_;
    ngx_resolver_t *resolver_;
    ngx_resolver_ctx_t *resolving_ = nullptr;  // a name being resolved
    redisAsyncContext *ac_ = nullptr;  // nullptr while disconnected
    RedisAdapterFlags flags_;
    bool stopping_ = false;
    ngx_msec_t backoff_;
    ngx_event_t reconnect_timer_{};
    ngx_event_t connect_timer_{};
    ngx_event_t liveness_timer_{};
    ngx_event_t drop_timer_{};
    // Why, copied: the error text it often comes from is hiredis's reply,
    // freed when the callback that saw it returns.
    std::string drop_reason_;
    std::size_t awaiting_ = 0;      // commands sent on it and not answered
    ngx_msec_t waiting_since_ = 0;  // when the oldest of them was sent, or the last reply came
    ngx_msec_t last_activity_ = 0;
};

}  // namespace spendcap_ngx
