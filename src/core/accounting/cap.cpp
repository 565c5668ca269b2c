// The labels of a cap: $spend_cap_blocked_by's, and the metrics' limit.
#include "accounting/cap.h"

namespace spendcap {

namespace {

std::string limit_part(const CapRef &cap) {
    switch (cap.limit) {
    case LimitKind::spend: return window_name(cap.window);
    case LimitKind::requests: return std::string(window_name(cap.window)) + "_requests";
    case LimitKind::tokens: return std::string(window_name(cap.window)) + "_tokens";
    case LimitKind::rpm: return "rpm";
    case LimitKind::tpm: return "tpm";
    case LimitKind::balance: return "balance";
    }
    return "";
}

}  // namespace

std::string blocked_by_label(const CapRef &cap) {
    std::string label = std::string(scope_name(cap.scope)) + ":" + limit_part(cap);
    if (!cap.model.empty()) label += ":" + cap.model;
    return label;
}

std::string limit_label(const CapRef &cap) {
    const std::string window = window_name(cap.window);
    switch (cap.limit) {
    case LimitKind::spend: return window + "_usd";
    case LimitKind::requests: return window + "_requests";
    case LimitKind::tokens: return window + "_tokens";
    case LimitKind::rpm: return "rpm";
    case LimitKind::tpm: return "tpm";
    case LimitKind::balance: return "balance";
    }
    return window;
}

}  // namespace spendcap
