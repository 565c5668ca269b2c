#include "relay/delivery.h"

#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <memory>
#include <random>
#include <set>
#include <thread>

#include "relay/backoff.h"
#include "relay/http_post.h"
#include "relay/leases.h"
#include "relay/redis_link.h"
#include "relay/wakeups.h"
#include "relay/webhook.h"

namespace spendcap::relay {
namespace {

constexpr const char *kConsumer = "relay";
constexpr std::int64_t kSweepEveryMs = 5000, kOrgsEveryMs = 10000, kLeaseRetryMs = 1000;
constexpr unsigned kDeliveryThreads = 8;


std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

void say(const std::string &line) {
    std::fprintf(stderr, "spend-cap-relay: %s\n", line.c_str());
    std::fflush(stderr);
}

std::string events_key(const std::string &org) { return "sc:{" + org + "}:events"; }
std::string dead_key(const std::string &org, const std::string &endpoint) {
    return "sc:{" + org + "}:events:dead:" + endpoint;
}

std::int64_t stream_ms(const std::string &id) {
    try {
        return std::stoll(id.substr(0, id.find('-')));
    } catch (...) {
        return 0;
    }
}

// The first entry of an XREADGROUP reply ([[key, [[id, [f, v, ...]]]]]).
std::optional<StreamEvent> first_event(const Reply &reply, const std::string &org) {
    if (reply.type != Reply::Type::array || reply.elements.empty()) return std::nullopt;
    const Reply &stream = reply.elements[0];
    if (stream.elements.size() < 2 || stream.elements[1].elements.empty()) return std::nullopt;
    const Reply &entry = stream.elements[1].elements[0];
    if (entry.elements.empty()) return std::nullopt;
    StreamEvent e;
    e.org = org;
    e.stream_id = entry.elements[0].str;
    if (entry.elements.size() > 1) {
        const auto &kv = entry.elements[1].elements;
        for (std::size_t i = 0; i + 1 < kv.size(); i += 2) e.fields.emplace_back(kv[i].str, kv[i + 1].str);
    }
    return e;
}

// One org's delivery to one endpoint.
struct Lane;
void mark_work(Lane &lane);
struct Lane {
    std::string org;
    std::size_t endpoint = 0;
    bool work = false;      // something may wait in the stream
    std::uint64_t wakes = 0;  // times told so: a read that saw nothing clears `work` only if none came since
    bool busy = false;      // a delivery thread has it
    bool disabled = false;  // 410 Gone: until the relay restarts
    std::int64_t next_at = 0;
    int failures = 0;
    std::string head;  // the event being attempted ("": none)
    std::int64_t first_attempt = 0;
    std::int64_t head_ms = 0;
};

void mark_work(Lane &lane) {
    lane.work = true;
    lane.wakes++;
}

struct OrgState {
    std::vector<std::size_t> lanes;
    bool leased = false;
    std::int64_t lease_tried = 0;
    std::int64_t renewed = 0;
};

}  // namespace

struct Relay::Impl {
    RelayConfig config;
    std::vector<std::string> file_orgs;
    RelayMetrics &metrics;
    std::string id;
    std::vector<std::string> since;  // per endpoint: its groups' start id

    std::mutex mutex;
    std::condition_variable wake;
    std::vector<Lane> lanes;
    std::map<std::string, OrgState> orgs;
    std::deque<std::size_t> ready;  // lanes for the delivery threads
    std::set<std::string> woken;    // orgs PUBLISH named
    bool stopping = false;

    std::unique_ptr<RedisLink> control;  // the main thread's

    Impl(RelayConfig c, std::vector<std::string> f, RelayMetrics &m)
        : config(std::move(c)), file_orgs(std::move(f)), metrics(m) {
        char host[256] = {0};
        gethostname(host, sizeof host - 1);
        std::random_device rd;
        id = std::string(host) + ":" + std::to_string(getpid()) + ":" + std::to_string(rd());
    }

    std::unique_ptr<RedisLink> link() {
        auto l = std::make_unique<RedisLink>(config.redis_nodes, config.cluster, config.password);
        l->connect();
        return l;
    }

    // Each endpoint's groups start where it first ran.
    void endpoint_starts() {
        for (const Endpoint &e : config.endpoints) {
            const std::string key = "sc:relay:since:" + e.name;
            control->command({"SET", key, std::to_string(now_ms()) + "-0", "NX"});
            Reply r = control->command({"GET", key});
            since.push_back(r.type == Reply::Type::string ? r.str : "$");
        }
    }

