// hiredis async attached to NGINX's event loop (after slact/nchan's adapter),
// with what hiredis 0.14 lacks: per-command and connect timeouts, liveness,
// reconnects, and a backlog of writes that must land.

#include "ngx_http_spend_cap_redis.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <new>
#include <utility>

#include "redis/errors.h"

namespace spendcap_ngx {
namespace {

using spendcap::RedisErrorKind;

constexpr ngx_msec_t kMinBackoff = 100;
constexpr ngx_msec_t kMaxBackoff = 5000;
constexpr ngx_msec_t kConnectTimeout = 1000;
// No reply for this long while commands wait: the connection is dead (a
// black-holed Redis, a half-open socket). A live Redis answers even a busy
// or loading server's clients with an error at once.
constexpr ngx_msec_t kDeadAfter = 2000;
constexpr ngx_msec_t kIdlePing = 5000;       // an idle connection is probed this often
constexpr ngx_msec_t kLivenessTick = 250;
constexpr ngx_msec_t kReliableTimeout = 5000;  // keeps a stopping worker alive to see them land
// The backlog of writes that must land, per worker: entries and bytes.
constexpr std::size_t kMaxBacklog = 100000;
constexpr std::size_t kMaxBacklogBytes = 32 << 20;
// Writes that must land, sent and not answered yet: what hiredis's queue
// may hold of them; the rest waits in the backlog.
constexpr std::size_t kMaxInflight = 2000;
constexpr std::size_t kMaxInflightBytes = 8 << 20;
constexpr unsigned kLogLinesPerSecond = 10;
// What a backlog entry's description is counted as, besides its command.
constexpr std::size_t kDescribeBytes = 256;

struct Pending {
    std::uint64_t seq = 0;        // submission order
    std::string command;          // RESP-encoded
    const std::string *script = nullptr;
    RedisDescribe describe;       // what it is, for log lines
};

// At most kLogLinesPerSecond lines a second of one kind; the rest is counted
// and the count logged with the next line that passes.
struct LogLimit {
    time_t second = 0;
    unsigned lines = 0;
    unsigned suppressed = 0;
};

struct Client {
    RedisEndpoint endpoint;
    ngx_log_t *log = nullptr;
    redisAsyncContext *ac = nullptr;  // nullptr while disconnected
    bool connected = false;
    bool stopping = false;
    bool writing = false;  // inside redisAsyncHandleWrite
    ngx_msec_t backoff = kMinBackoff;
    ngx_event_t reconnect_timer{};
    ngx_event_t connect_timer{};
    ngx_event_t liveness_timer{};
    ngx_event_t drop_timer{};     // drops the connection outside hiredis's callbacks
    // Why, copied: the error text it often comes from is hiredis's reply,
    // freed when the callback that saw it returns.
    std::string drop_reason;
    // liveness of the current connection
    std::size_t awaiting = 0;     // commands sent on it and not answered
    ngx_msec_t waiting_since = 0; // when the oldest of them was sent, or the last reply came
    ngx_msec_t last_activity = 0;
    // writes that must land
    std::uint64_t next_seq = 1;
    std::deque<Pending> backlog;  // in submission order
    std::size_t backlog_bytes = 0;
    std::size_t inflight = 0;
    std::size_t inflight_bytes = 0;
    bool holding = false;         // a transient error: they wait for retry_timer
    ngx_msec_t retry_backoff = kMinBackoff;
    ngx_event_t retry_timer{};
    LogLimit drop_log, retry_log;
};

Client *client;  // one per worker process

ngx_log_t *log_of() { return client != nullptr ? client->log : ngx_cycle->log; }

// Exceptions never cross into NGINX or hiredis: every callback ends here.
template <typename F>
void guarded(const char *where, F &&f) noexcept {
    try {
        f();
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_ALERT, log_of(), 0, "spend_cap: %s: %s", where, e.what());
    } catch (...) {
        ngx_log_error(NGX_LOG_ALERT, log_of(), 0, "spend_cap: %s failed", where);
    }
}

bool log_allowed(LogLimit &limit) {
    const time_t now = ngx_time();
    if (now != limit.second) {
        if (limit.suppressed > 0) {
            ngx_log_error(NGX_LOG_ERR, log_of(), 0, "spend_cap: %ui similar lines suppressed",
                          (ngx_uint_t) limit.suppressed);
        }
        limit = LogLimit{now, 0, 0};
    }
    if (limit.lines < kLogLinesPerSecond) {
        limit.lines++;
        return true;
    }
    limit.suppressed++;
    return false;
}

}  // namespace

