#include "accounting/settlement.h"

namespace spendcap {

namespace {

Usage estimate_usage(const Estimate &estimate) {
    Usage u;
    u.input = estimate.input_tokens;
    u.output = estimate.output_tokens;
    return u;
}

}  // namespace

Settlement settle_at(const ResponseSeen &seen, const Estimate &estimate, const ModelPrice &price) {
    Settlement out;
    const bool readable = seen.read && !seen.unreadable;
    const Usage *reported = readable && seen.usage ? &*seen.usage : nullptr;
    if (reported != nullptr && !plausible(*reported)) {
        // One such figure would fill every counter of the org for good.
        out.cost = estimate.cost;
        out.usage = estimate_usage(estimate);
        out.from = "reservation";
        out.warning = "the upstream reports " + std::to_string(reported->input_total()) + " input and " +
                      std::to_string(reported->output) + " output tokens, beyond the plausible " +
                      std::to_string(kMaxPlausibleTokens);
        return out;
    }
    if (reported != nullptr && seen.state == UsageScanner::State::found) {
        out.usage = *reported;
        out.cost = usage_cost(out.usage, price);
        return out;
    }

    // No usage: did the provider answer, and with what?
    const bool provider_ran = (seen.status >= 200 && seen.status < 300) || (seen.status == 0 && seen.request_sent);
    if (!provider_ran) {
        return out;  // an error answer without usage costs nothing
    }
    out.cost = estimate.cost;
    out.usage = estimate_usage(estimate);
    out.from = "reservation";
    if (reported != nullptr) {
        // An incomplete stream: never settle below the usage it did report.
        const Nanos reported_cost = usage_cost(*reported, price);
        if (reported_cost > out.cost) {
            out.cost = reported_cost;
            out.usage = *reported;
            out.from = "usage";
        }
    }
    out.warning = seen.unreadable ? "the response's encoding is not readable or not in memory"
                  : seen.status == 0 ? "the provider did not answer (aborted or timed out)"
                  : !seen.read ? "the response was not read"
                  : seen.state == UsageScanner::State::no_usage ? "the response has no usage"
                  : seen.error;
    if (out.warning.empty()) out.warning = "the response's usage could not be read";
    return out;
}

SettlePlan plan_settlement(const SettleFacts &facts) {
    SettlePlan plan;
    if (!facts.reserve_sent && !facts.fail_open) return plan;                  // nothing was counted
    if (facts.refused || (facts.reserve_failed && !facts.reached_provider)) return plan;  // the script added nothing
    if (!facts.has_ledger) return plan;  // failed before its counters were taken
    plan.settle = true;
    // A reserve that Redis refused with an error made nothing: no batch to look in.
    plan.in_batch = facts.reserve_sent && !facts.reserve_failed;
    return plan;
}

}  // namespace spendcap
