// hiredis async attached to NGINX's event loop (after slact/nchan's adapter),
// with what hiredis 0.14 lacks: per-command timeouts, reconnects, a backlog.

#include "ngx_http_spend_cap_redis.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <new>
#include <utility>

namespace spendcap_ngx {
namespace {

constexpr ngx_msec_t kMinBackoff = 100;
constexpr ngx_msec_t kMaxBackoff = 5000;
constexpr size_t kMaxBacklog = 100000;        // settlements kept while Redis is down
constexpr ngx_msec_t kReliableTimeout = 5000; // keeps a stopping worker alive to see them land

struct Client {
    RedisEndpoint endpoint;
    ngx_log_t *log = nullptr;
    redisAsyncContext *ac = nullptr;  // nullptr while disconnected
    bool connected = false;
    bool stopping = false;
    bool writing = false;  // inside redisAsyncHandleWrite
    ngx_msec_t backoff = kMinBackoff;
    ngx_event_t reconnect_timer{};
    // RESP-encoded idempotent commands (settlements) and the script each runs.
    std::deque<std::pair<std::string, const std::string *>> backlog;
};

Client *client;  // one per worker process

}  // namespace

struct RedisOp {
    std::string command;       // RESP-encoded, formatted once
    const std::string *script = nullptr;
    RedisDone done = nullptr;  // nullptr once detached, timed out or answered
    void *data = nullptr;
    bool reloaded_script = false;
    bool reliable = false;     // back to the backlog if the connection fails
    ngx_event_t timer{};
};

namespace {

void connect_now();

void schedule_reconnect() {
    if (client->stopping || client->reconnect_timer.timer_set) {
        return;
    }
    ngx_add_timer(&client->reconnect_timer, client->backoff);
    client->backoff = std::min(client->backoff * 2, kMaxBackoff);
}

void on_reconnect_timer(ngx_event_t *) {
    if (client->ac == nullptr && !client->stopping) {
        connect_now();
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

void push_backlog(std::string command, const std::string *script) {
    if (client->backlog.size() >= kMaxBacklog) {
        ngx_log_error(NGX_LOG_ERR, client->log, 0,
                      "spend_cap: settlement backlog full (%uz), dropping the oldest",
                      client->backlog.size());
        client->backlog.pop_front();
    }
    client->backlog.emplace_back(std::move(command), script);
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

bool send_op(RedisOp *op);

void on_setup_reply(redisAsyncContext *, void *r, void *privdata);

bool load_script(const std::string &script) {
    const char *argv[] = {"SCRIPT", "LOAD", script.c_str()};
    const size_t lens[] = {6, 4, script.size()};
    return redisAsyncCommandArgv(client->ac, on_setup_reply, (void *) "SCRIPT LOAD", 3, argv,
                                 lens) == REDIS_OK;
}

void on_reply(redisAsyncContext *, void *r, void *privdata) {
    auto *op = static_cast<RedisOp *>(privdata);
    auto *reply = static_cast<redisReply *>(r);

    if (reply == nullptr) {  // connection failed or is being freed
        if (op->reliable) {
            push_backlog(std::move(op->command), op->script);
        }
        finish(op, RedisStatus::unavailable, nullptr);
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR && !op->reloaded_script && op->script != nullptr
        && std::strncmp(reply->str, "NOSCRIPT", 8) == 0) {
        // Redis restarted or was flushed: load the script, then send the same
        // EVALSHA again; one connection keeps the two in order.
        op->reloaded_script = true;
        if (load_script(*op->script) && send_op(op)) {
            return;
        }
        finish(op, RedisStatus::unavailable, nullptr);
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, client->log, 0, "spend_cap: redis replied: %s", reply->str);
    }
    finish(op, RedisStatus::reply, reply);
}

bool send_op(RedisOp *op) {
    if (client == nullptr || client->ac == nullptr) {
        return false;
    }
    return redisAsyncFormattedCommand(client->ac, on_reply, op, op->command.data(),
                                      op->command.size()) == REDIS_OK;
}

void on_op_timeout(ngx_event_t *ev) {
    auto *op = static_cast<RedisOp *>(ev->data);
    RedisDone done = op->done;
    op->done = nullptr;  // the reply, when it comes, frees the op silently
    if (done != nullptr) {
        done(op->data, RedisStatus::timeout, nullptr);
    }
}

RedisOp *new_op(std::string command, const std::string *script, ngx_msec_t timeout) {
    auto *op = new RedisOp;
    op->command = std::move(command);
    op->script = script;
    op->timer.handler = on_op_timeout;
    op->timer.data = op;
    op->timer.log = client->log;
    if (timeout > 0) {
        ngx_add_timer(&op->timer, timeout);
    }
    return op;
}

void flush_backlog() {
    while (!client->backlog.empty() && client->ac != nullptr) {
        RedisOp *op = new_op(std::move(client->backlog.front().first),
                             client->backlog.front().second, kReliableTimeout);
        client->backlog.pop_front();
        op->reliable = true;
        if (!send_op(op)) {
            push_backlog(std::move(op->command), op->script);
            finish(op, RedisStatus::unavailable, nullptr);
            return;
        }
    }
}

// --- hiredis event hooks: privdata is the ngx_connection_t of the socket ---

void on_read(ngx_event_t *ev) {
    auto *c = static_cast<ngx_connection_t *>(ev->data);
    redisAsyncHandleRead(static_cast<redisAsyncContext *>(c->data));
}

void on_write(ngx_event_t *ev) {
    auto *c = static_cast<ngx_connection_t *>(ev->data);
    client->writing = true;
    redisAsyncHandleWrite(static_cast<redisAsyncContext *>(c->data));
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
    if (client->ac != ac) {
        return;
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
    flush_backlog();
}

void on_disconnect(const redisAsyncContext *ac, int status) {
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
}

void on_setup_reply(redisAsyncContext *, void *r, void *privdata) {
    auto *reply = static_cast<redisReply *>(r);
    if (reply != nullptr && reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, client->log, 0, "spend_cap: redis %s failed: %s",
                      static_cast<const char *>(privdata), reply->str);
    }
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
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);

    // Queued ahead of every other command on this connection.
    if (!ep.password.empty()) {
        const char *argv[] = {"AUTH", ep.password.c_str()};
        redisAsyncCommandArgv(ac, on_setup_reply, (void *) "AUTH", 2, argv, nullptr);
    }
    if (ep.db != 0) {
        std::string db = std::to_string(ep.db);
        const char *argv[] = {"SELECT", db.c_str()};
        redisAsyncCommandArgv(ac, on_setup_reply, (void *) "SELECT", 2, argv, nullptr);
    }
}

}  // namespace

void redis_start(const RedisEndpoint &endpoint, ngx_log_t *log) {
    client = new Client;
    client->endpoint = endpoint;
    client->log = log;
    client->reconnect_timer.handler = on_reconnect_timer;
    client->reconnect_timer.log = log;
    client->reconnect_timer.data = client;
    client->reconnect_timer.cancelable = 1;  // never holds up a graceful shutdown
    connect_now();
}

void redis_stop() {
    if (client == nullptr) {
        return;
    }
    client->stopping = true;
    if (client->reconnect_timer.timer_set) {
        ngx_del_timer(&client->reconnect_timer);
    }
    if (client->ac != nullptr) {
        redisAsyncHandleWrite(client->ac);  // best effort: send what is queued
        redisAsyncContext *ac = client->ac;
        client->ac = nullptr;
        redisAsyncFree(ac);
    }
    if (!client->backlog.empty()) {
        ngx_log_error(NGX_LOG_ERR, client->log, 0,
                      "spend_cap: worker exits with %uz settlements not sent to redis",
                      client->backlog.size());
    }
    delete client;
    client = nullptr;
}

RedisOp *redis_eval(std::vector<std::string> argv, const std::string *script,
                    ngx_msec_t timeout, RedisDone done, void *data) {
    if (client == nullptr || client->ac == nullptr) {
        return nullptr;
    }
    RedisOp *op = new_op(to_resp(argv), script, timeout);
    op->done = done;
    op->data = data;
    if (!send_op(op)) {
        op->done = nullptr;
        finish(op, RedisStatus::unavailable, nullptr);
        return nullptr;
    }
    return op;
}

void redis_detach(RedisOp *op) {
    op->done = nullptr;
    op->data = nullptr;
}

void redis_eval_reliably(std::vector<std::string> argv, const std::string *script) {
    if (client == nullptr) {
        return;
    }
    if (client->ac == nullptr) {
        push_backlog(to_resp(argv), script);
        return;
    }
    RedisOp *op = new_op(to_resp(argv), script, kReliableTimeout);
    op->reliable = true;
    if (!send_op(op)) {
        push_backlog(std::move(op->command), script);
        finish(op, RedisStatus::unavailable, nullptr);
    }
}

}  // namespace spendcap_ngx
