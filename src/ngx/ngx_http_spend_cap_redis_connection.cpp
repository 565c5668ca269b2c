#include "ngx_http_spend_cap_redis_connection.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <algorithm>
#include <utility>

namespace spendcap_ngx {
namespace {

constexpr ngx_msec_t kMinBackoff = 100;
constexpr ngx_msec_t kMaxBackoff = 5000;
constexpr ngx_msec_t kConnectTimeout = 1000;
// No reply for this long while commands wait: the connection is dead (a
// black-holed Redis, a half-open socket). A live Redis answers even a busy
// or loading server's clients with an error at once.
constexpr ngx_msec_t kDeadAfter = 2000;
constexpr ngx_msec_t kIdlePing = 5000;  // an idle connection is probed this often
constexpr ngx_msec_t kLivenessTick = 250;

RedisConnection *of(const redisAsyncContext *ac) { return static_cast<RedisConnection *>(ac->data); }

// The reply to a command the connection sends for itself (AUTH, SELECT,
// SCRIPT LOAD, PING): only its failure is worth a line.
void setup_reply(void *r, void *privdata, ngx_log_t *log, const char *what) {
    auto *reply = static_cast<redisReply *>(r);
    if (reply == nullptr) {
        return;
    }
    static_cast<RedisConnection *>(privdata)->replied();
    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, log, 0, "spend_cap: redis %s failed: %s", what, reply->str);
    }
}

}  // namespace

RedisConnection::RedisConnection(RedisEndpoint endpoint, ngx_log_t *log, Owner &owner, ngx_resolver_t *resolver)
    : endpoint_(std::move(endpoint)), log_(log), owner_(owner), resolver_(resolver), backoff_(kMinBackoff) {
    redis_init_timer(&reconnect_timer_, on_reconnect_timer, log, this);
    redis_init_timer(&connect_timer_, on_connect_timeout, log, this);
    redis_init_timer(&liveness_timer_, on_liveness_tick, log, this);
    redis_init_timer(&drop_timer_, on_drop_timer, log, this);
}

RedisConnection::~RedisConnection() { stop(); }

void RedisConnection::start() {
    ngx_add_timer(&liveness_timer_, kLivenessTick);
    connect_now();
}

void RedisConnection::stop() {
    stopping_ = true;
    if (resolving_ != nullptr) {
        ngx_resolver_ctx_t *ctx = resolving_;
        resolving_ = nullptr;
        ngx_resolve_name_done(ctx);  // cancels it
    }
    for (ngx_event_t *timer : {&reconnect_timer_, &connect_timer_, &liveness_timer_, &drop_timer_}) {
        if (timer->timer_set) {
            ngx_del_timer(timer);
        }
    }
    if (ac_ != nullptr && flags_.connected) {
        redisAsyncHandleWrite(ac_);  // best effort: send what is queued
    }
    if (ac_ != nullptr) {  // (a failing connect may have freed it just now)
        redisAsyncContext *ac = ac_;
        ac_ = nullptr;
        flags_.connected = false;
        redisAsyncFree(ac);  // every command still waiting hears it failed
    }
}

// Timers that carry writes still to land keep a stopping worker alive; the
// others never hold it up.
void RedisConnection::arm(ngx_event_t *timer, ngx_msec_t after) {
    timer->cancelable = !owner_.writes_waiting();
    ngx_add_timer(timer, after);
}

void RedisConnection::schedule_reconnect() {
    if (stopping_ || reconnect_timer_.timer_set) {
        return;
    }
    arm(&reconnect_timer_, backoff_);
    backoff_ = std::min(backoff_ * 2, kMaxBackoff);
}

