// The worker's Redis client: commands (EVALSHA of the core's scripts) with
// their timeouts from NGINX timers, NOSCRIPT handled by loading the script,
// a Redis Cluster's MOVED, ASK, TRYAGAIN and CLUSTERDOWN followed, and writes
// that must land kept in a backlog until Redis takes them (and, with
// `spend_cap_redis_replicas N`, until WAIT N confirms them). The connections
// are ngx_http_spend_cap_redis_nodes.h's: the one Redis, or one per master.

#include "ngx_http_spend_cap_redis.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <algorithm>
#include <exception>
#include <utility>

#include "ngx_http_spend_cap_redis_backlog.h"
#include "ngx_http_spend_cap_redis_nodes.h"
#include "ngx_http_spend_cap_shared_backlog.h"
#include "ngx_http_spend_cap_zone.h"
#include "redis/cluster.h"
#include "redis/errors.h"

namespace spendcap_ngx {
namespace {

using spendcap::RedisErrorKind;

constexpr ngx_msec_t kReliableTimeout = 5000;  // keeps a stopping worker alive to see them land
// How long WAIT waits for the replicas (on the connection of writes only).
constexpr ngx_msec_t kWaitTimeout = 500;
// MOVED and ASK followed per command, at most: a map that keeps changing under
// it is a cluster in trouble.
constexpr unsigned kMaxRedirects = 5;
// TRYAGAIN / CLUSTERDOWN: a command whose caller still waits is sent again
// after this, doubling up to the most.
constexpr ngx_msec_t kFirstRetry = 10, kMostRetry = 200;
// How often a worker looks for writes that workers now gone left in the
// node's shared backlog.
constexpr ngx_msec_t kAdoptEvery = 1000;

void flush_backlog();
void on_adopt_timer(ngx_event_t *ev);

// spend_cap_redis_errors_total{kind}
void count_error(std::size_t kind) {
    if (spendcap::StatusCounters *counters = status_counters()) {
        counters->count_redis_error(kind);
    }
}
constexpr std::size_t kConnectionError = 0, kTimeoutError = 1, kReplyError = 2;

struct Client : RedisConnection::Owner {
    Client(RedisSettings settings, ngx_resolver_t *resolver, ngx_log_t *log)
        : log(log), backlog(log, flush_backlog), nodes(std::move(settings), resolver, log, *this) {
        if (nodes.replicas() > 0) {
            const std::string n = std::to_string(nodes.replicas()), t = std::to_string(kWaitTimeout);
            wait_command = "*3\r\n$4\r\nWAIT\r\n$" + std::to_string(n.size()) + "\r\n" + n + "\r\n$"
                           + std::to_string(t.size()) + "\r\n" + t + "\r\n";
        }
    }
    void connection_ready() override {
        nodes.connection_ready();
        flush_backlog();
    }
    bool writes_waiting() const override { return backlog.waiting(); }
    void connection_lost(RedisConnection &connection) override {
        count_error(kConnectionError);
        nodes.connection_lost(connection);
    }

