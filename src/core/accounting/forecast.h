// When a cost cap would be reached at the pace of its period so far (SPEC
// section 2b): for usage windows, budget layers and the settlement
// script's spend_cap_forecast_exhaustion event (settle.lua works it out the
// same way with Redis's clock).
#pragma once

#include <cstdint>
#include <optional>

#include "base/money.h"

namespace spendcap {

// A forecast needs an hour of the period behind it: earlier, one request
// would project a whole day's pace.
constexpr std::int64_t kForecastMinSeconds = 3600;

// The unix second `spent` reaches `cap` if spending goes on at its pace
// since `start`: start + ceil(cap * (now - start) / spent), exact (128-bit).
// nullopt when there is no pace to go by (nothing spent, less than an hour
// into the period) or when that instant is not before `reset`. A cap
// already reached answers an instant at or before now.
std::optional<std::int64_t> forecast_exhaustion(Nanos spent, Nanos cap, std::int64_t start, std::int64_t reset,
                                                std::int64_t now);

}  // namespace spendcap
