// The worker's Redis client: commands (EVALSHA of the core's scripts) with
// their timeouts from NGINX timers, NOSCRIPT handled by loading the script,
// and writes that must land kept in a backlog until Redis takes them. It sits
// on one connection (ngx_http_spend_cap_redis_connection.h), driven by the
// event adapter (..._redis_adapter.h); the backlog is ..._redis_backlog.h.

#include "ngx_http_spend_cap_redis.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <exception>
#include <utility>

#include "ngx_http_spend_cap_redis_backlog.h"
#include "redis/errors.h"

namespace spendcap_ngx {
namespace {

using spendcap::RedisErrorKind;

constexpr ngx_msec_t kReliableTimeout = 5000;  // keeps a stopping worker alive to see them land

void flush_backlog();

struct Client : RedisConnection::Owner {
    Client(const RedisEndpoint &endpoint, ngx_log_t *log)
        : log(log), backlog(log, flush_backlog), connection(endpoint, log, *this) {}
    void connection_ready() override { flush_backlog(); }
    bool writes_waiting() const override { return backlog.waiting(); }

    ngx_log_t *log;
    WriteBacklog backlog;       // (before the connection: stopping it returns writes here)
    RedisConnection connection;
};

Client *client;  // one per worker process

ngx_log_t *log_of() { return client != nullptr ? client->log : ngx_cycle->log; }

// The connection a command goes over. One Redis: the only one. (A Redis
// Cluster client picks the node that holds the slot of the command's first
// key, and follows MOVED / ASK.)
RedisConnection &connection_for(const PendingWrite &) { return client->connection; }

}  // namespace

struct RedisOp {
    PendingWrite work;
    RedisConnection *connection = nullptr;  // the one it was sent on
    RedisDone done = nullptr;               // nullptr once timed out or answered
    void *data = nullptr;
    bool reloaded_script = false;
    bool reliable = false;                  // a write that must land
    ngx_event_t timer{};
};

namespace {

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

void on_reply(redisAsyncContext *, void *r, void *privdata);

bool send_op(RedisOp *op) {
    if (client == nullptr) {
        return false;
    }
    RedisConnection &connection = connection_for(op->work);
    if (!connection.send(op->work.command, on_reply, op)) {
        return false;
    }
    op->connection = &connection;
    return true;
}

// NOSCRIPT (Redis restarted or was flushed): load the script, then send the
// same EVALSHA again, once; one connection keeps the two in order.
bool reload_and_resend(RedisOp *op) {
    if (op->reloaded_script || op->work.script == nullptr || op->connection == nullptr) {
        return false;
    }
    op->reloaded_script = true;
    return op->connection->load_script(*op->work.script) && send_op(op);
}

void on_reliable_reply(RedisOp *op, redisReply *reply) {
    WriteBacklog &backlog = client->backlog;
    backlog.answered(op->work);
    if (reply == nullptr) {  // the connection failed or was dropped
        backlog.insert(std::move(op->work));
        finish(op, RedisStatus::unavailable, nullptr);
        return;
    }
    if (reply->type != REDIS_REPLY_ERROR) {
        backlog.landed();
        finish(op, RedisStatus::reply, reply);
        flush_backlog();
        return;
    }
    const spendcap::RedisErrorClass error = spendcap::classify_redis_error(reply->str);
    if (error.kind == RedisErrorKind::script_missing && !op->reloaded_script && op->work.script != nullptr) {
        backlog.in_flight(op->work);
        if (reload_and_resend(op)) {
            return;
        }
        backlog.answered(op->work);
        backlog.insert(std::move(op->work));
        finish(op, RedisStatus::unavailable, nullptr);
        return;
    }
    if (error.kind == RedisErrorKind::permanent) {
        backlog.lost(op->work, reply->str);
        finish(op, RedisStatus::reply, reply);
        flush_backlog();
        return;
    }
    // Transient (or NOSCRIPT again): nothing was done; it waits its turn.
    backlog.hold(reply->str);
    if (error.reconnect && op->connection != nullptr) {
        op->connection->drop_soon(std::string_view(reply->str, reply->len));
    }
    backlog.insert(std::move(op->work));
    finish(op, RedisStatus::reply, reply);
}

void on_reply(redisAsyncContext *, void *r, void *privdata) {
    redis_guarded(log_of(), "redis reply", [&] {
        auto *op = static_cast<RedisOp *>(privdata);
        auto *reply = static_cast<redisReply *>(r);
        if (reply != nullptr && op->connection != nullptr) {
            op->connection->replied();
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
            if (error.kind == RedisErrorKind::script_missing && !op->reloaded_script && op->work.script != nullptr) {
                if (!reload_and_resend(op)) {
                    finish(op, RedisStatus::unavailable, nullptr);
                }
                return;
            }
            if (error.reconnect && op->connection != nullptr) {
                op->connection->drop_soon(std::string_view(reply->str, reply->len));
            }
        }
        finish(op, RedisStatus::reply, reply);
    });
}

void on_op_timeout(ngx_event_t *ev) {
    redis_guarded(log_of(), "redis timeout", [&] {
        auto *op = static_cast<RedisOp *>(ev->data);
        RedisDone done = op->done;
        op->done = nullptr;  // the reply, when it comes, frees the op silently
        if (done != nullptr) {
            done(op->data, RedisStatus::timeout, nullptr);
        }
    });
}

RedisOp *new_op(PendingWrite work, ngx_msec_t timeout) {
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

void send_reliably(PendingWrite work) {
    RedisOp *op = new_op(std::move(work), kReliableTimeout);
    op->reliable = true;
    if (!send_op(op)) {
        client->backlog.insert(std::move(op->work));
        finish(op, RedisStatus::unavailable, nullptr);
        return;
    }
    client->backlog.in_flight(op->work);
}

void flush_backlog() {
    redis_guarded(log_of(), "redis backlog", [] {
        while (std::optional<PendingWrite> next = client->backlog.take(client->connection.connected())) {
            send_reliably(std::move(*next));
        }
    });
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
    client = new Client(endpoint, log);
    client->connection.start();
}

void redis_stop() {
    if (client == nullptr) {
        return;
    }
    client->connection.stop();  // what waits for a reply joins the backlog
    client->backlog.abandon();
    delete client;
    client = nullptr;
}

RedisOp *redis_eval(std::vector<std::string> argv, const std::string *script, ngx_msec_t timeout, RedisDone done,
                    void *data) {
    if (!redis_ready()) {
        return nullptr;
    }
    PendingWrite work;
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

bool redis_ready() { return client != nullptr && client->connection.usable(); }

void redis_eval_reliably(std::vector<std::string> argv, const std::string *script, RedisDescribe describe) {
    if (client == nullptr) {
        return;
    }
    PendingWrite work;
    work.seq = client->backlog.next_seq();
    work.command = to_resp(argv);
    work.script = script;
    work.describe = std::move(describe);
    if (client->backlog.empty() && client->backlog.can_send(client->connection.connected())) {
        send_reliably(std::move(work));
    } else {
        client->backlog.insert(std::move(work));
    }
}

}  // namespace spendcap_ngx