struct RedisOp {
    Pending work;
    RedisDone done = nullptr;  // nullptr once timed out or answered
    void *data = nullptr;
    bool reloaded_script = false;
    bool reliable = false;     // a write that must land
    ngx_event_t timer{};
};

namespace {

void connect_now();
void flush_backlog();

// Timers that carry writes still to land keep a stopping worker alive
// (bounded by worker_shutdown_timeout); the others never hold it up.
void arm(ngx_event_t *timer, ngx_msec_t after) {
    timer->cancelable = client->backlog.empty() && client->inflight == 0;
    ngx_add_timer(timer, after);
}

void schedule_reconnect() {
    if (client->stopping || client->reconnect_timer.timer_set) {
        return;
    }
    arm(&client->reconnect_timer, client->backoff);
    client->backoff = std::min(client->backoff * 2, kMaxBackoff);
}

// Ends the current connection now (never from inside a hiredis callback):
// hiredis answers every command still waiting with no reply, which puts the
// writes that must land back in the backlog.
void drop_connection(const char *why) {
    if (client->ac == nullptr) {
        return;
    }
    ngx_log_error(NGX_LOG_ERR, client->log, 0, "spend_cap: dropping the connection to redis %s: %s",
                  client->endpoint.display.c_str(), why);
    redisAsyncContext *ac = client->ac;
    client->ac = nullptr;
    client->connected = false;
    if (client->connect_timer.timer_set) {
        ngx_del_timer(&client->connect_timer);
    }
    redisAsyncFree(ac);
    schedule_reconnect();
}

void request_drop(std::string_view why) {
    if (client->ac != nullptr && !client->drop_timer.timer_set) {
        client->drop_reason.assign(why.data(), why.size());
        ngx_add_timer(&client->drop_timer, 0);
    }
}

// One RESP array of bulk strings: hiredis would format it argument by argument.
std::string to_resp(const std::vector<std::string> &argv) {
    std::size_t size = 16;
    for (const auto &a : argv) {
        size += a.size() + 16;
    }
    std::string out;
    out.reserve(size);
    out += '*';
    out += std::to_string(argv.size());
    out += "\r\n";
    for (const auto &a : argv) {
        out += '$';
        out += std::to_string(a.size());
        out += "\r\n";
        out += a;
        out += "\r\n";
    }
    return out;
}

std::string describe(const Pending &p) {
    try {
        return p.describe ? p.describe() : std::string("a write");
    } catch (...) {
        return "a write";
    }
}

void log_lost(const Pending &p, const char *why) {
    if (log_allowed(client->drop_log)) {
        ngx_log_error(NGX_LOG_ERR, client->log, 0, "spend_cap: %s lost: %s", describe(p).c_str(), why);
    }
}

// Back into the backlog, in submission order; the oldest entries give way
// when it is full.
void backlog_insert(Pending p) {
    const std::size_t size = p.command.size() + kDescribeBytes;
    while (!client->backlog.empty()
           && (client->backlog.size() >= kMaxBacklog || client->backlog_bytes + size > kMaxBacklogBytes)) {
        Pending &oldest = client->backlog.front();
        if (oldest.seq > p.seq) {
            log_lost(p, "the backlog of writes waiting for redis is full");
            return;
        }
        client->backlog_bytes -= oldest.command.size() + kDescribeBytes;
        log_lost(oldest, "the backlog of writes waiting for redis is full");
        client->backlog.pop_front();
    }
    auto at = std::upper_bound(client->backlog.begin(), client->backlog.end(), p.seq,
                               [](std::uint64_t seq, const Pending &e) { return seq < e.seq; });
    client->backlog_bytes += size;
    client->backlog.insert(at, std::move(p));
}

// Ends an op: the caller hears at most once, then the op is freed.
void finish(RedisOp *op, RedisStatus status, const redisReply *reply) {
    if (op->timer.timer_set) {
        ngx_del_timer(&op->timer);
    }
    RedisDone done = op->done;
    op->done = nullptr;
    if (done != nullptr) {
        done(op->data, status, reply);
    }
    delete op;
}

void sent_one() {
    if (client->awaiting == 0) {
        client->waiting_since = ngx_current_msec;
    }
    client->awaiting++;
    client->last_activity = ngx_current_msec;
}

void answered_one() {
    if (client->awaiting > 0) {
        client->awaiting--;
    }
    client->waiting_since = ngx_current_msec;
}

bool send_op(RedisOp *op);

void on_setup_reply(redisAsyncContext *, void *r, void *privdata) {
    guarded("redis setup reply", [&] {
        auto *reply = static_cast<redisReply *>(r);
        if (reply == nullptr) {
            return;
        }
        answered_one();
        if (reply->type == REDIS_REPLY_ERROR) {
            ngx_log_error(NGX_LOG_ERR, client->log, 0, "spend_cap: redis %s failed: %s",
                          static_cast<const char *>(privdata), reply->str);
        }
    });
}

bool send_setup(int argc, const char **argv, const size_t *lens, const char *what) {
    if (redisAsyncCommandArgv(client->ac, on_setup_reply, (void *) what, argc, argv, lens) != REDIS_OK) {
        return false;
    }
    sent_one();
    return true;
}

bool load_script(const std::string &script) {
    const char *argv[] = {"SCRIPT", "LOAD", script.c_str()};
    const size_t lens[] = {6, 4, script.size()};
    return send_setup(3, argv, lens, "SCRIPT LOAD");
}

void reliable_answered(RedisOp *op) {
    client->inflight--;
    client->inflight_bytes -= op->work.command.size();
}

// A transient error: writes that must land wait, and are tried again in
// order after a backoff.
void hold(const char *error) {
    if (log_allowed(client->retry_log)) {
        ngx_log_error(NGX_LOG_WARN, client->log, 0,
                      "spend_cap: redis answered \"%s\"; %uz writes wait, next try in %M ms", error,
                      client->backlog.size(), client->retry_backoff);
    }
    client->holding = true;
    if (!client->retry_timer.timer_set) {
        arm(&client->retry_timer, client->retry_backoff);
        client->retry_backoff = std::min(client->retry_backoff * 2, kMaxBackoff);
    }
}

void on_reliable_reply(RedisOp *op, redisReply *reply) {
    reliable_answered(op);
    if (reply == nullptr) {  // the connection failed or was dropped
        backlog_insert(std::move(op->work));
        finish(op, RedisStatus::unavailable, nullptr);
        return;
    }
    if (reply->type != REDIS_REPLY_ERROR) {
        client->retry_backoff = kMinBackoff;
        finish(op, RedisStatus::reply, reply);
        flush_backlog();
        return;
    }
    const spendcap::RedisErrorClass error = spendcap::classify_redis_error(reply->str);
    if (error.kind == RedisErrorKind::script_missing && !op->reloaded_script && op->work.script != nullptr) {
        // Redis restarted or was flushed: load the script, then send the same
        // EVALSHA again; one connection keeps the two in order.
        op->reloaded_script = true;
        client->inflight++;
        client->inflight_bytes += op->work.command.size();
        if (load_script(*op->work.script) && send_op(op)) {
            return;
        }
        reliable_answered(op);
        backlog_insert(std::move(op->work));
        finish(op, RedisStatus::unavailable, nullptr);
        return;
    }
    if (error.kind == RedisErrorKind::permanent) {
        log_lost(op->work, reply->str);
        finish(op, RedisStatus::reply, reply);
        flush_backlog();
        return;
    }
    // Transient (or NOSCRIPT again): nothing was done; it waits its turn.
    hold(reply->str);
    if (error.reconnect) {
        request_drop(std::string_view(reply->str, reply->len));
    }
    backlog_insert(std::move(op->work));
    finish(op, RedisStatus::reply, reply);
}

void on_reply(redisAsyncContext *, void *r, void *privdata) {
    guarded("redis reply", [&] {
        auto *op = static_cast<RedisOp *>(privdata);
        auto *reply = static_cast<redisReply *>(r);
        if (reply != nullptr) {
            answered_one();
        }
        if (op->reliable) {
            on_reliable_reply(op, reply);
            return;
        }
        if (reply == nullptr) {
            finish(op, RedisStatus::unavailable, nullptr);
            return;
        }
        if (reply->type == REDIS_REPLY_ERROR) {
            const spendcap::RedisErrorClass error = spendcap::classify_redis_error(reply->str);
            if (error.kind == RedisErrorKind::script_missing && !op->reloaded_script
                && op->work.script != nullptr) {
                op->reloaded_script = true;
                if (load_script(*op->work.script) && send_op(op)) {
                    return;
                }
                finish(op, RedisStatus::unavailable, nullptr);
                return;
            }
            if (error.reconnect) {
                request_drop(std::string_view(reply->str, reply->len));
            }
        }
        finish(op, RedisStatus::reply, reply);
    });
}

bool send_op(RedisOp *op) {
    if (client == nullptr || client->ac == nullptr) {
        return false;
    }
    if (redisAsyncFormattedCommand(client->ac, on_reply, op, op->work.command.data(),
                                   op->work.command.size()) != REDIS_OK) {
        return false;
    }
    sent_one();
    return true;
}

void on_op_timeout(ngx_event_t *ev) {
    guarded("redis timeout", [&] {
        auto *op = static_cast<RedisOp *>(ev->data);
        RedisDone done = op->done;
        op->done = nullptr;  // the reply, when it comes, frees the op silently
        if (done != nullptr) {
            done(op->data, RedisStatus::timeout, nullptr);
        }
    });
}

RedisOp *new_op(Pending work, ngx_msec_t timeout) {
    auto *op = new RedisOp;
    op->work = std::move(work);
    op->timer.handler = on_op_timeout;
    op->timer.data = op;
    op->timer.log = client->log;
    if (timeout > 0) {
        ngx_add_timer(&op->timer, timeout);
    }
    return op;
}

bool can_send_reliably() {
    return client->ac != nullptr && client->connected && !client->holding && client->inflight < kMaxInflight
           && client->inflight_bytes < kMaxInflightBytes;
}

void send_reliably(Pending work) {
    RedisOp *op = new_op(std::move(work), kReliableTimeout);
    op->reliable = true;
    if (!send_op(op)) {
        backlog_insert(std::move(op->work));
        finish(op, RedisStatus::unavailable, nullptr);
        return;
    }
    client->inflight++;
    client->inflight_bytes += op->work.command.size();
}

void flush_backlog() {
    while (!client->backlog.empty() && can_send_reliably()) {
        Pending work = std::move(client->backlog.front());
        client->backlog.pop_front();
        client->backlog_bytes -= work.command.size() + kDescribeBytes;
        send_reliably(std::move(work));
    }
}

void on_retry_timer(ngx_event_t *) {
    guarded("redis retry", [] {
        client->holding = false;
        flush_backlog();
    });
}

void on_drop_timer(ngx_event_t *) {
    guarded("redis drop", [] { drop_connection(client->drop_reason.c_str()); });
}

void on_connect_timeout(ngx_event_t *) {
    guarded("redis connect timeout", [] {
        if (!client->connected) {
            drop_connection("connect timed out");
        }
    });
}

void on_ping_reply(redisAsyncContext *, void *r, void *) {
    guarded("redis ping", [&] {
        if (r != nullptr) {
            answered_one();
        }
    });
}

// Every tick: a connection whose commands get no answer is dead; an idle one
// is probed so that a dead one is found before a request needs it.
void on_liveness_tick(ngx_event_t *ev) {
    guarded("redis liveness", [&] {
        if (client->ac != nullptr && client->connected) {
            if (client->awaiting > 0 && ngx_current_msec - client->waiting_since > kDeadAfter) {
                drop_connection("no reply within 2 s");
            } else if (client->awaiting == 0 && ngx_current_msec - client->last_activity > kIdlePing) {
                if (redisAsyncCommand(client->ac, on_ping_reply, nullptr, "PING") == REDIS_OK) {
                    sent_one();
                }
            }
        }
        if (!client->stopping) {
            ngx_add_timer(ev, kLivenessTick);
        }
    });
}

void on_reconnect_timer(ngx_event_t *) {
    guarded("redis reconnect", [] {
        if (client->ac == nullptr && !client->stopping) {
            connect_now();
        }
    });
}

// --- hiredis event hooks: privdata is the ngx_connection_t of the socket ---

void on_read(ngx_event_t *ev) {
    guarded("redis read", [&] {
        auto *c = static_cast<ngx_connection_t *>(ev->data);
        redisAsyncHandleRead(static_cast<redisAsyncContext *>(c->data));
    });
}

void on_write(ngx_event_t *ev) {
    guarded("redis write", [&] {
        auto *c = static_cast<ngx_connection_t *>(ev->data);
        client->writing = true;
        redisAsyncHandleWrite(static_cast<redisAsyncContext *>(c->data));
    });
    if (client != nullptr) {
        client->writing = false;
    }
}

// Level-triggered: hiredis reads at most 16 KiB per call, so with edge
// triggering a burst of replies could sit unread until the next one arrives.
void add_read(void *privdata) {
    auto *c = static_cast<ngx_connection_t *>(privdata);
    if (!c->read->active) {
        ngx_add_event(c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT);
    }
}

void del_read(void *privdata) {
    auto *c = static_cast<ngx_connection_t *>(privdata);
    if (c->read->active) {
        ngx_del_event(c->read, NGX_READ_EVENT, 0);
    }
}

// Once connected, commands queued during one event loop iteration are
// written together at its end, without asking epoll first: the socket is
// nearly always writable. Only a write that could not finish (or a connect in
// progress) waits for a write event.
void add_write(void *privdata) {
    auto *c = static_cast<ngx_connection_t *>(privdata);
    if (client->connected && !client->writing) {
        if (!c->write->posted) {
            ngx_post_event(c->write, &ngx_posted_events);
        }
        return;
    }
    if (!c->write->active) {
        ngx_add_event(c->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT);
    }
}

void del_write(void *privdata) {
    auto *c = static_cast<ngx_connection_t *>(privdata);
    if (c->write->active) {
        ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
    }
}

// hiredis closes the socket itself (redisFree): release the NGINX connection
// without closing it, and mark it stale for events already collected.
void cleanup(void *privdata) {
    auto *c = static_cast<ngx_connection_t *>(privdata);
    del_read(c);
    del_write(c);
    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }
    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }
    c->fd = (ngx_socket_t) -1;
    ngx_free_connection(c);
}

