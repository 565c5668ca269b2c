// The connections a worker's Redis client sends over: the one Redis of
// `spend_cap_redis`, or one per master of the Redis Cluster of
// `spend_cap_redis_cluster` (after slact/nchan's redis_nodeset), with the
// slot map read by CLUSTER SLOTS from any node it names, refreshed on a
// MOVED, a lost node, a CLUSTERDOWN, and every 10 s. With
// `spend_cap_redis_replicas` each node has a second connection for the
// writes that must land and their WAIT, so that a WAIT held up by a lagging
// replica never holds up a reserve.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ngx.h"
#include "ngx_http_spend_cap_redis_connection.h"
#include "redis/cluster.h"

namespace spendcap_ngx {

struct RedisSettings {
    std::vector<RedisEndpoint> seeds;  // the one Redis, or the Cluster's seed nodes
    bool cluster = false;
    int replicas = 0;                  // WAIT for this many before a write counts as landed
};

class RedisNodes {
public:
    RedisNodes(RedisSettings settings, ngx_resolver_t *resolver, ngx_log_t *log, RedisConnection::Owner &owner);
    ~RedisNodes();
    RedisNodes(const RedisNodes &) = delete;
    RedisNodes &operator=(const RedisNodes &) = delete;

    void start();
    void stop();

    bool cluster() const { return settings_.cluster; }
    int replicas() const { return settings_.replicas; }

    // The connection for a command of `slot` (-1: any node): nullptr while
    // the slot's master is not known. `writes`: the one for writes that must
    // land.
    RedisConnection *route(int slot, bool writes);
    // The connection to the node an ASK names (opened if new).
    RedisConnection *node(const spendcap::NodeAddress &address, bool writes);
    // A MOVED: the slot is the named node's from now on; the map is read again.
    void moved(const spendcap::Redirect &redirect);
    // The map may have changed: it is read again soon (at most every 100 ms).
    void refresh_soon();

    // Some connection is up or being made.
    bool usable() const;
    // Some connection is up.
    bool connected() const;
    // Every node's connection is up (spend_cap_redis_up).
    bool all_connected() const;

    // From the connections' owner.
    void connection_ready();
    void connection_lost(RedisConnection &connection);

private:
    struct Node {
        spendcap::NodeAddress address;
        std::unique_ptr<RedisConnection> commands;
        std::unique_ptr<RedisConnection> writes;  // with replicas to wait for
    };

    Node *add_node(const RedisEndpoint &endpoint);
    Node *node_at(const spendcap::NodeAddress &address);
    void add_seeds();
    void refresh();
    void apply(const spendcap::SlotMap &map);
    void retire(std::unique_ptr<Node> node);
    void warn_unreachable();
    static void on_slots(redisAsyncContext *ac, void *reply, void *privdata);
    static void on_tick(ngx_event_t *ev);
    static void on_soon(ngx_event_t *ev);
    static void on_reap(ngx_event_t *ev);

    RedisSettings settings_;
    ngx_resolver_t *resolver_;
    ngx_log_t *log_;
    RedisConnection::Owner &owner_;
    std::map<std::string, std::unique_ptr<Node>> nodes_;  // by "host:port"
    std::vector<std::unique_ptr<Node>> retired_;          // stopped outside the callback that retired them
    std::vector<Node *> slots_;                           // the master of each slot (cluster)
    bool mapped_ = false;                                 // a map was read
    bool refreshing_ = false;
    bool stale_ = false;                                  // read the map again at the next chance
    RedisConnection *asked_ = nullptr;                    // where the map is being read
    std::string asked_host_;
    ngx_msec_t last_refresh_ = 0;
    ngx_msec_t last_warning_ = 0;
    ngx_event_t tick_{}, soon_{}, reap_{};
};

}  // namespace spendcap_ngx
