// The backlog of writes that must land (settlements): this worker's queue of
// them (each also kept in the node's shared memory zone until it lands:
// ngx_http_spend_cap_shared_backlog.h), in submission order, sent while the connection takes them and held after
// an error that clears by itself (LOADING, OOM, READONLY, ...) until a
// retry timer, with backoff. Entries the backlog cannot keep are logged,
// each naming what it was.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>

#include "ngx.h"
#include "ngx_http_spend_cap_shared_backlog.h"

namespace spendcap_ngx {

// What a write that must land is, for log lines; called only when one is written.
using RedisDescribe = std::function<std::string()>;

struct PendingWrite {
    std::uint64_t seq = 0;                // submission order
    std::string command;                  // RESP-encoded
    const std::string *script = nullptr;  // for NOSCRIPT
    int slot = -1;                        // a Redis Cluster's slot of its keys (-1: any node)
    // Its last argument says whether it was sent before (a settlement: "0"
    // first, "1" once a send may have landed unseen).
    bool says_sent_before = false;
    // Applied on the master, not yet confirmed by WAIT (kept to be sent again).
    bool unconfirmed = false;
    RedisDescribe describe;
    SharedWrite *shared = nullptr;  // its copy in the zone, freed when it lands or is lost
    unsigned settlements = 0;       // what it counts for in the metrics
};

class WriteBacklog {
public:
    // `retry`: called when a hold ends (the backlog may flow again).
    WriteBacklog(ngx_log_t *log, void (*retry)());
    ~WriteBacklog();

    bool empty() const { return queue_.empty(); }
    std::size_t size() const { return queue_.size(); }
    // Whether writes wait here or in flight (a stopping worker stays for them).
    bool waiting() const { return !queue_.empty() || inflight_ > 0; }
    std::size_t in_flight_count() const { return inflight_; }
    std::uint64_t next_seq() { return next_seq_++; }

    // Back in, in submission order; the oldest entries give way when it is full.
    void insert(PendingWrite write);
    // The next write to send when `connected` and none is held or too much
    // is in flight (it then counts as in flight).
    std::optional<PendingWrite> take(bool connected);
    bool can_send(bool connected) const;
    void in_flight(const PendingWrite &write);
    void answered(const PendingWrite &write);
    // A reply that can never succeed (or no room): logged, counted, lost.
    void lost(const PendingWrite &write, const char *why, bool full = false);
    // A transient error: everything waits for the retry timer (backoff).
    void hold(const char *error);
    // A write landed: the next hold starts from the shortest backoff.
    void landed() { retry_backoff_ = kMinBackoff; }
    // The worker exits: what is left stays in the zone for the node's other
    // workers (lost, and logged, only where it has no copy there).
    void abandon();

private:
    static constexpr ngx_msec_t kMinBackoff = 100;
    static void on_retry(ngx_event_t *ev);
    struct LogLimit {
        time_t second = 0;
        unsigned lines = 0;
        unsigned suppressed = 0;
    };
    bool log_allowed(LogLimit &limit);

    ngx_log_t *log_;
    void (*retry_)();
    std::uint64_t next_seq_ = 1;
    std::deque<PendingWrite> queue_;
    std::size_t bytes_ = 0;
    std::size_t inflight_ = 0;
    std::size_t inflight_bytes_ = 0;
    bool holding_ = false;
    ngx_msec_t retry_backoff_ = kMinBackoff;
    ngx_event_t retry_timer_{};
    LogLimit drop_log_, retry_log_;
};

}  // namespace spendcap_ngx