void on_connect(const redisAsyncContext *ac, int status) {
    guarded("redis connect", [&] {
        if (client->ac != ac) {
            return;
        }
        if (client->connect_timer.timer_set) {
            ngx_del_timer(&client->connect_timer);
        }
        if (status != REDIS_OK) {
            ngx_log_error(NGX_LOG_ERR, client->log, 0, "spend_cap: cannot connect to redis %s: %s",
                          client->endpoint.display.c_str(), ac->errstr);
            client->ac = nullptr;  // hiredis frees it after this callback
            client->connected = false;
            schedule_reconnect();
            return;
        }
        ngx_log_error(NGX_LOG_INFO, client->log, 0, "spend_cap: connected to redis %s",
                      client->endpoint.display.c_str());
        client->connected = true;
        client->backoff = kMinBackoff;
        client->waiting_since = ngx_current_msec;
        flush_backlog();
    });
}

void on_disconnect(const redisAsyncContext *ac, int status) {
    guarded("redis disconnect", [&] {
        if (client->ac != ac) {
            return;
        }
        if (status != REDIS_OK && !client->stopping) {
            ngx_log_error(NGX_LOG_ERR, client->log, 0, "spend_cap: lost redis %s: %s",
                          client->endpoint.display.c_str(), ac->errstr);
        }
        client->ac = nullptr;
        client->connected = false;
        schedule_reconnect();
    });
}

