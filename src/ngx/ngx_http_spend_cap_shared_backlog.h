// Writes that must land (settlements), kept in the node's shared memory zone
// from the moment they are made until Redis has them (and WAIT confirmed
// them): a worker that dies (kill -9, a crash, the OOM killer) or exits
// leaves its writes there, and another worker of the node takes them over and
// sends them, saying they may have been sent before (settle.lua then counts
// each exactly once). The worker's own queue (ngx_http_spend_cap_redis_backlog.h)
// decides the order and the retries; this keeps a copy that outlives it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ngx.h"

namespace spendcap_ngx {

// The bounds, over every worker of the node: entries (a settlement batch of up
// to 64 settlements each) and the bytes of their commands. When full, a new
// write is not kept (one error line a second, and
// spend_cap_settlements_lost_total{reason="backlog_full"}): what waits is
// never dropped for it.
constexpr std::size_t kSharedBacklogEntries = 100000;
constexpr std::size_t kSharedBacklogBytes = 32 << 20;

struct SharedWrite;  // lives in the zone

struct SharedWriteInfo {
    std::string_view command;      // RESP
    std::string_view script;       // its script's name (for NOSCRIPT)
    std::string_view summary;      // what it is, for log lines ("2 settlements of org acme")
    int slot = -1;
    unsigned settlements = 0;      // what the backlog gauge counts of it
    bool says_sent_before = false;
};

// Kept, owned by this worker; nullptr when the backlog is full (said and
// counted) or there is no zone.
SharedWrite *shared_backlog_keep(const SharedWriteInfo &info);
// From now on it may land without its reply reaching us.
void shared_backlog_sent(SharedWrite *write);
// Landed (confirmed), or lost for good: gone from the zone.
void shared_backlog_done(SharedWrite *write);

// A write taken over from a worker that is gone.
struct AdoptedWrite {
    SharedWrite *write = nullptr;
    std::string command, script, summary;
    int slot = -1;
    bool says_sent_before = false;
    bool sent = false;  // it may have landed already
    ngx_pid_t from = 0;
};
// The writes of workers that are gone (at most `most`), now this worker's.
std::vector<AdoptedWrite> shared_backlog_adopt(std::size_t most);
// Whether writes of other workers wait in the zone (cheap: no lock).
bool shared_backlog_others_wait(std::size_t mine);

}  // namespace spendcap_ngx
