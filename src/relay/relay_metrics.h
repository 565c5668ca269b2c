// The relay's own figures, served at /metrics (metrics_server): delivered,
// failed by status, dead, and each endpoint's lag.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>

namespace spendcap::relay {

// Prometheus text of the relay: delivered, failed by status, dead, lag.
struct RelayMetrics {
    std::mutex mutex;
    std::map<std::string, std::uint64_t> delivered, dead;                      // by endpoint
    std::map<std::pair<std::string, std::string>, std::uint64_t> failed;       // endpoint, status
    std::map<std::string, double> lag_seconds;                                 // by endpoint
    std::string render();
};

}  // namespace spendcap::relay