    // Lanes (and groups) for an org not seen before; under `mutex`.
    void add_org(const std::string &org) {
        if (orgs.count(org) > 0 || org.empty()) return;
        OrgState &state = orgs[org];
        for (std::size_t i = 0; i < config.endpoints.size(); ++i) {
            const Endpoint &e = config.endpoints[i];
            if (!e.orgs.empty() && e.orgs.count(org) == 0) continue;
            Reply r = control->command({"XGROUP", "CREATE", events_key(org), e.name, since[i], "MKSTREAM"}, 2);
            if (r.type == Reply::Type::error && r.str.rfind("BUSYGROUP", 0) != 0) {
                say("org " + org + ", endpoint " + e.name + ": cannot make its consumer group: " + r.str);
                continue;
            }
            Lane lane;
            lane.org = org;
            lane.endpoint = i;
            lane.work = true;  // look once: what came while no relay ran
            state.lanes.push_back(lanes.size());
            lanes.push_back(lane);
        }
    }

    void discover_orgs() {
        std::vector<std::string> all = file_orgs;
        Reply r = control->command({"SMEMBERS", "sc:orgs"});
        for (const Reply &m : r.elements) all.push_back(m.str);
        std::lock_guard<std::mutex> lock(mutex);
        for (const std::string &org : all) add_org(org);
    }

    // Which lanes have something waiting (a missed wake-up, events that came
    // while no relay ran): the groups' lag and pending counts.
    void sweep(RedisLink &redis) {
        std::vector<std::string> names;
        {
            std::lock_guard<std::mutex> lock(mutex);
            for (const auto &entry : orgs) names.push_back(entry.first);
        }
        for (const std::string &org : names) {
            Reply r = redis.command({"XINFO", "GROUPS", events_key(org)}, 2);
            if (r.type != Reply::Type::array) continue;
            std::lock_guard<std::mutex> lock(mutex);
            for (const Reply &group : r.elements) {
                std::string name;
                long long pending = 0, lag = 1;  // (no lag field: look)
                for (std::size_t i = 0; i + 1 < group.elements.size(); i += 2) {
                    const std::string &field = group.elements[i].str;
                    const Reply &value = group.elements[i + 1];
                    if (field == "name") name = value.str;
                    if (field == "pending") pending = value.integer;
                    if (field == "lag") lag = value.type == Reply::Type::integer ? value.integer : 1;
                }
                if (pending == 0 && lag == 0) continue;
                for (std::size_t li : orgs[org].lanes) {
                    if (config.endpoints[lanes[li].endpoint].name == name) mark_work(lanes[li]);
                }
            }
        }
    }

    // Leases: taken for orgs with work, renewed while held, given back once
    // caught up. Called by the main thread, under no lock (Redis calls).
    void tend_leases(std::int64_t now) {
        std::vector<std::string> want, renew, give_back;
        {
            std::lock_guard<std::mutex> lock(mutex);
            for (auto &[org, state] : orgs) {
                bool work = false, busy = false;
                for (std::size_t li : state.lanes) {
                    const Lane &l = lanes[li];
                    work = work || (l.work && !l.disabled);
                    busy = busy || l.busy;
                }
                if (!state.leased && work && now - state.lease_tried >= kLeaseRetryMs) {
                    state.lease_tried = now;
                    want.push_back(org);
                } else if (state.leased && !work && !busy) {
                    state.leased = false;
                    give_back.push_back(org);
                } else if (state.leased && now - state.renewed >= kLeaseRenewEveryMs) {
                    renew.push_back(org);
                }
            }
        }
        for (const std::string &org : want) {
            if (take_lease(*control, org, id)) {
                std::lock_guard<std::mutex> lock(mutex);
                orgs[org].leased = true;
                orgs[org].renewed = now;
            }
        }
        for (const std::string &org : renew) {
            const bool still_ours = renew_lease(*control, org, id);
            std::lock_guard<std::mutex> lock(mutex);
            if (still_ours) {
                orgs[org].renewed = now;
            } else {
                orgs[org].leased = false;  // another relay has it now: it delivers this org
                say("lost the lease of org " + org);
            }
        }
        for (const std::string &org : give_back) {
            give_back_lease(*control, org, id);
        }
    }

    // Under `mutex`: lanes ready to go to a delivery thread.
    void dispatch(std::int64_t now) {
        for (auto &[org, state] : orgs) {
            if (!state.leased) continue;
            for (std::size_t li : state.lanes) {
                Lane &l = lanes[li];
                if (l.work && !l.busy && !l.disabled && l.next_at <= now) {
                    l.busy = true;
                    ready.push_back(li);
                }
            }
        }
        if (!ready.empty()) wake.notify_all();
    }

    void update_lag(std::int64_t now) {
        std::map<std::string, double> lag;
        {
            std::lock_guard<std::mutex> lock(mutex);
            for (const Endpoint &e : config.endpoints) lag[e.name] = 0;
            for (const Lane &l : lanes) {
                if (!l.head.empty() && l.head_ms > 0 && !l.disabled) {  // (a 410'd lane waits for a restart)
                    double &worst = lag[config.endpoints[l.endpoint].name];
                    worst = std::max(worst, static_cast<double>(now - l.head_ms) / 1000.0);
                }
            }
        }
        std::lock_guard<std::mutex> lock(metrics.mutex);
        metrics.lag_seconds = lag;
    }