// Ends the connection now (never from inside a hiredis callback): hiredis
// answers every command still waiting with no reply.
void RedisConnection::drop(const char *why) {
    if (ac_ == nullptr) {
        return;
    }
    ngx_log_error(NGX_LOG_ERR, log_, 0, "spend_cap: dropping the connection to redis %s: %s",
                  endpoint_.display.c_str(), why);
    redisAsyncContext *ac = ac_;
    ac_ = nullptr;
    flags_.connected = false;
    if (connect_timer_.timer_set) {
        ngx_del_timer(&connect_timer_);
    }
    redisAsyncFree(ac);
    schedule_reconnect();
    owner_.connection_lost(*this);
}

void RedisConnection::drop_soon(std::string_view why) {
    if (ac_ != nullptr && !drop_timer_.timer_set) {
        drop_reason_.assign(why.data(), why.size());
        ngx_add_timer(&drop_timer_, 0);
    }
}

void RedisConnection::sent_one() {
    if (awaiting_ == 0) {
        waiting_since_ = ngx_current_msec;
    }
    awaiting_++;
    last_activity_ = ngx_current_msec;
}

void RedisConnection::replied() {
    if (awaiting_ > 0) {
        awaiting_--;
    }
    waiting_since_ = ngx_current_msec;
}

bool RedisConnection::send(const std::string &resp, Callback done, void *privdata) {
    if (ac_ == nullptr || redisAsyncFormattedCommand(ac_, done, privdata, resp.data(), resp.size()) != REDIS_OK) {
        return false;
    }
    sent_one();
    return true;
}

bool RedisConnection::send_setup(int argc, const char **argv, const size_t *lens, Callback done) {
    if (ac_ == nullptr || redisAsyncCommandArgv(ac_, done, this, argc, argv, lens) != REDIS_OK) {
        return false;
    }
    sent_one();
    return true;
}

bool RedisConnection::send_asking() {
    const char *argv[] = {"ASKING"};
    return send_setup(1, argv, nullptr, [](redisAsyncContext *ac, void *r, void *p) {
        setup_reply(r, p, of(ac)->log_, "ASKING");
    });
}

bool RedisConnection::load_script(const std::string &script) {
    const char *argv[] = {"SCRIPT", "LOAD", script.c_str()};
    const size_t lens[] = {6, 4, script.size()};
    return send_setup(3, argv, lens, [](redisAsyncContext *ac, void *r, void *p) {
        setup_reply(r, p, of(ac)->log_, "SCRIPT LOAD");
    });
}

void RedisConnection::connect_now() {
    if (resolver_ != nullptr && !endpoint_.hostname.empty() && endpoint_.unix_path.empty()) {
        resolve_then_connect();
        return;
    }
    if (endpoint_.host.empty() && endpoint_.unix_path.empty()) {  // a name only a resolver could find
        ngx_log_error(NGX_LOG_ERR, log_, 0, "spend_cap: redis %s is a host name: set NGINX's resolver to reach it",
                      endpoint_.display.c_str());
        schedule_reconnect();
        return;
    }
    connect_to(endpoint_.host);
}

// A managed endpoint's name follows its primary: it is asked again before
// each connect, without blocking (NGINX's resolver). An answer that does not
// come leaves the address last found.
void RedisConnection::resolve_then_connect() {
    ngx_resolver_ctx_t *ctx = endpoint_.hostname.size() > 255 ? nullptr : ngx_resolve_start(resolver_, nullptr);
    if (ctx == nullptr || ctx == NGX_NO_RESOLVER) {
        connect_known(endpoint_.host);
        return;
    }
    ctx->name.data = reinterpret_cast<u_char *>(const_cast<char *>(endpoint_.hostname.data()));
    ctx->name.len = endpoint_.hostname.size();
    ctx->handler = resolve_handler;
    ctx->data = this;
    ctx->timeout = kConnectTimeout;
    ctx->cancelable = 1;
    resolving_ = ctx;
    if (ngx_resolve_name(ctx) != NGX_OK) {  // (nginx freed ctx)
        resolving_ = nullptr;
        connect_known(endpoint_.host);
    }
}

