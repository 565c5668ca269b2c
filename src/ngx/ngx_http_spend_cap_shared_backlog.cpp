#include "ngx_http_spend_cap_shared_backlog.h"

#include <cerrno>
#include <csignal>
#include <unordered_map>

#include "ngx_http_spend_cap_zone.h"

namespace spendcap_ngx {

struct SharedWrite {
    ngx_queue_t queue;
    ngx_pid_t owner;
    std::uint32_t settlements;
    std::int32_t slot;
    std::uint8_t says_sent_before;
    volatile std::uint8_t sent;  // written by its owner only
    std::uint16_t script_len, summary_len;
    std::uint32_t command_len;
    u_char data[1];  // script, summary, command
};

namespace {

std::size_t entry_bytes(const SharedWriteInfo &info) {
    return offsetof(SharedWrite, data) + info.script.size() + info.summary.size() + info.command.size();
}

std::size_t entry_bytes(const SharedWrite *w) {
    return offsetof(SharedWrite, data) + w->script_len + w->summary_len + w->command_len;
}

// One line a second when the backlog is full, with what was refused since.
void say_full(const SharedWriteInfo &info) {
    static time_t said_at;
    static ngx_uint_t refused;
    refused++;
    if (ngx_time() == said_at) {
        return;
    }
    said_at = ngx_time();
    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                  "spend_cap: the settlement backlog is full (%uz writes, %uz bytes waiting for redis): %*s "
                  "not kept, %ui writes refused since the last line; their reservations are given back at their "
                  "deadline",
                  kSharedBacklogEntries, kSharedBacklogBytes, info.summary.size(), info.summary.data(), refused);
    refused = 0;
}

bool gone(ngx_pid_t pid) { return pid != ngx_pid && kill(pid, 0) == -1 && errno == ESRCH; }

}  // namespace

SharedWrite *shared_backlog_keep(const SharedWriteInfo &info) {
    ngx_slab_pool_t *pool = zone_pool();
    SharedBacklogHead *head = zone_backlog();
    if (pool == nullptr || head == nullptr) {
        return nullptr;
    }
    const std::size_t size = entry_bytes(info);
    SharedWrite *w = nullptr;
    ngx_shmtx_lock(&pool->mutex);
    if (head->entries < kSharedBacklogEntries && head->bytes + size <= kSharedBacklogBytes) {
        w = static_cast<SharedWrite *>(ngx_slab_alloc_locked(pool, size));
    }
    if (w != nullptr) {
        w->owner = ngx_pid;
        w->settlements = info.settlements;
        w->slot = info.slot;
        w->says_sent_before = info.says_sent_before;
        w->sent = 0;
        w->script_len = static_cast<std::uint16_t>(info.script.size());
        w->summary_len = static_cast<std::uint16_t>(info.summary.size());
        w->command_len = static_cast<std::uint32_t>(info.command.size());
        u_char *p = ngx_cpymem(w->data, info.script.data(), info.script.size());
        p = ngx_cpymem(p, info.summary.data(), info.summary.size());
        ngx_memcpy(p, info.command.data(), info.command.size());
        ngx_queue_insert_tail(&head->writes, &w->queue);
        head->entries++;
        head->bytes += size;
    }
    ngx_shmtx_unlock(&pool->mutex);
    spendcap::StatusCounters *counters = status_counters();
    if (w == nullptr) {
        if (counters != nullptr) {
            counters->count_lost(0, info.settlements);
        }
        say_full(info);
        return nullptr;
    }
    if (counters != nullptr) {
        counters->backlog().add(info.settlements);
    }
    return w;
}

void shared_backlog_sent(SharedWrite *write) {
    if (write != nullptr) {
        write->sent = 1;
    }
}

void shared_backlog_done(SharedWrite *write) {
    ngx_slab_pool_t *pool = zone_pool();
    SharedBacklogHead *head = zone_backlog();
    if (write == nullptr || pool == nullptr || head == nullptr) {
        return;
    }
    const std::uint32_t settlements = write->settlements;
    ngx_shmtx_lock(&pool->mutex);
    ngx_queue_remove(&write->queue);
    head->entries--;
    head->bytes -= entry_bytes(write);
    ngx_slab_free_locked(pool, write);
    ngx_shmtx_unlock(&pool->mutex);
    if (spendcap::StatusCounters *counters = status_counters()) {
        counters->backlog().sub(settlements);
    }
}

bool shared_backlog_others_wait(std::size_t mine) {
    SharedBacklogHead *head = zone_backlog();
    return head != nullptr && *static_cast<volatile std::size_t *>(&head->entries) > mine;
}

std::vector<AdoptedWrite> shared_backlog_adopt(std::size_t most) {
    std::vector<AdoptedWrite> adopted;
    ngx_slab_pool_t *pool = zone_pool();
    SharedBacklogHead *head = zone_backlog();
    if (pool == nullptr || head == nullptr || most == 0) {
        return adopted;
    }
    std::unordered_map<ngx_pid_t, bool> owners_gone;  // one kill(0) per owner and pass
    ngx_shmtx_lock(&pool->mutex);
    try {
    for (ngx_queue_t *q = ngx_queue_head(&head->writes); q != ngx_queue_sentinel(&head->writes) && adopted.size() < most;
         q = ngx_queue_next(q)) {
        SharedWrite *w = ngx_queue_data(q, SharedWrite, queue);
        if (w->owner == ngx_pid) {
            continue;
        }
        auto known = owners_gone.find(w->owner);
        const bool is_gone = known != owners_gone.end() ? known->second : (owners_gone[w->owner] = gone(w->owner));
        if (!is_gone) {
            continue;
        }
        AdoptedWrite a;
        a.write = w;
        a.from = w->owner;
        const char *p = reinterpret_cast<const char *>(w->data);
        a.script.assign(p, w->script_len);
        a.summary.assign(p + w->script_len, w->summary_len);
        a.command.assign(p + w->script_len + w->summary_len, w->command_len);
        a.slot = w->slot;
        a.says_sent_before = w->says_sent_before != 0;
        a.sent = w->sent != 0;
        adopted.push_back(std::move(a));
        w->owner = ngx_pid;  // (its `sent` stays: an earlier send may have landed)
    }
    } catch (...) {
        for (const AdoptedWrite &a : adopted) a.write->owner = a.from;  // (still theirs: the next pass)
        ngx_shmtx_unlock(&pool->mutex);
        throw;
    }
    ngx_shmtx_unlock(&pool->mutex);
    return adopted;
}

}  // namespace spendcap_ngx