    // One attempt of a lane's head event (a delivery thread's work).
    void attempt(RedisLink &redis, std::size_t li) {
        Lane lane;
        {
            std::lock_guard<std::mutex> lock(mutex);
            lane = lanes[li];
        }
        const Endpoint &endpoint = config.endpoints[lane.endpoint];
        const std::string key = events_key(lane.org);
        // What this group holds unacknowledged comes first (an attempt cut
        // short by a crash), then what is new.
        Reply r = redis.command({"XREADGROUP", "GROUP", endpoint.name, kConsumer, "COUNT", "1", "STREAMS", key, "0"},
                                7);
        if (r.type == Reply::Type::error && r.str.rfind("NOGROUP", 0) == 0) {
            // Redis lost the group (restarted without persistence, flushed): made
            // again where the endpoint started, as at the relay's start.
            redis.command({"XGROUP", "CREATE", key, endpoint.name, since[lane.endpoint], "MKSTREAM"}, 2);
            r = redis.command({"XREADGROUP", "GROUP", endpoint.name, kConsumer, "COUNT", "1", "STREAMS", key, "0"}, 7);
        }
        std::optional<StreamEvent> event = first_event(r, lane.org);
        if (!event) {
            r = redis.command({"XREADGROUP", "GROUP", endpoint.name, kConsumer, "COUNT", "1", "STREAMS", key, ">"},
                              7);
            event = first_event(r, lane.org);
        }
        const std::int64_t now = now_ms();
        std::unique_lock<std::mutex> lock(mutex, std::defer_lock);
        if (!event) {
            lock.lock();
            Lane &l = lanes[li];
            if (l.wakes == lane.wakes) l.work = false;  // caught up (unless an event came meanwhile)
            l.head.clear();
            return;
        }
        if (!endpoint.accepts(event_type(*event), lane.org)) {
            redis.command({"XACK", key, endpoint.name, event->stream_id}, 1);
            return;
        }
        if (lane.head != event->stream_id) {
            lane.head = event->stream_id;
            lane.first_attempt = now;
            lane.failures = 0;
            lane.head_ms = stream_ms(event->stream_id);
            lock.lock();
            lanes[li].head = lane.head;
            lanes[li].first_attempt = now;
            lanes[li].failures = 0;
            lanes[li].head_ms = lane.head_ms;
            lock.unlock();
        }
        const WebhookRequest request = build_request(endpoint, *event, now / 1000);
        const PostResult result = http_post(endpoint.url, request.body, request.headers);
        if (result.status >= 200 && result.status < 300) {
            redis.command({"XACK", key, endpoint.name, event->stream_id}, 1);
            {
                std::lock_guard<std::mutex> m(metrics.mutex);
                metrics.delivered[endpoint.name]++;
            }
            lock.lock();
            lanes[li].head.clear();
            lanes[li].failures = 0;
            return;
        }
        const std::string status = result.status > 0 ? std::to_string(result.status) : "error";
        {
            std::lock_guard<std::mutex> m(metrics.mutex);
            metrics.failed[{endpoint.name, status}]++;
        }
        const std::string what = "event " + webhook_id(*event) + " (" + event_type(*event) + ") to endpoint "
                                 + endpoint.name;
        if (result.status == 410) {
            say(what + ": 410 Gone: the endpoint is off for org " + lane.org + " until the relay restarts");
            lock.lock();
            lanes[li].disabled = true;
            return;
        }
        if (should_give_up(config.retry, lane.first_attempt, now)) {
            std::vector<std::string> dead = {"XADD", dead_key(lane.org, endpoint.name), "MAXLEN", "~", "10000", "*"};
            for (const auto &[f, v] : event->fields) {
                dead.push_back(f);
                dead.push_back(v);
            }
            dead.insert(dead.end(), {"event_id", event->stream_id, "last_status", status});
            redis.command(dead, 1);
            redis.command({"XACK", key, endpoint.name, event->stream_id}, 1);
            say(what + ": given up after " + std::to_string(lane.failures + 1) + " attempts (last: " + status
                + "), moved to " + dead_key(lane.org, endpoint.name));
            {
                std::lock_guard<std::mutex> m(metrics.mutex);
                metrics.dead[endpoint.name]++;
            }
            lock.lock();
            lanes[li].head.clear();
            lanes[li].failures = 0;
            return;
        }
        std::int64_t delay = next_delay_ms(config.retry, lane.failures + 1);
        if (!result.retry_after.empty() && (result.status == 429 || result.status == 503)) {
            if (std::optional<std::int64_t> asked = parse_retry_after_ms(result.retry_after, now / 1000)) {
                delay = *asked;
            }
        }
        say(what + ": attempt " + std::to_string(lane.failures + 1) + " failed ("
            + (result.status > 0 ? "HTTP " + status : result.error) + "); next in " + std::to_string(delay) + " ms");
        lock.lock();
        lanes[li].failures = lane.failures + 1;
        lanes[li].next_at = now + delay;
    }

