// The label of a cap, for $spend_cap_blocked_by.
#include "accounting/cap.h"

namespace spendcap {

std::string blocked_by_label(const CapRef &cap) {
    std::string label = std::string(scope_name(cap.scope)) + ":";
    switch (cap.limit) {
    case LimitKind::spend: return label + window_name(cap.window);
    case LimitKind::requests: return label + window_name(cap.window) + "_requests";
    case LimitKind::tokens: return label + window_name(cap.window) + "_tokens";
    case LimitKind::rpm: return label + "rpm";
    case LimitKind::tpm: return label + "tpm";
    case LimitKind::balance: return label + "balance";
    }
    return label;
}

}  // namespace spendcap
