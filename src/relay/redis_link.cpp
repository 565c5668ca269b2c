#include "relay/redis_link.h"

#include <hiredis/hiredis.h>

#include <chrono>
#include <thread>

#include "redis/errors.h"

namespace spendcap::relay {
namespace {

constexpr int kMaxRedirects = 5;

Reply to_reply(const redisReply *r) {
    Reply out;
    if (r == nullptr) return out;
    switch (r->type) {
    case REDIS_REPLY_INTEGER:
        out.type = Reply::Type::integer;
        out.integer = r->integer;
        break;
    case REDIS_REPLY_STRING:
        out.type = Reply::Type::string;
        out.str.assign(r->str, r->len);
        break;
    case REDIS_REPLY_STATUS:
        out.type = Reply::Type::status;
        out.str.assign(r->str, r->len);
        break;
    case REDIS_REPLY_ERROR:
        out.type = Reply::Type::error;
        out.str.assign(r->str, r->len);
        break;
    case REDIS_REPLY_ARRAY:
        out.type = Reply::Type::array;
        for (std::size_t i = 0; i < r->elements; ++i) out.elements.push_back(to_reply(r->element[i]));
        break;
    default:
        break;
    }
    return out;
}

void append(redisContext *c, const std::vector<std::string> &argv) {
    std::vector<const char *> args;
    std::vector<std::size_t> lengths;
    for (const std::string &a : argv) {
        args.push_back(a.data());
        lengths.push_back(a.size());
    }
    redisAppendCommandArgv(c, static_cast<int>(args.size()), args.data(), lengths.data());
}

}  // namespace

NodeAddress parse_node(const std::string &text) {
    const auto colon = text.rfind(':');
    NodeAddress a;
    a.host = colon == std::string::npos ? text : text.substr(0, colon);
    a.port = colon == std::string::npos ? 6379 : std::stoi(text.substr(colon + 1));
    return a;
}

RedisLink::RedisLink(std::vector<std::string> nodes, bool cluster, std::string password, int timeout_ms)
    : cluster_(cluster), password_(std::move(password)), timeout_ms_(timeout_ms) {
    for (const std::string &n : nodes) seeds_.push_back(parse_node(n));
}

RedisLink::~RedisLink() {
    for (auto &entry : connections_) redisFree(entry.second);
}

redisContext *RedisLink::node(const NodeAddress &address) {
    auto found = connections_.find(address.name());
    if (found != connections_.end()) return found->second;
    timeval tv{timeout_ms_ / 1000, (timeout_ms_ % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(address.host.c_str(), address.port, tv);
    if (c == nullptr || c->err) {
        std::string why = c != nullptr ? c->errstr : "out of memory";
        if (c != nullptr) redisFree(c);
        throw RedisError("cannot connect to redis " + address.name() + ": " + why);
    }
    redisSetTimeout(c, tv);
    if (!password_.empty()) {
        auto *r = static_cast<redisReply *>(redisCommand(c, "AUTH %b", password_.data(), password_.size()));
        const bool ok = r != nullptr && r->type != REDIS_REPLY_ERROR;
        std::string why = r != nullptr && r->type == REDIS_REPLY_ERROR ? std::string(r->str, r->len) : "no answer";
        if (r != nullptr) freeReplyObject(r);
        if (!ok) {
            redisFree(c);
            throw RedisError("redis " + address.name() + " refused AUTH: " + why);
        }
    }
    connections_[address.name()] = c;
    return c;
}

void RedisLink::drop(const NodeAddress &address) {
    auto found = connections_.find(address.name());
    if (found != connections_.end()) {
        redisFree(found->second);
        connections_.erase(found);
    }
}

void RedisLink::refresh_map() {
    std::string last_error = "no seed";
    std::vector<NodeAddress> ask = map_.masters;
    ask.insert(ask.end(), seeds_.begin(), seeds_.end());
    for (const NodeAddress &a : ask) {
        try {
            redisContext *c = node(a);
            auto *r = static_cast<redisReply *>(redisCommand(c, "CLUSTER SLOTS"));
            if (r == nullptr) {
                drop(a);
                continue;
            }
            const Reply reply = to_reply(r);
            freeReplyObject(r);
            std::optional<SlotMap> map = parse_cluster_slots(reply, a.host);
            if (map && map->complete()) {
                map_ = std::move(*map);
                return;
            }
            last_error = "the slot map of " + a.name() + " is not complete";
        } catch (const RedisError &e) {
            last_error = e.what();
        }
    }
    throw RedisError("cannot read the cluster's slot map: " + last_error);
}

void RedisLink::connect() {
    if (cluster_) {
        refresh_map();
        for (const NodeAddress &m : map_.masters) node(m);
    } else {
        redisContext *c = node(seeds_.front());
        auto *r = static_cast<redisReply *>(redisCommand(c, "PING"));
        if (r == nullptr) {
            drop(seeds_.front());
            throw RedisError("redis " + seeds_.front().name() + " does not answer");
        }
        freeReplyObject(r);
    }
}

redisContext *RedisLink::route(int slot, NodeAddress *address) {
    if (!cluster_ || slot < 0) {
        *address = cluster_ && !map_.masters.empty() ? map_.masters.front() : seeds_.front();
        return node(*address);
    }
    const NodeAddress *master = map_.master_of(slot);
    if (master == nullptr) {
        refresh_map();
        master = map_.master_of(slot);
        if (master == nullptr) throw RedisError("no master serves slot " + std::to_string(slot));
    }
    *address = *master;
    return node(*address);
}

Reply RedisLink::command(const std::vector<std::string> &argv, std::size_t key_index) {
    const int slot = key_index > 0 && key_index < argv.size() ? key_slot(argv[key_index]) : -1;
    std::optional<NodeAddress> ask;
    for (int attempt = 0; attempt <= kMaxRedirects; ++attempt) {
        NodeAddress address;
        redisContext *c = ask ? node(*ask) : route(slot, &address);
        if (ask) {
            address = *ask;
            append(c, {"ASKING"});
        }
        append(c, argv);
        redisReply *r = nullptr;
        if (ask) {
            void *asking = nullptr;
            if (redisGetReply(c, &asking) == REDIS_OK) freeReplyObject(asking);
        }
        if (redisGetReply(c, reinterpret_cast<void **>(&r)) != REDIS_OK || r == nullptr) {
            const std::string why = c->errstr;
            drop(address);
            throw RedisError("redis " + address.name() + ": " + why);
        }
        Reply reply = to_reply(r);
        freeReplyObject(r);
        ask.reset();
        if (reply.type == Reply::Type::error && cluster_) {
            if (std::optional<Redirect> redirect = parse_redirect(reply.str)) {
                if (redirect->kind == Redirect::Kind::moved) {
                    refresh_map();
                } else {
                    ask = redirect->to;
                }
                continue;
            }
            if (classify_redis_error(reply.str).cluster_changing) {
                std::this_thread::sleep_for(std::chrono::milliseconds(50 << std::min(attempt, 4)));
                refresh_map();
                continue;
            }
        }
        return reply;
    }
    throw RedisError("too many redirections for " + argv.front());
}

std::vector<Reply> RedisLink::pipeline(const std::vector<std::vector<std::string>> &commands,
                                       const std::string &key) {
    NodeAddress address;
    redisContext *c = route(cluster_ ? key_slot(key) : -1, &address);
    for (const auto &argv : commands) append(c, argv);
    std::vector<Reply> replies;
    for (std::size_t i = 0; i < commands.size(); ++i) {
        redisReply *r = nullptr;
        if (redisGetReply(c, reinterpret_cast<void **>(&r)) != REDIS_OK || r == nullptr) {
            const std::string why = c->errstr;
            drop(address);
            throw RedisError("redis " + address.name() + ": " + why);
        }
        replies.push_back(to_reply(r));
        freeReplyObject(r);
    }
    // A redirect in a pipeline (a slot moved meanwhile): each command again, alone.
    for (std::size_t i = 0; i < replies.size(); ++i) {
        if (replies[i].type == Reply::Type::error && cluster_ && parse_redirect(replies[i].str)) {
            std::size_t at = 1;
            while (at < commands[i].size() && commands[i][at] != key) ++at;
            replies[i] = command(commands[i], at);
        }
    }
    return replies;
}

redisContext *RedisLink::subscriber() {
    const NodeAddress &a = cluster_ && !map_.masters.empty() ? map_.masters.front() : seeds_.front();
    timeval tv{timeout_ms_ / 1000, (timeout_ms_ % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(a.host.c_str(), a.port, tv);
    if (c == nullptr || c->err) {
        if (c != nullptr) redisFree(c);
        throw RedisError("cannot connect to redis " + a.name());
    }
    if (!password_.empty()) {
        auto *r = static_cast<redisReply *>(redisCommand(c, "AUTH %b", password_.data(), password_.size()));
        if (r != nullptr) freeReplyObject(r);
    }
    return c;
}

}  // namespace spendcap::relay
