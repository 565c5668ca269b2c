#include "ngx_http_spend_cap_redis_backlog.h"

#include <algorithm>
#include <utility>

#include "ngx_http_spend_cap_redis_adapter.h"  // redis_guarded
#include "ngx_http_spend_cap_zone.h"

namespace spendcap_ngx {
namespace {

constexpr ngx_msec_t kMaxBackoff = 5000;
// What an entry's description is counted as, besides its command.
constexpr std::size_t kDescribeBytes = 256;
// The backlog of writes that must land, per worker: entries and bytes. The
// node's shared backlog bounds what it takes in first; these hold only where
// a worker has taken over those of workers that are gone.
constexpr std::size_t kMaxBacklog = kSharedBacklogEntries;
constexpr std::size_t kMaxBacklogBytes = kSharedBacklogBytes + kSharedBacklogEntries * kDescribeBytes;
// Writes that must land, sent and not answered yet: what hiredis's queue
// may hold of them; the rest waits in the backlog.
constexpr std::size_t kMaxInflight = 2000;
constexpr std::size_t kMaxInflightBytes = 8 << 20;
constexpr unsigned kLogLinesPerSecond = 10;

std::string describe(const PendingWrite &w) {
    try {
        return w.describe ? w.describe() : std::string("a write");
    } catch (...) {
        return "a write";
    }
}

// Why an entry gives way to a newer one when the backlog is full.
const char *full_why(const PendingWrite &w) {
    return w.unconfirmed ? "the backlog of writes waiting for redis is full (it was applied on the master; only "
                           "WAIT's confirmation that a replica holds it is given up)"
                         : "the backlog of writes waiting for redis is full";
}

}  // namespace

WriteBacklog::WriteBacklog(ngx_log_t *log, void (*retry)()) : log_(log), retry_(retry) {
    retry_timer_.handler = on_retry;
    retry_timer_.log = log;
    retry_timer_.data = this;
    retry_timer_.cancelable = 1;
}

WriteBacklog::~WriteBacklog() {
    if (retry_timer_.timer_set) {
        ngx_del_timer(&retry_timer_);
    }
}

// At most kLogLinesPerSecond lines a second of one kind; the rest is counted
// and the count logged with the next line that passes.
bool WriteBacklog::log_allowed(LogLimit &limit) {
    const time_t now = ngx_time();
    if (now != limit.second) {
        if (limit.suppressed > 0) {
            ngx_log_error(NGX_LOG_ERR, log_, 0, "spend_cap: %ui similar lines suppressed",
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

void WriteBacklog::lost(const PendingWrite &write, const char *why, bool full) {
    shared_backlog_done(write.shared);
    if (spendcap::StatusCounters *counters = status_counters()) {
        counters->count_lost(full ? 0 : 1, write.settlements);
    }
    if (log_allowed(drop_log_)) {
        ngx_log_error(NGX_LOG_ERR, log_, 0, "spend_cap: %s lost: %s", describe(write).c_str(), why);
    }
}

void WriteBacklog::insert(PendingWrite write) {
    const std::size_t size = write.command.size() + kDescribeBytes;
    while (!queue_.empty() && (queue_.size() >= kMaxBacklog || bytes_ + size > kMaxBacklogBytes)) {
        PendingWrite &oldest = queue_.front();
        if (oldest.seq > write.seq) {
            lost(write, full_why(write), true);
            return;
        }
        bytes_ -= oldest.command.size() + kDescribeBytes;
        lost(oldest, full_why(oldest), true);
        queue_.pop_front();
    }
    auto at = std::upper_bound(queue_.begin(), queue_.end(), write.seq,
                               [](std::uint64_t seq, const PendingWrite &e) { return seq < e.seq; });
    bytes_ += size;
    queue_.insert(at, std::move(write));
}

bool WriteBacklog::can_send(bool connected) const {
    return connected && !holding_ && inflight_ < kMaxInflight && inflight_bytes_ < kMaxInflightBytes;
}

std::optional<PendingWrite> WriteBacklog::take(bool connected) {
    if (queue_.empty() || !can_send(connected)) {
        return std::nullopt;
    }
    PendingWrite write = std::move(queue_.front());
    queue_.pop_front();
    bytes_ -= write.command.size() + kDescribeBytes;
    return write;
}

void WriteBacklog::in_flight(const PendingWrite &write) {
    inflight_++;
    inflight_bytes_ += write.command.size();
}

void WriteBacklog::answered(const PendingWrite &write) {
    inflight_--;
    inflight_bytes_ -= write.command.size();
}

void WriteBacklog::hold(const char *error) {
    if (log_allowed(retry_log_)) {
        ngx_log_error(NGX_LOG_WARN, log_, 0, "spend_cap: redis answered \"%s\"; %uz writes wait, next try in %M ms",
                      error, queue_.size(), retry_backoff_);
    }
    holding_ = true;
    if (!retry_timer_.timer_set) {
        retry_timer_.cancelable = 0;  // writes wait for it
        ngx_add_timer(&retry_timer_, retry_backoff_);
        retry_backoff_ = std::min(retry_backoff_ * 2, kMaxBackoff);
    }
}

void WriteBacklog::on_retry(ngx_event_t *ev) {
    auto *self = static_cast<WriteBacklog *>(ev->data);
    redis_guarded(self->log_, "redis retry", [&] {
        self->holding_ = false;
        self->retry_();
    });
}

void WriteBacklog::abandon() {
    if (queue_.empty()) {
        return;
    }
    std::size_t kept = 0;
    drop_log_ = LogLimit{};
    for (const PendingWrite &w : queue_) {
        if (w.shared != nullptr) {
            kept++;
        } else {
            lost(w, "the worker exits");
        }
    }
    if (kept > 0) {
        ngx_log_error(NGX_LOG_WARN, log_, 0,
                      "spend_cap: worker exits with %uz writes not accepted by redis; they wait in the shared "
                      "backlog for another worker of this nginx",
                      kept);
    }
    queue_.clear();
    bytes_ = 0;
}

}  // namespace spendcap_ngx
