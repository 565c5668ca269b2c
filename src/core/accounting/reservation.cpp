// The arguments of the Lua scripts (redis/scripts/reserve.lua, settle.lua) that
// reserve and settle batches of requests atomically, in one round trip each.
// Their replies are read in reserve_reply.cpp.
#include "accounting/reservation.h"

#include <algorithm>
#include <limits>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "base/saturating.h"
#include "redis/keys.h"
#include "request/request.h"

namespace spendcap {

namespace {

std::string to_arg(std::int64_t v) { return std::to_string(v); }

const char *kind_arg(CounterKind kind) {
    switch (kind) {
    case CounterKind::spend: return "s";
    case CounterKind::balance: return "b";
    case CounterKind::rpm:
    case CounterKind::tpm: return "r";
    default: return "c";
    }
}

// What a counter adds for `amounts` of one request.
std::int64_t delta_of(const Counter &c, const Amounts &amounts) {
    switch (c.kind) {
    case CounterKind::spend: return amounts.cost;
    case CounterKind::requests:
    case CounterKind::rpm: return amounts.requests;
    case CounterKind::tokens:
    case CounterKind::tpm: return amounts.tokens;
    case CounterKind::balance: return -amounts.cost;
    case CounterKind::held: return amounts.cost;
    }
    return 0;
}

Amounts non_negative(const Amounts &a) {
    return {std::max<Nanos>(a.cost, 0), std::max<std::int64_t>(a.tokens, 0),
            std::clamp<std::int64_t>(a.requests, 0, 1)};
}

// Whether a reservation holds counter i: a check reads it (a cap, a plan's
// ceiling, the balance) or it is the balance's hold. The others are left to
// the settlement, which gives them the real figure once.
bool reserved_here(const Ledger &ledger, std::size_t i) {
    const Counter &c = ledger.counters[i];
    return c.cap || c.kind == CounterKind::balance || c.kind == CounterKind::held || ledger.ceiling_counter == i;
}

// What a reservation adds to counter i: the estimate, or nothing.
std::int64_t reserved_delta(const Ledger &ledger, std::size_t i, const Amounts &estimate) {
    return reserved_here(ledger, i) ? delta_of(ledger.counters[i], estimate) : 0;
}

}  // namespace

std::vector<std::size_t> reserved_counters(const Ledger &ledger) {
    std::vector<std::size_t> out;
    out.reserve(ledger.counters.size());
    for (std::size_t i = 0; i < ledger.counters.size(); ++i)
        if (reserved_here(ledger, i)) out.push_back(i);
    return out;
}

namespace {

// The lines "DELTA KEY\n" (KEY without the org's prefix) that give a
// reservation back: the negated delta of every counter it changed.
std::string release_record(const Ledger &ledger, const Amounts &estimate, std::size_t prefix_size) {
    std::string record;
    record.reserve(ledger.counters.size() * 64);
    for (std::size_t i = 0; i < ledger.counters.size(); ++i) {
        const Counter &c = ledger.counters[i];
        const std::int64_t delta = reserved_delta(ledger, i, estimate);
        if (delta == 0) continue;
        record += to_arg(negatable_sub(0, delta));
        record += ' ';
        record.append(c.key, prefix_size, std::string::npos);
        record += '\n';
    }
    return record;
}

// "FRACTION=THRESHOLD;..." of a cost cap; empty without fractions.
std::string warn_thresholds(const std::vector<WarnFraction> &warn_at, Nanos cap) {
    std::string spec;
    for (const WarnFraction &f : warn_at) {
        if (!spec.empty()) spec += ';';
        spec += f.label + "=" + to_arg(warn_threshold(cap, f));
    }
    return spec;
}

}  // namespace

std::vector<std::string> check_command(const Ledger &ledger, const Amounts &estimate, const std::string &check_id) {
    std::vector<std::string> argv = reserve_command(ledger, estimate, check_id, false);
    if (argv.size() < 3) return {};
    // ARGV[8], check_due, after EVALSHA, the sha, the key count and the keys
    const std::size_t at = 3 + static_cast<std::size_t>(std::stoul(argv[2])) + 7;
    if (at >= argv.size()) return {};
    argv[at] = "c";
    return argv;
}

std::vector<std::string> key_expired_command(const std::string &org, const Key &key, std::int64_t now) {
    try {
        const std::string &sha1 = scripts::key_expired().sha1;
        if (sha1.empty() || !key.expires_at) return {};
        const std::int64_t kMarkerSeconds = 400 * 86400;  // a key still knocking a year on is news again
        return {"EVALSHA", sha1, "2", keys::key_expired(org, key.id, *key.expires_at), keys::events(org),
                key.id, format_rfc3339(*key.expires_at), to_arg(now + kMarkerSeconds)};
    } catch (...) {
        return {};
    }
}

namespace {

// What a request adds to a counter it reserves, as the reserve script names it.
const char *amount_arg(CounterKind kind) {
    switch (kind) {
    case CounterKind::spend:
    case CounterKind::held: return "$";
    case CounterKind::balance: return "-";
    case CounterKind::tokens:
    case CounterKind::tpm: return "t";
    case CounterKind::requests:
    case CounterKind::rpm: return "1";
    }
    return "1";
}

}  // namespace

namespace {

// The markers hashes a script may set, each once: `index` maps a hash to its
// place among them (1-based), for the counters' arguments.
struct MarkerKeys {
    std::vector<const std::string *> keys;
    std::unordered_map<std::string_view, std::size_t> index;
    std::string place_of(const std::string &markers) {
        if (markers.empty()) return "0";
        auto [it, added] = index.emplace(markers, keys.size() + 1);
        if (added) keys.push_back(&markers);
        return to_arg(static_cast<std::int64_t>(it->second));
    }
};

}  // namespace

namespace {

// A reserve batch's counters, each once, and its chains: the counters of one
// ledger (requests of one key share it, so it is mapped once).
struct ReserveChains {
    std::vector<const Counter *> counters;
    std::unordered_map<std::string_view, std::size_t> index;  // counter key -> batch index (1-based)
    std::vector<const Ledger *> chains;
    std::vector<std::vector<std::size_t>> chain_counters;  // batch indices (1-based)
    const Ledger *ceiling_ledger = nullptr;
    std::size_t ceiling_at = 0;
    std::vector<std::size_t> chain_of;  // per request: its chain
};

// The chain of `ledger`, its reserved counters added to the batch's the first
// time it is seen (the first ledger with a plan's ceiling names the batch's).
std::size_t chain_for(ReserveChains &batch, const Ledger *ledger) {
    std::size_t x = 0;
    while (x < batch.chains.size() && batch.chains[x] != ledger) ++x;
    if (x == batch.chains.size()) {
        std::vector<std::size_t> at;
        for (std::size_t i : reserved_counters(*ledger)) {
            auto [it, added] = batch.index.emplace(ledger->counters[i].key, batch.counters.size() + 1);
            if (added) batch.counters.push_back(&ledger->counters[i]);
            at.push_back(it->second);
            if (ledger->ceiling_counter == i && batch.ceiling_ledger == nullptr) {
                batch.ceiling_ledger = ledger;
                batch.ceiling_at = it->second;
            }
        }
        batch.chains.push_back(ledger);
        batch.chain_counters.push_back(std::move(at));
    }
    return x;
}

// Maps every request to its chain; false when the requests cannot be one
// batch (an empty ledger, another org or config version, an id missing or twice).
bool map_reserve_chains(const std::vector<ReserveItem> &items, const Ledger &first, ReserveChains &batch) {
    batch.chain_of.resize(items.size());
    std::unordered_set<std::string_view> ids;
    for (std::size_t j = 0; j < items.size(); ++j) {
        const Ledger *ledger = items[j].ledger.get();
        if (ledger == nullptr || ledger->counters.empty() || ledger->org != first.org || items[j].request_id.empty()
            || ledger->config_version != first.config_version)
            return false;
        // one field per request in the org's reservations: an id twice would lose one
        if (!ids.insert(items[j].request_id).second) return false;
        batch.chain_of[j] = chain_for(batch, ledger);
    }
    return true;
}

// Seven arguments per counter: kind, amount, cap, expiry, warn thresholds,
// place of its markers hash (registered in `markers`), label.
std::vector<std::string> reserve_counter_args(const std::vector<const Counter *> &counters,
                                              const std::vector<WarnFraction> &warn_at, MarkerKeys &markers) {
    std::vector<std::string> counter_args;
    counter_args.reserve(7 * counters.size());
    for (const Counter *counter : counters) {
        const bool spend_cap = counter->kind == CounterKind::spend && counter->cap;
        counter_args.emplace_back(counter->kind == CounterKind::held ? "h" : kind_arg(counter->kind));
        counter_args.emplace_back(amount_arg(counter->kind));
        // a negative cap, never produced by the policy, blocks rather than uncaps
        counter_args.push_back(counter->cap ? to_arg(std::max<std::int64_t>(*counter->cap, 0)) : "");
        counter_args.push_back(to_arg(std::max<std::int64_t>(counter->expire_at, 0)));
        counter_args.push_back(spend_cap ? warn_thresholds(warn_at, *counter->cap) : "");
        counter_args.push_back(markers.place_of(counter->markers));
        counter_args.push_back(counter->label);
    }
    return counter_args;
}

// The key count and the keys: the counters, the org's reservation keys, the
// markers hashes and, with a plan's ceiling, its cleared spend.
void append_reserve_keys(std::vector<std::string> &argv, const ReserveChains &batch, const MarkerKeys &markers,
                         const std::string &org) {
    const std::size_t c = batch.counters.size(), g = markers.keys.size();
    argv.push_back(to_arg(static_cast<std::int64_t>(c + 5 + g + (batch.ceiling_ledger ? 1 : 0))));
    for (const Counter *counter : batch.counters) argv.push_back(counter->key);
    argv.push_back(keys::reserved(org));
    argv.push_back(keys::deadlines(org));
    argv.push_back(keys::events(org));
    argv.push_back(keys::config(org));
    argv.push_back(keys::gone(org));
    for (const std::string *k : markers.keys) argv.push_back(*k);
    if (batch.ceiling_ledger) argv.push_back(keys::cleared(org));
}

// The plan's ceiling: its row count, its counter, and per row the cleared
// spend, the monthly cap and its warn thresholds; "0 0" without one.
void append_ceiling_args(std::vector<std::string> &argv, const ReserveChains &batch) {
    if (batch.ceiling_ledger) {
        argv.push_back(to_arg(static_cast<std::int64_t>(batch.ceiling_ledger->ceilings.size())));
        argv.push_back(to_arg(static_cast<std::int64_t>(batch.ceiling_at)));
        for (const CeilingRow &row : batch.ceiling_ledger->ceilings) {
            argv.push_back(to_arg(row.cleared_usd));
            argv.push_back(to_arg(std::max<Nanos>(row.monthly_usd, 0)));
            argv.push_back(warn_thresholds(batch.ceiling_ledger->warn_at, row.monthly_usd));
        }
    } else {
        argv.emplace_back("0");
        argv.emplace_back("0");
    }
}

// Per chain: how many counters, then their batch indices.
void append_chain_args(std::vector<std::string> &argv, const ReserveChains &batch) {
    for (const std::vector<std::size_t> &at : batch.chain_counters) {
        argv.push_back(to_arg(static_cast<std::int64_t>(at.size())));
        for (std::size_t i : at) argv.push_back(to_arg(static_cast<std::int64_t>(i)));
    }
}

// Per request: id, dry run, chain (1-based), estimated cost and tokens, and
// the record that gives its reservation back.
void append_request_args(std::vector<std::string> &argv, const std::vector<ReserveItem> &items,
                         const ReserveChains &batch, std::size_t prefix_size) {
    for (std::size_t j = 0; j < items.size(); ++j) {
        const ReserveItem &item = items[j];
        Amounts estimate = non_negative(item.estimate);
        estimate.requests = 1;
        argv.push_back(item.request_id);
        argv.emplace_back(item.dry_run ? "1" : "0");
        argv.push_back(to_arg(static_cast<std::int64_t>(batch.chain_of[j] + 1)));
        argv.push_back(to_arg(estimate.cost));
        argv.push_back(to_arg(estimate.tokens));
        argv.push_back(release_record(*batch.chains[batch.chain_of[j]], estimate, prefix_size));
    }
}

}  // namespace

std::vector<std::string> reserve_batch_command(const std::vector<ReserveItem> &items, const std::string &batch_id,
                                               std::int64_t ttl_ms, bool check_due) {
    try {
        const std::string &sha1 = scripts::reserve().sha1;
        if (items.empty() || sha1.empty() || batch_id.empty()) return {};
        const Ledger *first = items.front().ledger.get();
        if (first == nullptr) return {};
        const std::string &org = first->org;

        ReserveChains batch;
        if (!map_reserve_chains(items, *first, batch)) return {};
        const std::size_t c = batch.counters.size();
        MarkerKeys markers;
        std::vector<std::string> counter_args = reserve_counter_args(batch.counters, first->warn_at, markers);
        const std::size_t g = markers.keys.size();

        std::vector<std::string> argv;
        argv.reserve(12 + 9 * c + g + 3 * (batch.ceiling_ledger ? batch.ceiling_ledger->ceilings.size() : 0)
                     + 8 * batch.chains.size() + 6 * items.size());
        argv.emplace_back("EVALSHA");
        argv.push_back(sha1);
        append_reserve_keys(argv, batch, markers, org);

        argv.push_back(to_arg(static_cast<std::int64_t>(c)));
        argv.push_back(to_arg(static_cast<std::int64_t>(items.size())));
        argv.push_back(to_arg(static_cast<std::int64_t>(batch.chains.size())));
        argv.push_back(to_arg(static_cast<std::int64_t>(g)));
        argv.push_back(to_arg(std::clamp<std::int64_t>(ttl_ms, 1, kMaxReservationTtlMs)));
        argv.push_back(batch_id);
        argv.push_back(to_arg(static_cast<std::int64_t>(keys::org_prefix(org).size())));
        argv.emplace_back(check_due ? "1" : "0");
        for (std::string &arg : counter_args) argv.push_back(std::move(arg));
        append_ceiling_args(argv, batch);
        append_chain_args(argv, batch);
        append_request_args(argv, items, batch, keys::org_prefix(org).size());
        argv.push_back(first->config_version);
        return argv;
    } catch (...) {
        return {};
    }
}

std::vector<std::string> reserve_command(const Ledger &ledger, const Amounts &estimate,
                                         const std::string &request_id, bool dry_run, std::int64_t ttl_ms) {
    try {
        std::vector<ReserveItem> one;
        one.push_back(ReserveItem{std::make_shared<const Ledger>(ledger), estimate, request_id, dry_run});
        return reserve_batch_command(one, request_id, ttl_ms);
    } catch (...) {
        return {};
    }
}

std::vector<std::string> settle_command(const Ledger &ledger, const Amounts &estimate,
                                        const Amounts &real, const std::string &request_id,
                                        const std::optional<Nanos> &ceiling_cap, bool reserve_answered) {
    try {
        std::vector<SettleItem> one;
        one.push_back(SettleItem{std::make_shared<const Ledger>(ledger), estimate, real, request_id, ceiling_cap,
                                 request_id, reserve_answered});
        return settle_batch_command(one);
    } catch (...) {
        return {};
    }
}

namespace {

// One counter of a settle batch, with the sum of what the batch's requests add to it.
struct SettleTotal {
    const Counter *counter;
    std::int64_t delta = 0;
    std::optional<Nanos> cap;  // for warnings
    const std::vector<WarnFraction> *warn_at;
    const std::string *forecast;  // "START RESET" of a capped daily / weekly / monthly spend counter
};

// What a request adds to a counter (an index into the totals) when its
// reservation is not held, beyond what the batch's total adds.
struct Correction {
    std::size_t counter;
    std::int64_t delta;
};

// A settle batch: its requests, each once, its counters, each once, with
// their totals, and every request's corrections.
struct SettleBatch {
    std::vector<const SettleItem *> requests;
    std::vector<SettleTotal> totals;
    std::unordered_map<std::string_view, std::size_t> index;  // counter key -> index into totals
    // Requests of one key share a ledger: its counters are looked up once.
    std::vector<std::pair<const Ledger *, std::vector<std::size_t>>> mapped;
    std::vector<std::vector<Correction>> corrections;  // per request
    std::optional<std::size_t> balance, held;
    std::optional<Nanos> low_balance;
};

// A request settles once: an id already in the batch is what its second
// settlement would be, nothing (counted twice, its reservation would be
// given back twice).
std::vector<const SettleItem *> settle_once_each(const std::vector<SettleItem> &items) {
    std::vector<const SettleItem *> batch;
    batch.reserve(items.size());
    std::unordered_set<std::string_view> ids;
    for (const SettleItem &item : items)
        if (ids.insert(item.request_id).second) batch.push_back(&item);
    return batch;
}

// Where each counter of `ledger` is among the batch's totals, which gain
// the counters not seen before (a plan's ceiling without a cap: the
// requests tell it).
const std::vector<std::size_t> &totals_of(SettleBatch &batch, const Ledger &ledger) {
    std::size_t m = 0;
    while (m < batch.mapped.size() && batch.mapped[m].first != &ledger) ++m;
    if (m == batch.mapped.size()) {
        std::vector<std::size_t> at;
        at.reserve(ledger.counters.size());
        for (std::size_t i = 0; i < ledger.counters.size(); ++i) {
            const Counter &c = ledger.counters[i];
            auto [it, added] = batch.index.emplace(c.key, batch.totals.size());
            if (added) {
                std::optional<Nanos> cap = c.kind == CounterKind::spend ? c.cap : std::nullopt;
                if (ledger.ceiling_counter == i) cap.reset();
                batch.totals.push_back(SettleTotal{&c, 0, cap, &ledger.warn_at, cap ? &c.forecast : nullptr});
            }
            at.push_back(it->second);
        }
        batch.mapped.emplace_back(&ledger, std::move(at));
    }
    return batch.mapped[m].second;
}

// Adds request j's settlement to the totals (as if its reservation were
// held) and notes its corrections for when it is not.
void add_settlement(SettleBatch &batch, std::size_t j, const std::vector<std::size_t> &at) {
    const SettleItem &item = *batch.requests[j];
    const Ledger &ledger = *item.ledger;
    Amounts estimate = non_negative(item.estimate);
    estimate.requests = 1;
    const Amounts real = non_negative(item.real);
    for (std::size_t i = 0; i < ledger.counters.size(); ++i) {
        const Counter &c = ledger.counters[i];
        const std::int64_t reserved = reserved_delta(ledger, i, estimate);
        // Replaces the reservation; without one (never made, or given
        // back at its deadline) adds the real amounts.
        std::int64_t if_reserved = negatable_sub(delta_of(c, real), reserved);
        std::int64_t if_unreserved = delta_of(c, real);
        if (c.kind == CounterKind::held) {
            if_reserved = -reserved;  // the hold ends
            if_unreserved = 0;        // nothing was held
        }
        if (c.kind == CounterKind::rpm || c.kind == CounterKind::tpm) if_unreserved = 0;  // minute gone
        SettleTotal &total = batch.totals[at[i]];
        // The plan's ceiling: the first request that knows the cap
        // it was held to (a fail-open one never learnt it).
        if (!total.cap && ledger.ceiling_counter == i && item.ceiling_cap) total.cap = item.ceiling_cap;
        total.delta = negatable_add(total.delta, if_reserved);
        if (if_unreserved != if_reserved)
            batch.corrections[j].push_back(Correction{at[i], negatable_sub(if_unreserved, if_reserved)});
        if (ledger.balance == i) batch.balance = at[i];
        if (ledger.held == i) batch.held = at[i];
    }
    if (ledger.low_balance && real.cost > 0) batch.low_balance = ledger.low_balance;
}

// Totals every request of the batch; false when one cannot be in it (no
// ledger or an empty one, another org, no id).
bool total_settlements(SettleBatch &batch, const std::string &org) {
    batch.corrections.resize(batch.requests.size());
    for (std::size_t j = 0; j < batch.requests.size(); ++j) {
        const SettleItem &item = *batch.requests[j];
        if (item.ledger == nullptr) return false;
        const Ledger &ledger = *item.ledger;
        if (ledger.org != org || ledger.counters.empty() || item.request_id.empty()) return false;
        const std::vector<std::size_t> &at = totals_of(batch, ledger);
        add_settlement(batch, j, at);
    }
    return true;
}

// Seven arguments per counter: kind, total delta, expiry, cap, warn
// thresholds, place of its markers hash (registered in `markers`), label.
std::vector<std::string> settle_counter_args(const std::vector<SettleTotal> &totals, MarkerKeys &markers) {
    std::vector<std::string> counter_args;
    counter_args.reserve(8 * totals.size());
    for (const SettleTotal &t : totals) {
        const CounterKind kind = t.counter->kind;
        const std::string warn = t.cap ? warn_thresholds(*t.warn_at, *t.cap) : "";
        counter_args.emplace_back(kind == CounterKind::rpm || kind == CounterKind::tpm ? "r" : "c");
        counter_args.push_back(to_arg(t.delta));
        counter_args.push_back(to_arg(std::max<std::int64_t>(t.counter->expire_at, 0)));
        counter_args.push_back(t.cap ? to_arg(*t.cap) : "");
        counter_args.push_back(warn);
        // only a counter that can warn or forecast needs its markers
        static const std::string kNone;
        const std::string &forecast = t.forecast != nullptr ? *t.forecast : kNone;
        const bool events = !warn.empty() || !forecast.empty();
        counter_args.push_back(events ? markers.place_of(t.counter->markers) : "0");
        counter_args.push_back(events ? t.counter->label : "");
        counter_args.push_back(forecast);
    }
    return counter_args;
}

// The key count and the keys: the counters, the org's settlement keys and
// the markers hashes.
void append_settle_keys(std::vector<std::string> &argv, const std::vector<SettleTotal> &totals,
                        const MarkerKeys &markers, const std::string &org) {
    argv.push_back(to_arg(static_cast<std::int64_t>(totals.size() + 8 + markers.keys.size())));
    for (const SettleTotal &t : totals) argv.push_back(t.counter->key);
    argv.push_back(keys::events(org));
    argv.push_back(keys::deadlines(org));
    argv.push_back(keys::settlements(org));
    argv.push_back(keys::reserved(org));
    argv.push_back(keys::settled(org));
    argv.push_back(keys::released(org));
    argv.push_back(keys::gone(org));
    argv.push_back(keys::low_balance(org));
    for (const std::string *k : markers.keys) argv.push_back(*k);
}

// The low-balance threshold and the balance's and the hold's counters
// (1-based); "", "0", "0" unless a request spent from a watched balance.
void append_low_balance_args(std::vector<std::string> &argv, const SettleBatch &batch) {
    const bool low = batch.low_balance && batch.balance && batch.held;
    argv.push_back(low ? to_arg(*batch.low_balance) : "");
    argv.push_back(low ? to_arg(static_cast<std::int64_t>(*batch.balance + 1)) : "0");
    argv.push_back(low ? to_arg(static_cast<std::int64_t>(*batch.held + 1)) : "0");
}

// Per request: id, its reserve's batch, whether that reserve was answered,
// and its corrections as lines "COUNTER DELTA\n" (COUNTER 1-based).
void append_settle_requests(std::vector<std::string> &argv, const SettleBatch &batch) {
    for (std::size_t j = 0; j < batch.requests.size(); ++j) {
        const SettleItem &item = *batch.requests[j];
        argv.push_back(item.request_id);
        argv.push_back(item.batch_id);
        argv.emplace_back(item.reserve_answered && !item.batch_id.empty() ? "1" : "0");
        std::string lines;
        for (const Correction &k : batch.corrections[j]) {
            lines += to_arg(static_cast<std::int64_t>(k.counter + 1));
            lines += ' ';
            lines += to_arg(k.delta);
            lines += '\n';
        }
        argv.push_back(std::move(lines));
    }
}

}  // namespace

std::vector<std::string> settle_batch_command(const std::vector<SettleItem> &items) {
    try {
        const std::string &sha1 = scripts::settle().sha1;
        if (items.empty() || sha1.empty() || items.front().ledger == nullptr) return {};
        const std::string &org = items.front().ledger->org;
        SettleBatch batch;
        batch.requests = settle_once_each(items);
        if (!total_settlements(batch, org)) return {};

        const std::size_t c = batch.totals.size(), m = batch.requests.size();
        MarkerKeys markers;
        std::vector<std::string> counter_args = settle_counter_args(batch.totals, markers);
        const std::size_t g = markers.keys.size();
        std::vector<std::string> argv;
        argv.reserve(12 + 8 * c + g + 4 * m);
        argv.emplace_back("EVALSHA");
        argv.push_back(sha1);
        append_settle_keys(argv, batch.totals, markers, org);

        argv.push_back(to_arg(static_cast<std::int64_t>(c)));
        argv.push_back(to_arg(static_cast<std::int64_t>(m)));
        argv.push_back(to_arg(static_cast<std::int64_t>(g)));
        argv.push_back(to_arg(static_cast<std::int64_t>(keys::org_prefix(org).size())));
        for (std::string &arg : counter_args) argv.push_back(std::move(arg));
        append_low_balance_args(argv, batch);
        append_settle_requests(argv, batch);
        argv.emplace_back(kFirstSend);
        return argv;
    } catch (...) {
        return {};
    }
}

}  // namespace spendcap