void connect_now() {
    const RedisEndpoint &ep = client->endpoint;
    redisAsyncContext *ac = ep.unix_path.empty()
                                ? redisAsyncConnect(ep.host.c_str(), ep.port)
                                : redisAsyncConnectUnix(ep.unix_path.c_str());
    if (ac == nullptr || ac->err) {
        ngx_log_error(NGX_LOG_ERR, client->log, 0, "spend_cap: cannot connect to redis %s: %s",
                      ep.display.c_str(), ac ? ac->errstr : "out of memory");
        if (ac != nullptr) {
            redisAsyncFree(ac);
        }
        schedule_reconnect();
        return;
    }

    ngx_connection_t *c = ngx_get_connection(ac->c.fd, client->log);
    if (c == nullptr) {
        redisAsyncFree(ac);
        schedule_reconnect();
        return;
    }
    c->data = ac;
    c->read->handler = on_read;
    c->write->handler = on_write;
    c->read->log = client->log;
    c->write->log = client->log;

    ac->ev.data = c;
    ac->ev.addRead = add_read;
    ac->ev.delRead = del_read;
    ac->ev.addWrite = add_write;
    ac->ev.delWrite = del_write;
    ac->ev.cleanup = cleanup;
    client->ac = ac;
    client->awaiting = 0;
    client->last_activity = ngx_current_msec;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    ngx_add_timer(&client->connect_timer, kConnectTimeout);

    // Queued ahead of every other command on this connection.
    if (!ep.password.empty()) {
        const char *argv[] = {"AUTH", ep.password.c_str()};
        send_setup(2, argv, nullptr, "AUTH");
    }
    if (ep.db != 0) {
        std::string db = std::to_string(ep.db);
        const char *argv[] = {"SELECT", db.c_str()};
        send_setup(2, argv, nullptr, "SELECT");
    }
}

