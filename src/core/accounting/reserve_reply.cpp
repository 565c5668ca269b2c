// What the reserve script answered, request by request: the batch's flat
// reply split per request, each part decoded into allowed or refused (and by
// which cap), and what a refusal or an allowed answer tells the caller.
#include <algorithm>
#include <limits>

#include "accounting/reservation.h"
#include "base/saturating.h"

namespace spendcap {

ReserveReplyParts split_reserve_reply(const std::vector<long long> &flat, std::size_t requests) {
    ReserveReplyParts out;
    try {
        if (flat.size() == 1 && flat[0] == 2) {
            out.given_up = true;
            return out;
        }
        if (flat.size() == 1 && flat[0] == 3) {
            out.stale = true;
            return out;
        }
        if (flat.size() == 1 && flat[0] == 4) {
            out.due = true;
            return out;
        }
        out.parts.reserve(requests);
        std::size_t at = 0;
        while (at < flat.size()) {
            const long long length = flat[at];
            if (length < 4 || static_cast<unsigned long long>(length) > flat.size() - at - 1) break;
            ++at;
            out.parts.emplace_back(flat.begin() + static_cast<std::ptrdiff_t>(at),
                                   flat.begin() + static_cast<std::ptrdiff_t>(at + static_cast<std::size_t>(length)));
            at += static_cast<std::size_t>(length);
        }
        if (at != flat.size() || out.parts.size() != requests) {
            out.parts.clear();
            out.malformed = true;
        }
    } catch (...) {
        out.parts.clear();
        out.malformed = true;
    }
    return out;
}

namespace {

// What the head of one request's reply decides before its counters are read:
// true with an error, stale or blocked in `outcome`; false when the request
// was allowed (`outcome` then names the refusing counter of a dry run and
// the plan's ceiling that applied) and the reply holds one figure per
// counter sent.
bool decided_by_head(const Ledger &ledger, const std::vector<std::size_t> &sent,
                     const std::vector<long long> &reply, ReserveOutcome &outcome) {
    const std::size_t n = sent.size();
    if (reply.size() == 1 && reply[0] == 2) {
        outcome.error = "reserve script found the request already settled";
        return true;
    }
    if (reply.size() == 1 && reply[0] == 3) {
        outcome.kind = ReserveOutcome::Kind::stale;
        return true;
    }
    if (reply.size() < 4 || (reply[0] != 0 && reply[0] != 1)) {
        outcome.error = "reserve script gave a malformed reply";
        return true;
    }
    if (reply[1] < 0 || static_cast<unsigned long long>(reply[1]) > n) {
        outcome.error = "reserve script named counter " + std::to_string(reply[1]) + " of " +
                        std::to_string(n);
        return true;
    }
    if (reply[3] < 0 || static_cast<unsigned long long>(reply[3]) > ledger.ceilings.size()) {
        outcome.error = "reserve script chose ceiling row " + std::to_string(reply[3]);
        return true;
    }
    if (reply[1] > 0) outcome.refused_by = sent[static_cast<std::size_t>(reply[1] - 1)];
    if (ledger.ceiling_counter)
        outcome.ceiling_cap = reply[3] > 0 ? ledger.ceilings[reply[3] - 1].monthly_usd : 0;
    if (reply[0] == 0) {
        if (!outcome.refused_by) {
            outcome.error = "reserve script refused without naming a counter";
            return true;
        }
        outcome.kind = ReserveOutcome::Kind::blocked;
        return true;
    }
    if (reply.size() != n + 4) {
        outcome.error = "reserve script replied " + std::to_string(reply.size() - 4) +
                        " counters, expected " + std::to_string(n);
        return true;
    }
    return false;
}

// The cost cap with the least remaining after the reservation (ties: first
// in check order) into `outcome`; returns what remains of it (0 without one).
__int128 tightest_cost_cap(const Ledger &ledger, const std::vector<std::size_t> &sent,
                           const std::vector<long long> &reply, ReserveOutcome &outcome) {
    __int128 least = 0;
    for (std::size_t k = 0; k < sent.size(); ++k) {
        const std::size_t i = sent[k];
        const Counter &c = ledger.counters[i];
        if (c.kind != CounterKind::spend) continue;
        std::optional<Nanos> cap = c.cap;
        if (ledger.ceiling_counter == i) cap = outcome.ceiling_cap;
        if (!cap) continue;
        const __int128 remaining = static_cast<__int128>(*cap) - reply[k + 4];
        if (!outcome.tightest_index || remaining < least) {  // ties: first in check order
            outcome.tightest_index = i;
            outcome.tightest_cap = *cap;
            least = remaining;
        }
    }
    return least;
}

// A prepaid org's balance binds when less of it is left than of any cost
// cap (ties go to the cap: it comes first in check order). Its "limit" is
// the settled balance: what is left plus what is held.
void balance_if_tighter(const Ledger &ledger, const std::vector<std::size_t> &sent,
                        const std::vector<long long> &reply, ReserveOutcome &outcome, __int128 &least) {
    if (ledger.balance && ledger.held) {
        std::optional<long long> left, held;
        for (std::size_t k = 0; k < sent.size(); ++k) {
            if (sent[k] == *ledger.balance) left = reply[k + 4];
            if (sent[k] == *ledger.held) held = reply[k + 4];
        }
        // (compared as shown: nothing left is 0 for either)
        const auto shown = [](__int128 v) { return v < 0 ? 0 : v; };
        if (left && held && (!outcome.tightest_index || shown(*left) < shown(least))) {
            outcome.tightest_index = *ledger.balance;
            outcome.tightest_cap = saturating_add(*left, std::max<long long>(*held, 0));
            least = *left;
        }
    }
}

}  // namespace

ReserveOutcome decode_reserve_reply(const Ledger &ledger, const std::vector<long long> &reply) {
    ReserveOutcome outcome;
    try {
        // The reply names counters by their place among those the reserve sent.
        const std::vector<std::size_t> sent = reserved_counters(ledger);
        if (decided_by_head(ledger, sent, reply, outcome)) return outcome;
        outcome.kind = ReserveOutcome::Kind::allowed;
        __int128 least = tightest_cost_cap(ledger, sent, reply, outcome);
        balance_if_tighter(ledger, sent, reply, outcome, least);
        if (least < 0) least = 0;
        if (least > std::numeric_limits<Nanos>::max()) least = std::numeric_limits<Nanos>::max();
        outcome.tightest_remaining = static_cast<Nanos>(least);
        return outcome;
    } catch (...) {
        outcome = ReserveOutcome{};
        outcome.error = "reserve reply could not be decoded";
        return outcome;
    }
}

std::optional<SpendHeaders> spend_headers(const Ledger &ledger, const ReserveOutcome &outcome) {
    try {
        if (!outcome.tightest_index || *outcome.tightest_index >= ledger.counters.size()) return std::nullopt;
        const Counter &c = ledger.counters[*outcome.tightest_index];
        if (c.kind == CounterKind::balance)  // no reset: a balance does not clear by waiting
            return SpendHeaders{format_usd(outcome.tightest_cap), format_usd(outcome.tightest_remaining), "",
                                "org:balance"};
        const std::int64_t reset = window_reset(ledger.periods, c.window);
        return SpendHeaders{format_usd(outcome.tightest_cap), format_usd(outcome.tightest_remaining),
                            reset != 0 ? format_rfc3339(reset) : std::string(),
                            std::string(scope_name(c.scope)) + ":" + window_name(c.window)};
    } catch (...) {
        return std::nullopt;
    }
}

CapRef cap_ref(const Ledger &ledger, std::size_t i, std::int64_t now) {
    const Counter &c = ledger.counters.at(i);
    CapRef cap;
    cap.scope = c.scope;
    cap.window = c.window;
    cap.reset_at = window_reset(ledger.periods, c.window);
    cap.model = c.model;
    switch (c.kind) {
    case CounterKind::spend: cap.limit = LimitKind::spend; break;
    case CounterKind::requests: cap.limit = LimitKind::requests; break;
    case CounterKind::tokens: cap.limit = LimitKind::tokens; break;
    case CounterKind::rpm:
    case CounterKind::tpm:
        cap.limit = c.kind == CounterKind::rpm ? LimitKind::rpm : LimitKind::tpm;
        cap.reset_at = ledger.periods.minute_reset;
        cap.retry_after = now > 0 ? std::clamp<std::int64_t>(ledger.periods.minute_reset - now, 1, 60)
                                  : ledger.periods.minute_retry_after();
        break;
    case CounterKind::balance:
    case CounterKind::held:
        cap.limit = LimitKind::balance;
        cap.reset_at = 0;
        break;
    }
    return cap;
}

}  // namespace spendcap