void RedisConnection::resolve_handler(ngx_resolver_ctx_t *ctx) {
    auto *self = static_cast<RedisConnection *>(ctx->data);
    redis_guarded(self->log_, "redis resolve", [&] { self->on_resolved(ctx); });
}

void RedisConnection::on_resolved(ngx_resolver_ctx_t *ctx) {
    std::string host = endpoint_.host;  // (empty for a name never found)
    if (ctx->state == NGX_OK && ctx->naddrs > 0) {
        u_char text[NGX_SOCKADDR_STRLEN];
        size_t len = ngx_sock_ntop(ctx->addrs[0].sockaddr, ctx->addrs[0].socklen, text, NGX_SOCKADDR_STRLEN, 0);
        host.assign(reinterpret_cast<const char *>(text), len);
        if (host != endpoint_.host) {
            ngx_log_error(NGX_LOG_NOTICE, log_, 0, "spend_cap: redis %s is now at %s", endpoint_.display.c_str(),
                          host.c_str());
            endpoint_.host = host;
        }
    } else {
        ngx_log_error(NGX_LOG_ERR, log_, 0, "spend_cap: cannot resolve redis %s (%i: %s), using %s",
                      endpoint_.display.c_str(), ctx->state, ngx_resolver_strerror(ctx->state),
                      host.empty() ? "none yet" : host.c_str());
    }
    resolving_ = nullptr;
    ngx_resolve_name_done(ctx);
    if (!stopping_ && ac_ == nullptr) {
        connect_known(host);
    }
}

// A name whose address is not known yet is asked again at the next try.
void RedisConnection::connect_known(const std::string &host) {
    if (host.empty()) {
        schedule_reconnect();
        return;
    }
    connect_to(host);
}

void RedisConnection::connect_to(const std::string &host) {
    const RedisEndpoint &ep = endpoint_;
    redisAsyncContext *ac = ep.unix_path.empty() ? redisAsyncConnect(host.c_str(), ep.port)
                                                 : redisAsyncConnectUnix(ep.unix_path.c_str());
    if (ac == nullptr || ac->err) {
        ngx_log_error(NGX_LOG_ERR, log_, 0, "spend_cap: cannot connect to redis %s: %s", ep.display.c_str(),
                      ac ? ac->errstr : "out of memory");
        if (ac != nullptr) {
            redisAsyncFree(ac);
        }
        schedule_reconnect();
        return;
    }
    flags_.connected = false;
    if (!redis_attach(ac, log_, &flags_)) {
        redisAsyncFree(ac);
        schedule_reconnect();
        return;
    }
    ac->data = this;
    ac_ = ac;
    awaiting_ = 0;
    last_activity_ = ngx_current_msec;
    redisAsyncSetConnectCallback(ac, connect_callback);
    redisAsyncSetDisconnectCallback(ac, disconnect_callback);
    ngx_add_timer(&connect_timer_, kConnectTimeout);

    // Queued ahead of every other command on this connection.
    if (!ep.password.empty()) {
        const char *argv[] = {"AUTH", ep.password.c_str()};
        send_setup(2, argv, nullptr, [](redisAsyncContext *c, void *r, void *p) { setup_reply(r, p, of(c)->log_, "AUTH"); });
    }
    if (ep.db != 0) {
        const std::string db = std::to_string(ep.db);
        const char *argv[] = {"SELECT", db.c_str()};
        send_setup(2, argv, nullptr, [](redisAsyncContext *c, void *r, void *p) { setup_reply(r, p, of(c)->log_, "SELECT"); });
    }
    // Named, so that CLIENT LIST tells spend-cap's connections apart; a server
    // (or proxy) that refuses the name is no reason to log anything.
    const char *name[] = {"CLIENT", "SETNAME", "spend-cap"};
    send_setup(3, name, nullptr, [](redisAsyncContext *, void *r, void *p) {
        if (r != nullptr) static_cast<RedisConnection *>(p)->replied();
    });
}

