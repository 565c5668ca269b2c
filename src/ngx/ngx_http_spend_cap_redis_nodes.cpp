#include "ngx_http_spend_cap_redis_nodes.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <arpa/inet.h>

#include <utility>

#include "ngx_http_spend_cap_redis.h"  // to_reply

namespace spendcap_ngx {
namespace {

constexpr ngx_msec_t kTick = 1000;
constexpr ngx_msec_t kRefreshEvery = 10000;
constexpr ngx_msec_t kRefreshAtMostEvery = 100;
constexpr ngx_msec_t kWarnEvery = 10000;
const std::string kClusterSlots = "*2\r\n$7\r\nCLUSTER\r\n$5\r\nSLOTS\r\n";

}  // namespace

RedisNodes::RedisNodes(RedisSettings settings, ngx_resolver_t *resolver, ngx_log_t *log,
                       RedisConnection::Owner &owner)
    : settings_(std::move(settings)), resolver_(resolver), log_(log), owner_(owner) {
    redis_init_timer(&tick_, on_tick, log, this);
    redis_init_timer(&soon_, on_soon, log, this);
    redis_init_timer(&reap_, on_reap, log, this);
    if (settings_.cluster) {
        slots_.assign(spendcap::kClusterSlots, nullptr);
    }
}

RedisNodes::~RedisNodes() { stop(); }

void RedisNodes::start() {
    add_seeds();
    if (settings_.cluster) {
        ngx_add_timer(&tick_, kTick);
    }
}

void RedisNodes::stop() {
    for (ngx_event_t *timer : {&tick_, &soon_, &reap_}) {
        if (timer->timer_set) {
            ngx_del_timer(timer);
        }
    }
    // Stopping a connection answers what waits on it; those answers may look
    // here, so the nodes stay in place until every one is stopped.
    for (auto &entry : nodes_) {
        entry.second->commands->stop();
        if (entry.second->writes) entry.second->writes->stop();
    }
    for (auto &node : retired_) {
        node->commands->stop();
        if (node->writes) node->writes->stop();
    }
    asked_ = nullptr;
    slots_.assign(slots_.size(), nullptr);
    nodes_.clear();
    retired_.clear();
}

RedisNodes::Node *RedisNodes::add_node(const RedisEndpoint &endpoint) {
    const std::string name = endpoint.unix_path.empty() ? endpoint.host + ":" + std::to_string(endpoint.port)
                                                        : endpoint.unix_path;
    auto found = nodes_.find(name);
    if (found != nodes_.end()) {
        return found->second.get();
    }
    auto node = std::make_unique<Node>();
    node->address = spendcap::NodeAddress{endpoint.host, endpoint.port};
    node->commands = std::make_unique<RedisConnection>(endpoint, log_, owner_, resolver_);
    if (settings_.replicas > 0) {
        node->writes = std::make_unique<RedisConnection>(endpoint, log_, owner_, resolver_);
    }
    Node *out = node.get();
    nodes_.emplace(name, std::move(node));
    out->commands->start();
    if (out->writes) out->writes->start();
    return out;
}

void RedisNodes::add_seeds() {
    for (const RedisEndpoint &seed : settings_.seeds) {
        add_node(seed);
    }
}

// A node the cluster names: same password, db 0 (a cluster has no other).
RedisNodes::Node *RedisNodes::node_at(const spendcap::NodeAddress &address) {
    RedisEndpoint endpoint;
    endpoint.port = address.port;
    // A node announced by name (cluster-preferred-endpoint-type hostname) is
    // resolved by NGINX's resolver: hiredis would block on getaddrinfo.
    in6_addr any;
    if (inet_pton(AF_INET, address.host.c_str(), &any) == 1 || inet_pton(AF_INET6, address.host.c_str(), &any) == 1) {
        endpoint.host = address.host;
    } else {
        endpoint.hostname = address.host;
    }
    endpoint.display = address.name();
    if (!settings_.seeds.empty()) {
        endpoint.password = settings_.seeds.front().password;
    }
    return add_node(endpoint);
}

RedisConnection *RedisNodes::route(int slot, bool writes) {
    Node *node = nullptr;
    if (!settings_.cluster) {
        node = nodes_.empty() ? nullptr : nodes_.begin()->second.get();
    } else if (slot >= 0 && slot < spendcap::kClusterSlots) {
        node = slots_[slot];
        if (node == nullptr) {
            refresh_soon();
        }
    } else {
        for (auto &entry : nodes_) {
            if (entry.second->commands->connected()) {
                node = entry.second.get();
                break;
            }
        }
    }
    if (node == nullptr) {
        return nullptr;
    }
    return writes && node->writes ? node->writes.get() : node->commands.get();
}

RedisConnection *RedisNodes::node(const spendcap::NodeAddress &address, bool writes) {
    Node *n = node_at(address);
    return writes && n->writes ? n->writes.get() : n->commands.get();
}

void RedisNodes::moved(const spendcap::Redirect &redirect) {
    if (!settings_.cluster) {
        return;
    }
    slots_[redirect.slot] = node_at(redirect.to);
    refresh_soon();
}

bool RedisNodes::usable() const {
    for (const auto &entry : nodes_) {
        if (entry.second->commands->usable()) return true;
    }
    return false;
}

bool RedisNodes::connected() const {
    for (const auto &entry : nodes_) {
        if (entry.second->commands->connected()) return true;
    }
    return false;
}

bool RedisNodes::all_connected() const {
    for (const auto &entry : nodes_) {
        if (!entry.second->commands->connected()) return false;
    }
    return !nodes_.empty();
}

void RedisNodes::refresh_soon() {
    if (!settings_.cluster) {
        return;
    }
    stale_ = true;
    if (refreshing_ || soon_.timer_set) {
        return;
    }
    const ngx_msec_t since = ngx_current_msec - last_refresh_;
    ngx_add_timer(&soon_, since >= kRefreshAtMostEvery ? 1 : kRefreshAtMostEvery - since);
}

void RedisNodes::connection_ready() {
    if (settings_.cluster && (!mapped_ || stale_)) {
        refresh_soon();
    }
}

void RedisNodes::connection_lost(RedisConnection &) {
    if (!settings_.cluster) {
        return;
    }
    refresh_soon();
    if (!connected()) {
        warn_unreachable();
    }
}

void RedisNodes::warn_unreachable() {
    if (last_warning_ != 0 && ngx_current_msec - last_warning_ < kWarnEvery) {
        return;
    }
    last_warning_ = ngx_current_msec;
    std::string names;
    for (const auto &entry : nodes_) {
        names += (names.empty() ? "" : ", ") + entry.second->commands->name();
    }
    ngx_log_error(NGX_LOG_ERR, log_, 0,
                  "spend_cap: no node of the redis cluster answers (%s); requests follow spend_cap_fail_mode "
                  "until one does",
                  names.c_str());
}

// CLUSTER SLOTS from a node that answers (the map is the same everywhere
// once the cluster agrees); with none up, the seeds are tried again too.
void RedisNodes::refresh() {
    if (refreshing_) {
        return;
    }
    RedisConnection *to = nullptr;
    for (auto &entry : nodes_) {
        if (entry.second->commands->connected()) {
            to = entry.second->commands.get();
            break;
        }
    }
    if (to == nullptr) {
        add_seeds();  // connect_ready asks again once one is up
        return;
    }
    if (!to->send(kClusterSlots, on_slots, this)) {
        return;
    }
    refreshing_ = true;
    stale_ = false;
    asked_ = to;
    asked_host_ = to->endpoint().host;
    last_refresh_ = ngx_current_msec;
}

void RedisNodes::on_slots(redisAsyncContext *, void *r, void *privdata) {
    auto *self = static_cast<RedisNodes *>(privdata);
    redis_guarded(self->log_, "redis cluster slots", [&] {
        auto *reply = static_cast<redisReply *>(r);
        RedisConnection *asked = self->asked_;
        self->refreshing_ = false;
        self->asked_ = nullptr;
        if (reply == nullptr) {
            self->stale_ = true;
            return;
        }
        if (asked != nullptr) {
            asked->replied();
        }
        std::optional<spendcap::SlotMap> map = spendcap::parse_cluster_slots(to_reply(reply), self->asked_host_);
        if (!map || map->masters.empty()) {
            ngx_log_error(NGX_LOG_ERR, self->log_, 0, "spend_cap: redis %s gives no cluster slot map: %s",
                          self->asked_host_.c_str(),
                          reply->type == REDIS_REPLY_ERROR ? reply->str : "not a slot map");
            self->stale_ = true;
            return;
        }
        self->apply(*map);
        if (self->stale_) {
            self->refresh_soon();
        }
    });
}

// The masters get connections (new ones opened, those no longer masters
// closed), and each slot its master.
void RedisNodes::apply(const spendcap::SlotMap &map) {
    std::vector<Node *> masters;
    masters.reserve(map.masters.size());
    for (const spendcap::NodeAddress &address : map.masters) {
        masters.push_back(node_at(address));
    }
    for (int slot = 0; slot < spendcap::kClusterSlots; ++slot) {
        const std::uint16_t owner = map.owner[slot];
        slots_[slot] = owner == spendcap::SlotMap::kUnowned ? nullptr : masters[owner];
    }
    for (auto it = nodes_.begin(); it != nodes_.end();) {
        bool master = false;
        for (Node *m : masters) master = master || m == it->second.get();
        if (master) {
            ++it;
        } else {
            retire(std::move(it->second));
            it = nodes_.erase(it);
        }
    }
    if (!mapped_) {
        ngx_log_error(NGX_LOG_INFO, log_, 0, "spend_cap: redis cluster of %uz masters", masters.size());
    }
    mapped_ = true;
    if (!map.complete()) {
        stale_ = true;  // slots nobody serves: a failover is under way
    }
}

void RedisNodes::retire(std::unique_ptr<Node> node) {
    ngx_log_error(NGX_LOG_INFO, log_, 0, "spend_cap: redis %s is no longer a master of the cluster",
                  node->commands->name().c_str());
    if (asked_ == node->commands.get()) {
        asked_ = nullptr;
    }
    retired_.push_back(std::move(node));
    if (!reap_.timer_set) {
        ngx_add_timer(&reap_, 1);
    }
}

void RedisNodes::on_reap(ngx_event_t *ev) {
    auto *self = static_cast<RedisNodes *>(ev->data);
    redis_guarded(self->log_, "redis cluster nodes", [&] {
        std::vector<std::unique_ptr<Node>> retired = std::move(self->retired_);
        self->retired_.clear();
        for (auto &node : retired) {
            node->commands->stop();  // what still waits on it hears it failed
            if (node->writes) node->writes->stop();
        }
    });
}

void RedisNodes::on_soon(ngx_event_t *ev) {
    auto *self = static_cast<RedisNodes *>(ev->data);
    redis_guarded(self->log_, "redis cluster refresh", [&] { self->refresh(); });
}

void RedisNodes::on_tick(ngx_event_t *ev) {
    auto *self = static_cast<RedisNodes *>(ev->data);
    redis_guarded(self->log_, "redis cluster refresh", [&] {
        // A master not connected may be dead and its replica promoted: asked
        // every tick until the map names one that answers.
        bool all_up = true;
        for (const auto &entry : self->nodes_) all_up = all_up && entry.second->commands->connected();
        if (self->stale_ || !self->mapped_ || !all_up || ngx_current_msec - self->last_refresh_ >= kRefreshEvery) {
            self->refresh();
        }
    });
    ngx_add_timer(ev, kTick);
}

}  // namespace spendcap_ngx