    ngx_log_t *log;
    WriteBacklog backlog;  // (before the nodes: stopping them returns writes here)
    RedisNodes nodes;
    std::string wait_command;  // WAIT N TIMEOUT, with replicas to wait for
    ngx_event_t adopt_timer{};
};

Client *client;  // one per worker process

ngx_log_t *log_of() { return client != nullptr ? client->log : ngx_cycle->log; }

// What a write that must land needs of its reply: kept while its WAIT's comes.
struct ReplyGist {
    bool none = true;  // the connection failed first
    bool error = false;
    std::string text;  // the error
};

ReplyGist gist_of(const redisReply *reply) {
    ReplyGist g;
    if (reply != nullptr) {
        g.none = false;
        g.error = reply->type == REDIS_REPLY_ERROR;
        if (g.error) g.text.assign(reply->str, reply->len);
    }
    return g;
}

}  // namespace

struct RedisOp {
    PendingWrite work;
    RedisConnection *connection = nullptr;  // the one it was sent on
    RedisConnection *ask = nullptr;         // an ASK's node: sent there next, once
    RedisDone done = nullptr;               // nullptr once timed out or answered
    void *data = nullptr;
    bool reloaded_script = false;
    bool reliable = false;                  // a write that must land
    bool waits = false;                     // its WAIT follows it on its connection
    bool wait_unsent = false;               // ... or could not be queued
    unsigned redirects = 0;
    ngx_msec_t retry_after = kFirstRetry;
    ReplyGist gist;                         // its reply, while the WAIT's is due
    ngx_event_t timer{};
    ngx_event_t retry{};
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
    if (op->retry.timer_set) {
        ngx_del_timer(&op->retry);
    }
    RedisDone done = op->done;
    op->done = nullptr;
    if (done != nullptr) {
        done(op->data, status, reply);
    }
    delete op;
}

void on_reply(redisAsyncContext *, void *r, void *privdata);
void on_wait_reply(redisAsyncContext *, void *r, void *privdata);

// The op's command on `connection`, followed by its WAIT when it is a write
// that must land and replicas are to confirm it.
bool send_on(RedisOp *op, RedisConnection *connection) {
    if (!connection->send(op->work.command, on_reply, op)) {
        return false;
    }
    op->connection = connection;
    op->waits = op->reliable && !client->wait_command.empty();
    op->wait_unsent = op->waits && !connection->send(client->wait_command, on_wait_reply, op);
    return true;
}

// Sends the op to its slot's master (or the node an ASK named, after ASKING).
bool send_op(RedisOp *op) {
    if (client == nullptr) {
        return false;
    }
    RedisConnection *connection =
        op->ask != nullptr ? op->ask : client->nodes.route(op->work.slot, op->reliable);
    return connection != nullptr && (op->ask == nullptr || connection->send_asking()) && send_on(op, connection);
}

// NOSCRIPT (Redis restarted or was flushed, or a node new to us): load the
// script, then send the same EVALSHA again, once; one connection keeps the
// two in order.
bool reload_and_resend(RedisOp *op) {
    if (op->reloaded_script || op->work.script == nullptr || op->connection == nullptr) {
        return false;
    }
    op->reloaded_script = true;
    op->ask = nullptr;
    return op->connection->load_script(*op->work.script) && send_on(op, op->connection);
}

// MOVED (the map changed: the slot's new master) and ASK (a slot half
// migrated: that node, once) are followed; true when the op went out again.
bool follow_redirect(RedisOp *op, std::string_view error) {
    std::optional<spendcap::Redirect> redirect = spendcap::parse_redirect(error);
    if (!redirect || !client->nodes.cluster() || ++op->redirects > kMaxRedirects) {
        return false;
    }
    if (redirect->kind == spendcap::Redirect::Kind::moved) {
        client->nodes.moved(*redirect);
        op->ask = nullptr;
    } else {
        op->ask = client->nodes.node(redirect->to, op->reliable);
    }
    return send_op(op);
}

// A send that may have landed without our knowing: the next one says so
// (its last argument, "0", becomes "1"; see settle.lua).
void sent_before(PendingWrite &work) {
    static const std::string first = "$1\r\n0\r\n";
    std::string &c = work.command;
    if (work.says_sent_before && c.size() > first.size()
        && c.compare(c.size() - first.size(), first.size(), first) == 0) {
        c[c.size() - 3] = '1';
    }
}

void on_reliable_reply(RedisOp *op, const ReplyGist &reply, bool confirmed) {
    WriteBacklog &backlog = client->backlog;
    backlog.answered(op->work);
    if (reply.none) {  // the connection failed or was dropped
        sent_before(op->work);
        backlog.insert(std::move(op->work));
        finish(op, RedisStatus::unavailable, nullptr);
        return;
    }
    if (!reply.error) {
        if (!confirmed) {
            // Applied on the master, not yet on enough replicas: it stays and
            // is sent again (a no-op where it landed) until WAIT confirms it.
            backlog.hold("WAIT: fewer replicas than spend_cap_redis_replicas confirm it");
            sent_before(op->work);
            op->work.unconfirmed = true;
            backlog.insert(std::move(op->work));
            finish(op, RedisStatus::unavailable, nullptr);
            return;
        }
        backlog.landed();
        shared_backlog_done(op->work.shared);
        op->work.shared = nullptr;
        finish(op, RedisStatus::reply, nullptr);
        flush_backlog();
        return;
    }
    const spendcap::RedisErrorClass error = spendcap::classify_redis_error(reply.text);
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
    backlog.in_flight(op->work);
    if (follow_redirect(op, reply.text)) {
        return;
    }
    backlog.answered(op->work);
    count_error(kReplyError);
    if (error.kind == RedisErrorKind::permanent) {
        backlog.lost(op->work, reply.text.c_str());
        finish(op, RedisStatus::unavailable, nullptr);
        flush_backlog();
        return;
    }
    // Transient (or NOSCRIPT again): nothing was done; it waits its turn.
    backlog.hold(reply.text.c_str());
    if (error.reconnect && op->connection != nullptr) {
        op->connection->drop_soon(reply.text);
    }
    if (error.cluster_changing) {
        client->nodes.refresh_soon();
    }
    backlog.insert(std::move(op->work));
    finish(op, RedisStatus::unavailable, nullptr);
}

void on_retry_timer(ngx_event_t *ev) {
    redis_guarded(log_of(), "redis retry", [&] {
        auto *op = static_cast<RedisOp *>(ev->data);
        if (op->done == nullptr || !send_op(op)) {  // nobody waits any more, or no connection
            finish(op, RedisStatus::unavailable, nullptr);
        }
    });
}

// TRYAGAIN (a slot half migrated) or CLUSTERDOWN (a failover under way): sent
// again shortly while its caller still waits (its own timeout ends that).
bool retry_later(RedisOp *op, const spendcap::RedisErrorClass &error) {
    if (!error.cluster_changing || op->done == nullptr || client == nullptr) {
        return false;
    }
    client->nodes.refresh_soon();
    op->retry.handler = on_retry_timer;
    op->retry.data = op;
    op->retry.log = client->log;
    op->retry.cancelable = 1;
    ngx_add_timer(&op->retry, op->retry_after);
    op->retry_after = std::min(op->retry_after * 2, kMostRetry);
    return true;
}

void on_direct_reply(RedisOp *op, redisReply *reply) {
    if (reply == nullptr) {
        finish(op, RedisStatus::unavailable, nullptr);
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        const std::string_view text(reply->str, reply->len);
        const spendcap::RedisErrorClass error = spendcap::classify_redis_error(text);
        if (error.kind == RedisErrorKind::script_missing && !op->reloaded_script && op->work.script != nullptr) {
            if (!reload_and_resend(op)) {
                finish(op, RedisStatus::unavailable, nullptr);
            }
            return;
        }
        if (follow_redirect(op, text) || retry_later(op, error)) {
            return;
        }
        count_error(kReplyError);
        if (error.reconnect && op->connection != nullptr) {
            op->connection->drop_soon(text);
        }
    }
    finish(op, RedisStatus::reply, reply);
}

// The op a reply is for; its connection hears that a reply came.
RedisOp *op_of(const redisReply *reply, void *privdata) {
    auto *op = static_cast<RedisOp *>(privdata);
    if (reply != nullptr && op->connection != nullptr) {
        op->connection->replied();
    }
    return op;
}

void on_reply(redisAsyncContext *, void *r, void *privdata) {
    redis_guarded(log_of(), "redis reply", [&] {
        auto *reply = static_cast<redisReply *>(r);
        RedisOp *op = op_of(reply, privdata);
        op->ask = nullptr;  // an ASK is followed once
        if (!op->reliable) {
            on_direct_reply(op, reply);
        } else if (op->waits && !op->wait_unsent) {
            op->gist = gist_of(reply);  // its WAIT's reply decides
        } else {
            on_reliable_reply(op, gist_of(reply), !op->waits);
        }
    });
}

void on_wait_reply(redisAsyncContext *, void *r, void *privdata) {
    redis_guarded(log_of(), "redis wait", [&] {
        auto *reply = static_cast<redisReply *>(r);
        RedisOp *op = op_of(reply, privdata);
        const bool confirmed = reply != nullptr && reply->type == REDIS_REPLY_INTEGER
                               && reply->integer >= client->nodes.replicas();
        op->waits = false;
        on_reliable_reply(op, op->gist, confirmed);
    });
}

void on_op_timeout(ngx_event_t *ev) {
    redis_guarded(log_of(), "redis timeout", [&] {
        auto *op = static_cast<RedisOp *>(ev->data);
        RedisDone done = op->done;
        op->done = nullptr;  // the reply (or the retry timer), when it comes, frees the op silently
        if (done != nullptr) {
            count_error(kTimeoutError);
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

bool send_reliably(PendingWrite work) {
    RedisOp *op = new_op(std::move(work), kReliableTimeout);
    op->reliable = true;
    if (!send_op(op)) {
        client->backlog.insert(std::move(op->work));
        finish(op, RedisStatus::unavailable, nullptr);
        return false;
    }
    shared_backlog_sent(op->work.shared);
    client->backlog.in_flight(op->work);
    return true;
}

void flush_backlog() {
    redis_guarded(log_of(), "redis backlog", [] {
        while (std::optional<PendingWrite> next = client->backlog.take(client->nodes.connected())) {
            if (!send_reliably(std::move(*next))) {
                // Its node is not connected (a cluster's master lost, the map
                // being read again): everything waits for the retry timer.
                client->backlog.hold("no connection to the master of its slot");
                client->nodes.refresh_soon();
                break;
            }
        }
    });
}

// Writes that workers now gone left in the node's shared backlog become
// this worker's: sent after its own, saying they may have been sent before
// when their worker had sent them (settle.lua then counts each once).
void adopt_writes() {
    WriteBacklog &backlog = client->backlog;
    const std::size_t mine = backlog.size() + backlog.in_flight_count();
    if (!shared_backlog_others_wait(mine)) {
        return;
    }
    std::vector<AdoptedWrite> adopted = shared_backlog_adopt(kSharedBacklogEntries - std::min(mine, kSharedBacklogEntries));
    if (adopted.empty()) {
        return;
    }
    ngx_log_error(NGX_LOG_WARN, client->log, 0,
                  "spend_cap: sending %uz writes that workers now gone left in the shared backlog", adopted.size());
    for (AdoptedWrite &a : adopted) {
        PendingWrite work;
        work.seq = backlog.next_seq();
        work.command = std::move(a.command);
        work.script = &spendcap::lua_script(a.script).text;
        work.slot = a.slot;
        work.says_sent_before = a.says_sent_before;
        work.shared = a.write;
        const ngx_pid_t from = a.from;
        work.describe = [summary = std::move(a.summary), from] {
            return summary + " (left by worker " + std::to_string(from) + ")";
        };
        if (a.sent) {
            sent_before(work);
        }
        backlog.insert(std::move(work));
    }
    flush_backlog();
}

void on_adopt_timer(ngx_event_t *ev) {
    redis_guarded(log_of(), "redis shared backlog", [&] {
        if (client == nullptr) {
            return;
        }
        adopt_writes();
        if (!ngx_exiting && !ngx_terminate && !ngx_quit) {
            ngx_add_timer(ev, kAdoptEvery);
        }
    });
}

PendingWrite pending(std::vector<std::string> &&argv, const std::string *script) {
    PendingWrite work;
    if (client->nodes.cluster()) {
        work.slot = spendcap::command_slot(argv);
    }
    work.command = to_resp(argv);
    work.script = script;
    return work;
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

void redis_start(RedisSettings settings, ngx_resolver_t *resolver, ngx_log_t *log) {
    client = new Client(std::move(settings), resolver, log);
    client->nodes.start();
    redis_init_timer(&client->adopt_timer, on_adopt_timer, log, client);
    ngx_add_timer(&client->adopt_timer, 1);  // what a worker that died left, at once
}

void redis_stop() {
    if (client == nullptr) {
        return;
    }
    if (client->adopt_timer.timer_set) {
        ngx_del_timer(&client->adopt_timer);
    }
    client->nodes.stop();  // what waits for a reply joins the backlog
    client->backlog.abandon();
    delete client;
    client = nullptr;
}

RedisOp *redis_eval(std::vector<std::string> argv, const std::string *script, ngx_msec_t timeout, RedisDone done,
                    void *data) {
    if (!redis_ready()) {
        return nullptr;
    }
    RedisOp *op = new_op(pending(std::move(argv), script), timeout);
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

bool redis_ready() { return client != nullptr && client->nodes.usable(); }

bool redis_up() { return client != nullptr && client->nodes.all_connected(); }

void redis_eval_reliably(std::vector<std::string> argv, MustLand what) {
    if (client == nullptr) {
        return;
    }
    PendingWrite work = pending(std::move(argv), what.script != nullptr ? &what.script->text : nullptr);
    work.seq = client->backlog.next_seq();
    work.says_sent_before = what.says_sent_before;
    work.settlements = what.settlements;
    if (zone_pool() != nullptr) {
        SharedWriteInfo info;
        info.command = work.command;
        info.script = what.script != nullptr ? std::string_view(what.script->name) : std::string_view();
        info.summary = what.summary;
        info.slot = work.slot;
        info.settlements = what.settlements;
        info.says_sent_before = what.says_sent_before;
        work.shared = shared_backlog_keep(info);
        if (work.shared == nullptr) {
            return;  // the backlog is full: said and counted
        }
    }
    work.describe = std::move(what.describe);
    if (client->backlog.empty() && client->backlog.can_send(client->nodes.connected())) {
        send_reliably(std::move(work));
    } else {
        client->backlog.insert(std::move(work));
    }
}

}  // namespace spendcap_ngx