void init_timer(ngx_event_t *ev, ngx_event_handler_pt handler) {
    ev->handler = handler;
    ev->log = client->log;
    ev->data = client;
    ev->cancelable = 1;
}

}  // namespace

spendcap::Reply to_reply(const redisReply *reply) {
    spendcap::Reply out;
    if (reply == nullptr) {
        return out;
    }
    switch (reply->type) {
    case REDIS_REPLY_INTEGER:
        out.type = spendcap::Reply::Type::integer;
        out.integer = reply->integer;
        break;
    case REDIS_REPLY_STRING:
        out.type = spendcap::Reply::Type::string;
        out.str.assign(reply->str, reply->len);
        break;
    case REDIS_REPLY_STATUS:
        out.type = spendcap::Reply::Type::status;
        out.str.assign(reply->str, reply->len);
        break;
    case REDIS_REPLY_ERROR:
        out.type = spendcap::Reply::Type::error;
        out.str.assign(reply->str, reply->len);
        break;
    case REDIS_REPLY_ARRAY:
        out.type = spendcap::Reply::Type::array;
        out.elements.reserve(reply->elements);
        for (std::size_t i = 0; i < reply->elements; ++i) {
            out.elements.push_back(to_reply(reply->element[i]));
        }
        break;
    default:
        break;
    }
    return out;
}

