// The Prometheus text of `spend_cap_status` (SPEC section 9), rendered from
// figures already summed over the workers: integers only, so that no sample
// is ever +Inf or NaN; label values escaped.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace spendcap {

// spend_cap_info{version}: the module's release.
inline constexpr const char *kModuleVersion = "0.19.0";

// The reserve round trip's buckets (seconds, as `le`): 0.25 ms to 1 s.
inline constexpr std::array<const char *, 12> kRedisSecondsBounds = {
    "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1"};
// The same bounds in microseconds, to count an observation in its bucket.
inline constexpr std::array<std::uint64_t, 12> kRedisMicrosBounds = {250,    500,    1000,   2500,   5000,   10000,
                                                                     25000,  50000,  100000, 250000, 500000, 1000000};

// The bucket an observation of `micros` falls in: its index in the bounds,
// or the bounds' size for one above the last (counted in +Inf only).
std::size_t redis_seconds_bucket(std::uint64_t micros);

struct MetricSample {
    std::vector<std::pair<std::string, std::string>> labels;  // name, value (escaped when written)
    std::uint64_t value = 0;
};

struct OrgFigures {
    std::string org;  // or "_other"
    std::uint64_t cost_nanousd = 0;
    std::vector<std::pair<std::string, std::uint64_t>> requests;  // by decision
};

struct MetricsView {
    std::vector<MetricSample> requests;      // {decision}
    std::vector<MetricSample> blocked;       // {scope, limit}
    std::uint64_t cost_nanousd = 0;
    std::uint64_t reserved_nanousd = 0;
    std::uint64_t input_tokens = 0, output_tokens = 0;
    std::vector<MetricSample> settlements;   // {from}
    std::vector<MetricSample> settlements_lost;  // {reason}: never landed
    std::uint64_t backlog = 0;               // settlements not yet landed
    bool redis_up = false;
    std::vector<MetricSample> redis_errors;  // {kind}
    // The reserve round trip: observations per bucket (not cumulative), one
    // per bound and last those above every bound; their sum in microseconds.
    std::array<std::uint64_t, kRedisMicrosBounds.size() + 1> redis_buckets{};
    std::uint64_t redis_micros_sum = 0;
    std::vector<OrgFigures> orgs;
    std::string version, nginx;
};

// `name{a="x",b="y"}`'s label part, values escaped (\\, \", \n).
std::string prometheus_labels(const std::vector<std::pair<std::string, std::string>> &labels);

// text/plain; version=0.0.4
std::string render_metrics(const MetricsView &view);

}  // namespace spendcap
