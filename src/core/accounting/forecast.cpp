// The forecast's arithmetic in 128 bits: cap * elapsed can pass 2^63.
#include "accounting/forecast.h"

namespace spendcap {

std::optional<std::int64_t> forecast_exhaustion(Nanos spent, Nanos cap, std::int64_t start, std::int64_t reset,
                                                std::int64_t now) {
    const std::int64_t elapsed = now - start;
    if (spent <= 0 || cap < 0 || elapsed < kForecastMinSeconds || now >= reset) return std::nullopt;
    const __int128 product = static_cast<__int128>(cap) * elapsed;
    const __int128 offset = (product + spent - 1) / spent;
    if (offset >= static_cast<__int128>(reset) - start) return std::nullopt;
    return start + static_cast<std::int64_t>(offset);
}

}  // namespace spendcap
