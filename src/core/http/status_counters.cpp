#include "http/status_counters.h"

#include <cstring>
#include <new>

namespace spendcap {
namespace {

constexpr std::uint64_t kMagic = 0x7370656e64636170ULL;  // "spendcap"
constexpr std::uint32_t kEmpty = 0, kWriting = 1, kPublished = 2;
// How long a reader waits for a label another worker is writing (a few
// stores): past this, that worker died mid-write and the name counts as _other.
constexpr unsigned kWriterSpins = 1u << 20;

std::size_t round_up(std::size_t n, std::size_t to) { return (n + to - 1) / to * to; }

std::size_t capacity_for(std::size_t labels) {
    std::size_t c = 8;
    while (c < labels * 2) c *= 2;
    return c;
}

std::uint64_t hash_of(std::string_view name) {  // FNV-1a
    std::uint64_t h = 1469598103934665603ULL;
    for (unsigned char c : name) {
        h ^= c;
        h *= 1099511628211ULL;
    }
    return h;
}

struct Offsets {
    std::size_t org_labels, org_counters, blocked_labels, blocked_counters, end;
};

Offsets offsets_for(std::size_t org_capacity, std::size_t blocked_capacity) {
    Offsets o{};
    o.org_labels = round_up(sizeof(StatusCounters), 64);
    o.org_counters = round_up(o.org_labels + org_capacity * sizeof(LabelSlot), 64);
    o.blocked_labels = round_up(o.org_counters + (org_capacity + 1) * sizeof(OrgCounters), 64);
    o.blocked_counters = round_up(o.blocked_labels + blocked_capacity * sizeof(LabelSlot), 64);
    o.end = o.blocked_counters + (blocked_capacity + 1) * sizeof(SharedCounter);
    return o;
}

std::string_view label_of(const LabelSlot &slot) { return {slot.name, slot.length}; }

}  // namespace

void SharedCounter::add(std::uint64_t n) {
    std::uint64_t seen = value.load(std::memory_order_relaxed);
    while (true) {
        const std::uint64_t next = (seen > UINT64_MAX - n) ? UINT64_MAX : seen + n;
        if (next == seen || value.compare_exchange_weak(seen, next, std::memory_order_relaxed)) return;
    }
}

void SharedCounter::sub(std::uint64_t n) {
    std::uint64_t seen = value.load(std::memory_order_relaxed);
    while (true) {
        const std::uint64_t next = seen > n ? seen - n : 0;
        if (next == seen || value.compare_exchange_weak(seen, next, std::memory_order_relaxed)) return;
    }
}

std::size_t find_or_claim_label(LabelSlot *slots, std::size_t capacity, std::atomic<std::uint64_t> &claims,
                                std::size_t limit, std::string_view name) {
    if (name.size() > kMaxLabelBytes) return capacity;
    std::size_t i = hash_of(name) & (capacity - 1);
    for (std::size_t probes = 0; probes < capacity; ++probes, i = (i + 1) & (capacity - 1)) {
        LabelSlot &slot = slots[i];
        std::uint32_t state = slot.state.load(std::memory_order_acquire);
        for (unsigned spins = 0; state == kWriting; ++spins) {
            if (spins == kWriterSpins) return capacity;
            state = slot.state.load(std::memory_order_acquire);
        }
        if (state == kPublished) {
            if (label_of(slot) == name) return i;
            continue;
        }
        // Empty: the name has no slot yet (slots are never freed, so it
        // would have been met before an empty one).
        if (claims.load(std::memory_order_relaxed) >= limit) return capacity;
        std::uint32_t expected = kEmpty;
        if (!slot.state.compare_exchange_strong(expected, kWriting, std::memory_order_acq_rel)) {
            --probes;  // another worker took it meanwhile: look at it again
            i = (i - 1) & (capacity - 1);
            continue;
        }
        if (claims.fetch_add(1, std::memory_order_relaxed) >= limit) {
            slot.state.store(kEmpty, std::memory_order_release);
            return capacity;
        }
        std::memcpy(slot.name, name.data(), name.size());
        slot.length = static_cast<std::uint32_t>(name.size());
        slot.state.store(kPublished, std::memory_order_release);
        return i;
    }
    return capacity;
}

StatusCounters::StatusCounters(std::size_t orgs)
    : magic_(kMagic), orgs_(orgs), org_capacity_(capacity_for(orgs)), blocked_capacity_(capacity_for(kMaxBlockedLabels)) {}

std::size_t StatusCounters::bytes(std::size_t orgs) {
    return offsets_for(capacity_for(orgs), capacity_for(kMaxBlockedLabels)).end;
}

StatusCounters *StatusCounters::create(void *memory, std::size_t orgs) {
    auto *self = new (memory) StatusCounters(orgs);
    auto *base = static_cast<char *>(memory);
    const Offsets o = offsets_for(self->org_capacity_, self->blocked_capacity_);
    for (std::size_t i = 0; i < self->org_capacity_; ++i) new (base + o.org_labels + i * sizeof(LabelSlot)) LabelSlot;
    for (std::size_t i = 0; i <= self->org_capacity_; ++i) new (base + o.org_counters + i * sizeof(OrgCounters)) OrgCounters;
    for (std::size_t i = 0; i < self->blocked_capacity_; ++i) {
        new (base + o.blocked_labels + i * sizeof(LabelSlot)) LabelSlot;
    }
    for (std::size_t i = 0; i <= self->blocked_capacity_; ++i) {
        new (base + o.blocked_counters + i * sizeof(SharedCounter)) SharedCounter;
    }
    return self;
}

StatusCounters *StatusCounters::existing(void *memory, std::size_t orgs) {
    auto *self = static_cast<StatusCounters *>(memory);
    return (self->magic_ == kMagic && self->orgs_ == orgs) ? self : nullptr;
}

LabelSlot *StatusCounters::org_labels() {
    return reinterpret_cast<LabelSlot *>(reinterpret_cast<char *>(this)
                                         + offsets_for(org_capacity_, blocked_capacity_).org_labels);
}
OrgCounters *StatusCounters::org_counters() {
    return reinterpret_cast<OrgCounters *>(reinterpret_cast<char *>(this)
                                           + offsets_for(org_capacity_, blocked_capacity_).org_counters);
}
LabelSlot *StatusCounters::blocked_labels() {
    return reinterpret_cast<LabelSlot *>(reinterpret_cast<char *>(this)
                                         + offsets_for(org_capacity_, blocked_capacity_).blocked_labels);
}
SharedCounter *StatusCounters::blocked_counters() {
    return reinterpret_cast<SharedCounter *>(reinterpret_cast<char *>(this)
                                             + offsets_for(org_capacity_, blocked_capacity_).blocked_counters);
}
const LabelSlot *StatusCounters::org_labels() const { return const_cast<StatusCounters *>(this)->org_labels(); }
const OrgCounters *StatusCounters::org_counters() const { return const_cast<StatusCounters *>(this)->org_counters(); }
const LabelSlot *StatusCounters::blocked_labels() const {
    return const_cast<StatusCounters *>(this)->blocked_labels();
}
const SharedCounter *StatusCounters::blocked_counters() const {
    return const_cast<StatusCounters *>(this)->blocked_counters();
}

std::size_t StatusCounters::org_slot(std::string_view org) {
    return find_or_claim_label(org_labels(), org_capacity_, org_claims_, orgs_, org);
}

void StatusCounters::count_request(std::string_view org, std::size_t decision) {
    requests_[decision].add(1);
    org_counters()[org.empty() ? other_slot() : org_slot(org)].requests[decision].add(1);
}

void StatusCounters::count_block(std::string_view scope, std::string_view limit) {
    std::string name;
    name.reserve(scope.size() + 1 + limit.size());
    name.append(scope).append(1, ':').append(limit);
    blocked_counters()[find_or_claim_label(blocked_labels(), blocked_capacity_, blocked_claims_, kMaxBlockedLabels,
                                           name)]
        .add(1);
}

void StatusCounters::count_settled(std::string_view org, std::uint64_t cost, std::uint64_t input_tokens,
                                   std::uint64_t output_tokens, std::size_t from) {
    cost_.add(cost);
    input_tokens_.add(input_tokens);
    output_tokens_.add(output_tokens);
    settlements_[from].add(1);
    org_counters()[org.empty() ? other_slot() : org_slot(org)].cost.add(cost);
}

void StatusCounters::observe_reserve(std::uint64_t micros) {
    redis_buckets_[redis_seconds_bucket(micros)].add(1);
    redis_micros_.add(micros);
}

MetricsView StatusCounters::view(bool redis_up, std::string version, std::string nginx) const {
    MetricsView v;
    for (std::size_t i = 0; i < kDecisionNames.size(); ++i) {
        v.requests.push_back({{{"decision", kDecisionNames[i]}}, requests_[i].get()});
    }
    const LabelSlot *labels = blocked_labels();
    for (std::size_t i = 0; i <= blocked_capacity_; ++i) {
        const std::uint64_t n = blocked_counters()[i].get();
        if (i == blocked_capacity_) {
            if (n > 0) v.blocked.push_back({{{"scope", "_other"}, {"limit", "_other"}}, n});
            break;
        }
        if (labels[i].state.load(std::memory_order_acquire) != kPublished) continue;
        const std::string_view name = label_of(labels[i]);
        const std::size_t colon = name.find(':');
        v.blocked.push_back({{{"scope", std::string(name.substr(0, colon))},
                              {"limit", std::string(name.substr(colon + 1))}},
                             n});
    }
    v.cost_nanousd = cost_.get();
    v.reserved_nanousd = reserved_.get();
    v.input_tokens = input_tokens_.get();
    v.output_tokens = output_tokens_.get();
    for (std::size_t i = 0; i < kSettledFromNames.size(); ++i) {
        v.settlements.push_back({{{"from", kSettledFromNames[i]}}, settlements_[i].get()});
    }
    for (std::size_t i = 0; i < kLostNames.size(); ++i) {
        v.settlements_lost.push_back({{{"reason", kLostNames[i]}}, lost_[i].get()});
    }
    v.backlog = backlog_.get();
    v.redis_up = redis_up;
    for (std::size_t i = 0; i < kRedisErrorNames.size(); ++i) {
        v.redis_errors.push_back({{{"kind", kRedisErrorNames[i]}}, redis_errors_[i].get()});
    }
    for (std::size_t i = 0; i < redis_buckets_.size(); ++i) v.redis_buckets[i] = redis_buckets_[i].get();
    v.redis_micros_sum = redis_micros_.get();
    const LabelSlot *orgs = org_labels();
    auto figures = [&](std::string name, const OrgCounters &c) {
        OrgFigures f;
        f.org = std::move(name);
        f.cost_nanousd = c.cost.get();
        for (std::size_t d = 0; d < kDecisionNames.size(); ++d) f.requests.emplace_back(kDecisionNames[d], c.requests[d].get());
        v.orgs.push_back(std::move(f));
    };
    for (std::size_t i = 0; i < org_capacity_; ++i) {
        if (orgs[i].state.load(std::memory_order_acquire) == kPublished) {
            figures(std::string(label_of(orgs[i])), org_counters()[i]);
        }
    }
    figures("_other", org_counters()[org_capacity_]);
    v.version = std::move(version);
    v.nginx = std::move(nginx);
    return v;
}

std::size_t decision_slot(std::string_view decision) {
    for (std::size_t i = 0; i < kDecisionNames.size(); ++i) {
        if (decision == kDecisionNames[i]) return i;
    }
    return kDecisionNames.size() - 1;  // (every Outcome has its name above)
}

std::size_t settled_from_slot(std::string_view from) { return from == kSettledFromNames[1] ? 1 : 0; }

}  // namespace spendcap
