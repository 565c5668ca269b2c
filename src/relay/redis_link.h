// The relay's Redis: one standalone server or a Redis Cluster, over hiredis's
// blocking API (the relay is not NGINX: a thread may wait). On a cluster each
// command goes to the master of its first key's slot, as the module's do
// (the core's redis/cluster: CLUSTER SLOTS, MOVED, ASK); TRYAGAIN and
// CLUSTERDOWN are retried shortly. One link per thread: hiredis contexts are
// not shared.
#pragma once

#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "redis/cluster.h"
#include "redis/reply.h"

struct redisContext;

namespace spendcap::relay {

struct RedisError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

class RedisLink {
public:
    // `nodes`: HOST:PORT each (a cluster's seeds, or the one server).
    RedisLink(std::vector<std::string> nodes, bool cluster, std::string password, int timeout_ms = 5000);
    ~RedisLink();
    RedisLink(const RedisLink &) = delete;
    RedisLink &operator=(const RedisLink &) = delete;

    // Connects (and reads the slot map): throws RedisError naming the node.
    void connect();
    // One command; `key_index`: its argument that is the key routing it (0:
    // none, any node). An error reply is returned as such; a lost connection
    // or no answer throws RedisError.
    Reply command(const std::vector<std::string> &argv, std::size_t key_index = 1);
    // Several commands of one key's slot, pipelined: their replies in order.
    std::vector<Reply> pipeline(const std::vector<std::vector<std::string>> &commands, const std::string &key);

    bool cluster() const { return cluster_; }
    // A connection to any node for SUBSCRIBE (a cluster broadcasts PUBLISH).
    redisContext *subscriber();

private:
    redisContext *node(const NodeAddress &address);
    redisContext *route(int slot, NodeAddress *address);
    void refresh_map();
    void drop(const NodeAddress &address);

    std::vector<NodeAddress> seeds_;
    bool cluster_;
    std::string password_;
    int timeout_ms_;
    SlotMap map_;
    std::map<std::string, redisContext *> connections_;  // by HOST:PORT
};

NodeAddress parse_node(const std::string &text);  // HOST:PORT

}  // namespace spendcap::relay