    void delivery_thread() {
        std::unique_ptr<RedisLink> redis;
        while (true) {
            std::size_t li;
            {
                std::unique_lock<std::mutex> lock(mutex);
                wake.wait(lock, [&] { return stopping || !ready.empty(); });
                if (stopping) return;
                li = ready.front();
                ready.pop_front();
            }
            try {
                if (!redis) redis = link();
                attempt(*redis, li);
            } catch (const std::exception &e) {
                say(std::string("redis: ") + e.what());
                redis.reset();
                std::lock_guard<std::mutex> lock(mutex);
                lanes[li].next_at = now_ms() + 1000;
            }
            // The lane's next event at once, while its org is still ours.
            std::lock_guard<std::mutex> lock(mutex);
            Lane &l = lanes[li];
            if (!stopping && l.work && !l.disabled && l.next_at <= now_ms() && orgs[l.org].leased) {
                ready.push_back(li);
            } else {
                l.busy = false;
            }
        }
    }

    // Every few seconds, on a link of its own (10,000 orgs take a while):
    // which lanes have something waiting.
    void sweep_thread(const std::atomic<bool> &stop) {
        std::unique_ptr<RedisLink> redis;
        while (!stop) {
            try {
                if (!redis) redis = link();
                sweep(*redis);
            } catch (const std::exception &e) {
                say(std::string("sweep: ") + e.what());
                redis.reset();
            }
            std::unique_lock<std::mutex> lock(mutex);
            wake.wait_for(lock, std::chrono::milliseconds(kSweepEveryMs), [&] { return stop.load() || stopping; });
        }
    }

};

Relay::Relay(RelayConfig config, std::vector<std::string> file_orgs)
    : impl_(new Impl(std::move(config), std::move(file_orgs), metrics_)) {
    for (const Endpoint &e : impl_->config.endpoints) {
        metrics_.delivered[e.name] = 0;
        metrics_.dead[e.name] = 0;
        metrics_.lag_seconds[e.name] = 0;
    }
}

Relay::~Relay() { delete impl_; }

void Relay::start() {
    impl_->control = impl_->link();
    impl_->endpoint_starts();
    impl_->discover_orgs();
}

void Relay::run(const std::atomic<bool> &stop) {
    Impl &d = *impl_;
    std::vector<std::thread> threads;
    for (unsigned i = 0; i < kDeliveryThreads; ++i) threads.emplace_back([&d] { d.delivery_thread(); });
    std::thread subscriber([&d, &stop] {
        listen_for_wakeups(d.config, stop, [&d](std::string org) {
            {
                std::lock_guard<std::mutex> lock(d.mutex);
                d.woken.insert(std::move(org));
            }
            d.wake.notify_all();
        });
    });
    std::thread sweeper([&d, &stop] { d.sweep_thread(stop); });
    std::int64_t discovered = now_ms();
    while (!stop) {
        const std::int64_t now = now_ms();
        try {
            if (now - discovered >= kOrgsEveryMs) {
                discovered = now;
                d.discover_orgs();
            }
            std::set<std::string> woken;
            {
                std::lock_guard<std::mutex> lock(d.mutex);
                woken.swap(d.woken);
                for (const std::string &org : woken) {
                    d.add_org(org);
                    for (std::size_t li : d.orgs[org].lanes) mark_work(d.lanes[li]);
                }
            }
            d.tend_leases(now);
            {
                std::lock_guard<std::mutex> lock(d.mutex);
                d.dispatch(now);
            }
            d.update_lag(now);
        } catch (const std::exception &e) {
            say(std::string("redis: ") + e.what());
            try {
                d.control = d.link();
            } catch (const std::exception &) {
            }
        }
        std::unique_lock<std::mutex> lock(d.mutex);
        d.wake.wait_for(lock, std::chrono::milliseconds(50), [&] { return stop.load() || !d.woken.empty(); });
    }
    {
        std::lock_guard<std::mutex> lock(d.mutex);
        d.stopping = true;
    }
    d.wake.notify_all();
    for (std::thread &t : threads) t.join();  // each finishes its attempt in flight
    subscriber.join();
    sweeper.join();
    try {
        for (auto &[org, state] : d.orgs) {
            if (state.leased) give_back_lease(*d.control, org, d.id);
        }
    } catch (const std::exception &) {
    }
}

}  // namespace spendcap::relay
