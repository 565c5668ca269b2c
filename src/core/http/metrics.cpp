#include "http/metrics.h"

#include <cstdio>

namespace spendcap {
namespace {

void family(std::string &out, const char *name, const char *type, const char *help) {
    out += "# HELP ";
    out += name;
    out += ' ';
    out += help;
    out += "\n# TYPE ";
    out += name;
    out += ' ';
    out += type;
    out += '\n';
}

void sample(std::string &out, const char *name, const std::string &labels, std::uint64_t value) {
    out += name;
    out += labels;
    out += ' ';
    out += std::to_string(value);
    out += '\n';
}

void samples(std::string &out, const char *name, const std::vector<MetricSample> &all) {
    for (const MetricSample &s : all) sample(out, name, prometheus_labels(s.labels), s.value);
}

// Microseconds as seconds, exactly (six decimals): never a float's rounding.
std::string seconds_of(std::uint64_t micros) {
    char fraction[8];
    std::snprintf(fraction, sizeof fraction, "%06llu", static_cast<unsigned long long>(micros % 1000000));
    return std::to_string(micros / 1000000) + "." + fraction;
}

void histogram(std::string &out, const MetricsView &view) {
    const char *name = "spend_cap_redis_seconds";
    family(out, name, "histogram", "Each request's wait for its reserve in Redis (batched or not).");
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < kRedisSecondsBounds.size(); ++i) {
        cumulative += view.redis_buckets[i];
        sample(out, "spend_cap_redis_seconds_bucket", prometheus_labels({{"le", kRedisSecondsBounds[i]}}), cumulative);
    }
    cumulative += view.redis_buckets.back();
    sample(out, "spend_cap_redis_seconds_bucket", prometheus_labels({{"le", "+Inf"}}), cumulative);
    out += "spend_cap_redis_seconds_sum ";
    out += seconds_of(view.redis_micros_sum);
    out += '\n';
    sample(out, "spend_cap_redis_seconds_count", "", cumulative);
}

void per_org(std::string &out, const MetricsView &view) {
    family(out, "spend_cap_org_cost_nanousd_total", "counter", "Settled cost per org, nano-USD.");
    for (const OrgFigures &o : view.orgs) {
        sample(out, "spend_cap_org_cost_nanousd_total", prometheus_labels({{"org", o.org}}), o.cost_nanousd);
    }
    family(out, "spend_cap_org_requests_total", "counter", "Requests per org by decision.");
    for (const OrgFigures &o : view.orgs) {
        for (const auto &[decision, n] : o.requests) {
            sample(out, "spend_cap_org_requests_total", prometheus_labels({{"org", o.org}, {"decision", decision}}), n);
        }
    }
}

}  // namespace

std::size_t redis_seconds_bucket(std::uint64_t micros) {
    std::size_t i = 0;
    while (i < kRedisMicrosBounds.size() && micros > kRedisMicrosBounds[i]) ++i;
    return i;
}

std::string prometheus_labels(const std::vector<std::pair<std::string, std::string>> &labels) {
    if (labels.empty()) return "";
    std::string out = "{";
    for (std::size_t i = 0; i < labels.size(); ++i) {
        if (i > 0) out += ',';
        out += labels[i].first;
        out += "=\"";
        for (char c : labels[i].second) {
            if (c == '\\') out += "\\\\";
            else if (c == '"') out += "\\\"";
            else if (c == '\n') out += "\\n";
            else out += c;
        }
        out += '"';
    }
    out += '}';
    return out;
}

std::string render_metrics(const MetricsView &view) {
    std::string out;
    out.reserve(4096 + 160 * view.orgs.size());
    family(out, "spend_cap_requests_total", "counter", "Requests by decision ($spend_cap_decision).");
    samples(out, "spend_cap_requests_total", view.requests);
    family(out, "spend_cap_blocked_total", "counter", "Requests refused by a cap, by scope and limit.");
    samples(out, "spend_cap_blocked_total", view.blocked);
    family(out, "spend_cap_cost_nanousd_total", "counter", "Settled cost, nano-USD.");
    sample(out, "spend_cap_cost_nanousd_total", "", view.cost_nanousd);
    family(out, "spend_cap_reserved_nanousd_total", "counter", "Every estimate reserved, nano-USD.");
    sample(out, "spend_cap_reserved_nanousd_total", "", view.reserved_nanousd);
    family(out, "spend_cap_tokens_total", "counter", "Settled tokens by kind.");
    sample(out, "spend_cap_tokens_total", prometheus_labels({{"kind", "input"}}), view.input_tokens);
    sample(out, "spend_cap_tokens_total", prometheus_labels({{"kind", "output"}}), view.output_tokens);
    family(out, "spend_cap_settlements_total", "counter", "Settlements by what they were settled from.");
    samples(out, "spend_cap_settlements_total", view.settlements);
    family(out, "spend_cap_settlements_lost_total", "counter",
           "Settlements given up: the backlog was full, or Redis refused them for good.");
    samples(out, "spend_cap_settlements_lost_total", view.settlements_lost);
    family(out, "spend_cap_settlement_backlog", "gauge", "Settlements not yet landed in Redis.");
    sample(out, "spend_cap_settlement_backlog", "", view.backlog);
    family(out, "spend_cap_redis_up", "gauge", "1 when Redis answers.");
    sample(out, "spend_cap_redis_up", "", view.redis_up ? 1 : 0);
    family(out, "spend_cap_redis_errors_total", "counter", "Redis errors by kind.");
    samples(out, "spend_cap_redis_errors_total", view.redis_errors);
    histogram(out, view);
    per_org(out, view);
    family(out, "spend_cap_info", "gauge", "The module's version and NGINX's.");
    sample(out, "spend_cap_info", prometheus_labels({{"version", view.version}, {"nginx", view.nginx}}), 1);
    return out;
}

}  // namespace spendcap
