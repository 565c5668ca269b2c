// The figures behind spend_cap_status (SPEC section 9), laid out in one block
// of memory that every worker of an NGINX instance maps (a shared memory
// zone): counted with lock-free atomic adds (the same LOCK XADD as NGINX's
// ngx_atomic_fetch_add), never a lock per request, so that a worker that dies
// loses none of what it counted. Org and block labels get their slot once
// and keep it for the life of the block, so no series ever goes backwards.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "http/metrics.h"

namespace spendcap {

// $spend_cap_decision's values, in their metric's order.
inline constexpr std::array<const char *, 6> kDecisionNames = {"allow",         "block",     "reject",
                                                               "dry_run_block", "fail_open", "error"};
// $spend_cap_settled_from's values.
inline constexpr std::array<const char *, 2> kSettledFromNames = {"usage", "reservation"};
// spend_cap_redis_errors_total{kind}: a connection that failed or was lost, a
// command not answered within its timeout, an error reply.
inline constexpr std::array<const char *, 3> kRedisErrorNames = {"connection", "timeout", "reply"};
// spend_cap_settlements_lost_total{reason}: the backlog was full, or Redis
// refused it for good (a script error).
inline constexpr std::array<const char *, 2> kLostNames = {"backlog_full", "refused"};

// The longest org (or scope:limit) label kept; a longer one counts as _other.
inline constexpr std::size_t kMaxLabelBytes = 128;
// Distinct scope:limit pairs with their own series (4 scopes x every limit
// fit many times over).
inline constexpr std::size_t kMaxBlockedLabels = 128;
// spend_cap_status_orgs' bounds.
inline constexpr std::size_t kDefaultStatusOrgs = 50, kMaxStatusOrgs = 10000;

// A counter that saturates rather than wraps (money can be absurd).
struct SharedCounter {
    std::atomic<std::uint64_t> value{0};
    void add(std::uint64_t n);
    void sub(std::uint64_t n);  // a gauge's; never below 0
    std::uint64_t get() const { return value.load(std::memory_order_relaxed); }
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "counters shared between processes");
static_assert(std::atomic<std::uint32_t>::is_always_lock_free, "labels shared between processes");

struct OrgCounters {
    SharedCounter cost;
    std::array<SharedCounter, kDecisionNames.size()> requests;
};

// A label's slot in an open-addressing table: claimed once (empty -> writing
// -> published), never freed.
struct LabelSlot {
    std::atomic<std::uint32_t> state{0};
    std::uint32_t length = 0;
    char name[kMaxLabelBytes];
};

class StatusCounters {
public:
    // The bytes it takes for `orgs` orgs with their own labels.
    static std::size_t bytes(std::size_t orgs);
    // Made fresh in `memory` (at least bytes(orgs), aligned for 8 bytes).
    static StatusCounters *create(void *memory, std::size_t orgs);
    // Whether `memory` holds one made by create with the same `orgs` (a
    // reload that keeps the zone keeps its figures).
    static StatusCounters *existing(void *memory, std::size_t orgs);

    // A request without an org (refused before its key was known) counts as _other.
    void count_request(std::string_view org, std::size_t decision);
    void count_block(std::string_view scope, std::string_view limit);
    // A settled request: its org's cost, the totals, tokens, where it came from.
    void count_settled(std::string_view org, std::uint64_t cost, std::uint64_t input_tokens,
                       std::uint64_t output_tokens, std::size_t from);
    void count_reserved(std::uint64_t estimate) { reserved_.add(estimate); }
    void observe_reserve(std::uint64_t micros);
    void count_redis_error(std::size_t kind) { redis_errors_[kind].add(1); }
    void count_lost(std::size_t reason, std::uint64_t settlements) { lost_[reason].add(settlements); }
    SharedCounter &backlog() { return backlog_; }

    // Every figure, for render_metrics.
    MetricsView view(bool redis_up, std::string version, std::string nginx) const;

    // The slot of `org` (its own, or the _other one past the first `orgs`).
    std::size_t org_slot(std::string_view org);
    std::size_t other_slot() const { return org_capacity_; }

private:
    StatusCounters(std::size_t orgs);
    LabelSlot *org_labels();
    OrgCounters *org_counters();
    LabelSlot *blocked_labels();
    SharedCounter *blocked_counters();
    const LabelSlot *org_labels() const;
    const OrgCounters *org_counters() const;
    const LabelSlot *blocked_labels() const;
    const SharedCounter *blocked_counters() const;

    std::uint64_t magic_;
    std::size_t orgs_;          // labels to give out
    std::size_t org_capacity_;  // slots: a power of two, at least twice orgs_
    std::size_t blocked_capacity_;
    std::atomic<std::uint64_t> org_claims_{0}, blocked_claims_{0};
    std::array<SharedCounter, kDecisionNames.size()> requests_;
    SharedCounter cost_, reserved_, input_tokens_, output_tokens_;
    std::array<SharedCounter, kSettledFromNames.size()> settlements_;
    std::array<SharedCounter, kLostNames.size()> lost_;
    SharedCounter backlog_;
    std::array<SharedCounter, kRedisErrorNames.size()> redis_errors_;
    std::array<SharedCounter, kRedisMicrosBounds.size() + 1> redis_buckets_;
    SharedCounter redis_micros_;
    // then: org label slots, org counters (+1: _other), blocked label slots,
    // blocked counters (+1: a pair past every slot)
};

// A decision's (or a settled_from's) place in the arrays above.
std::size_t decision_slot(std::string_view decision);
std::size_t settled_from_slot(std::string_view from);

// Finds `name` in the table, or claims a slot for it while `claims` stays
// under `limit`; returns `capacity` when it gets none (the table is full, the
// name too long, or a writer never finished). Lock-free: a slot is claimed
// with a compare-and-swap and published once its name is written.
std::size_t find_or_claim_label(LabelSlot *slots, std::size_t capacity, std::atomic<std::uint64_t> &claims,
                                std::size_t limit, std::string_view name);

}  // namespace spendcap