void redis_start(const RedisEndpoint &endpoint, ngx_log_t *log) {
    client = new Client;
    client->endpoint = endpoint;
    client->log = log;
    init_timer(&client->reconnect_timer, on_reconnect_timer);
    init_timer(&client->connect_timer, on_connect_timeout);
    init_timer(&client->liveness_timer, on_liveness_tick);
    init_timer(&client->drop_timer, on_drop_timer);
    init_timer(&client->retry_timer, on_retry_timer);
    ngx_add_timer(&client->liveness_timer, kLivenessTick);
    connect_now();
}

void redis_stop() {
    if (client == nullptr) {
        return;
    }
    client->stopping = true;
    for (ngx_event_t *timer : {&client->reconnect_timer, &client->connect_timer, &client->liveness_timer,
                               &client->drop_timer, &client->retry_timer}) {
        if (timer->timer_set) {
            ngx_del_timer(timer);
        }
    }
    if (client->ac != nullptr && client->connected) {
        redisAsyncHandleWrite(client->ac);  // best effort: send what is queued
    }
    if (client->ac != nullptr) {  // (a failing connect may have freed it just now)
        redisAsyncContext *ac = client->ac;
        client->ac = nullptr;
        redisAsyncFree(ac);  // what waits for a reply joins the backlog
    }
    if (!client->backlog.empty()) {
        ngx_log_error(NGX_LOG_ERR, client->log, 0,
                      "spend_cap: worker exits with %uz writes not accepted by redis; their "
                      "reservations are given back at their deadline",
                      client->backlog.size());
        client->drop_log = LogLimit{};
        for (const Pending &p : client->backlog) {
            log_lost(p, "the worker exits");
        }
    }
    delete client;
    client = nullptr;
}

RedisOp *redis_eval(std::vector<std::string> argv, const std::string *script,
                    ngx_msec_t timeout, RedisDone done, void *data) {
    if (client == nullptr || client->ac == nullptr) {
        return nullptr;
    }
    Pending work;
    work.command = to_resp(argv);
    work.script = script;
    RedisOp *op = new_op(std::move(work), timeout);
    op->done = done;
    op->data = data;
    if (!send_op(op)) {
        op->done = nullptr;
        finish(op, RedisStatus::unavailable, nullptr);
        return nullptr;
    }
    return op;
}

void redis_forget(RedisOp *op) {
    if (op != nullptr) {
        op->done = nullptr;
    }
}

bool redis_ready() {
    return client != nullptr && client->ac != nullptr;
}

void redis_eval_reliably(std::vector<std::string> argv, const std::string *script, RedisDescribe describe) {
    if (client == nullptr) {
        return;
    }
    Pending work;
    work.seq = client->next_seq++;
    work.command = to_resp(argv);
    work.script = script;
    work.describe = std::move(describe);
    if (client->backlog.empty() && can_send_reliably()) {
        send_reliably(std::move(work));
    } else {
        backlog_insert(std::move(work));
    }
}

}  // namespace spendcap_ngx
