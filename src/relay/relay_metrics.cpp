#include "relay/relay_metrics.h"

#include <cstdio>

namespace spendcap::relay {

std::string RelayMetrics::render() {
    std::lock_guard<std::mutex> lock(mutex);
    std::string out;
    out += "# HELP spend_cap_relay_delivered_total Events delivered (a 2xx answer).\n";
    out += "# TYPE spend_cap_relay_delivered_total counter\n";
    for (const auto &[e, n] : delivered) out += "spend_cap_relay_delivered_total{endpoint=\"" + e + "\"} " + std::to_string(n) + "\n";
    out += "# HELP spend_cap_relay_failed_total Attempts that failed, by HTTP status (error: no answer).\n";
    out += "# TYPE spend_cap_relay_failed_total counter\n";
    for (const auto &[k, n] : failed) {
        out += "spend_cap_relay_failed_total{endpoint=\"" + k.first + "\",status=\"" + k.second + "\"} "
               + std::to_string(n) + "\n";
    }
    out += "# HELP spend_cap_relay_dead_total Events given up after give_up_after (moved to the dead-letter stream).\n";
    out += "# TYPE spend_cap_relay_dead_total counter\n";
    for (const auto &[e, n] : dead) out += "spend_cap_relay_dead_total{endpoint=\"" + e + "\"} " + std::to_string(n) + "\n";
    out += "# HELP spend_cap_relay_lag_seconds Age of the oldest event being delivered, per endpoint.\n";
    out += "# TYPE spend_cap_relay_lag_seconds gauge\n";
    for (const auto &[e, v] : lag_seconds) {
        char value[32];
        std::snprintf(value, sizeof value, "%.3f", v);
        out += "spend_cap_relay_lag_seconds{endpoint=\"" + e + "\"} " + value + "\n";
    }
    return out;
}

}  // namespace spendcap::relay