void RedisConnection::on_connect(int status) {
    if (connect_timer_.timer_set) {
        ngx_del_timer(&connect_timer_);
    }
    if (status != REDIS_OK) {
        ngx_log_error(NGX_LOG_ERR, log_, 0, "spend_cap: cannot connect to redis %s: %s", endpoint_.display.c_str(),
                      ac_->errstr);
        ac_ = nullptr;  // hiredis frees it after this callback
        flags_.connected = false;
        schedule_reconnect();
        owner_.connection_lost(*this);
        return;
    }
    ngx_log_error(NGX_LOG_INFO, log_, 0, "spend_cap: connected to redis %s", endpoint_.display.c_str());
    flags_.connected = true;
    backoff_ = kMinBackoff;
    waiting_since_ = ngx_current_msec;
    owner_.connection_ready();
}

void RedisConnection::on_disconnect(int status) {
    if (status != REDIS_OK && !stopping_) {
        ngx_log_error(NGX_LOG_ERR, log_, 0, "spend_cap: lost redis %s: %s", endpoint_.display.c_str(), ac_->errstr);
    }
    ac_ = nullptr;
    flags_.connected = false;
    schedule_reconnect();
    if (!stopping_) {
        owner_.connection_lost(*this);
    }
}

void RedisConnection::connect_callback(const redisAsyncContext *ac, int status) {
    RedisConnection *self = of(ac);
    redis_guarded(self->log_, "redis connect", [&] {
        if (self->ac_ == ac) {
            self->on_connect(status);
        }
    });
}

void RedisConnection::disconnect_callback(const redisAsyncContext *ac, int status) {
    RedisConnection *self = of(ac);
    redis_guarded(self->log_, "redis disconnect", [&] {
        if (self->ac_ == ac) {
            self->on_disconnect(status);
        }
    });
}

// Every tick: a connection whose commands get no answer is dead; an idle one
// is probed so that a dead one is found before a request needs it.
void RedisConnection::check_liveness() {
    if (ac_ != nullptr && flags_.connected) {
        if (awaiting_ > 0 && ngx_current_msec - waiting_since_ > kDeadAfter) {
            drop("no reply within 2 s");
        } else if (awaiting_ == 0 && ngx_current_msec - last_activity_ > kIdlePing) {
            const char *argv[] = {"PING"};
            send_setup(1, argv, nullptr, [](redisAsyncContext *c, void *r, void *p) { setup_reply(r, p, of(c)->log_, "PING"); });
        }
    }
    if (!stopping_) {
        ngx_add_timer(&liveness_timer_, kLivenessTick);
    }
}

void RedisConnection::on_liveness_tick(ngx_event_t *ev) {
    auto *self = static_cast<RedisConnection *>(ev->data);
    redis_guarded(self->log_, "redis liveness", [&] { self->check_liveness(); });
}

void RedisConnection::on_reconnect_timer(ngx_event_t *ev) {
    auto *self = static_cast<RedisConnection *>(ev->data);
    redis_guarded(self->log_, "redis reconnect", [&] {
        if (self->ac_ == nullptr && self->resolving_ == nullptr && !self->stopping_) {
            self->connect_now();
        }
    });
}

void RedisConnection::on_connect_timeout(ngx_event_t *ev) {
    auto *self = static_cast<RedisConnection *>(ev->data);
    redis_guarded(self->log_, "redis connect timeout", [&] {
        if (!self->flags_.connected) {
            self->drop("connect timed out");
        }
    });
}

void RedisConnection::on_drop_timer(ngx_event_t *ev) {
    auto *self = static_cast<RedisConnection *>(ev->data);
    redis_guarded(self->log_, "redis drop", [&] { self->drop(self->drop_reason_.c_str()); });
}

}  // namespace spendcap_ngx
