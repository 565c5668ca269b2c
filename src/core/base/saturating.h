// Integer arithmetic that stops at the ends of int64 instead of wrapping: a
// sum of money or tokens too large to hold reads as the largest there is,
// never as a small or negative one. The one place it is written.
#pragma once

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <limits>

namespace spendcap {

inline constexpr std::int64_t kMostInt64 = std::numeric_limits<std::int64_t>::max();

inline std::int64_t saturating_add(std::int64_t a, std::int64_t b) {
    std::int64_t out = 0;
    if (__builtin_add_overflow(a, b, &out)) return b > 0 ? kMostInt64 : std::numeric_limits<std::int64_t>::min();
    return out;
}

inline std::int64_t saturating_sub(std::int64_t a, std::int64_t b) {
    std::int64_t out = 0;
    if (__builtin_sub_overflow(a, b, &out)) return b < 0 ? kMostInt64 : std::numeric_limits<std::int64_t>::min();
    return out;
}

// a + b and a - b within [-INT64_MAX, INT64_MAX]: never INT64_MIN, so that
// every result can be negated (a Redis delta and the one that undoes it).
inline std::int64_t negatable_add(std::int64_t a, std::int64_t b) {
    return std::max(saturating_add(a, b), -kMostInt64);
}
inline std::int64_t negatable_sub(std::int64_t a, std::int64_t b) {
    return std::max(saturating_sub(a, b), -kMostInt64);
}

// The sum of the parts, a negative one counting as 0, at most INT64_MAX
// (token counts read from a provider).
inline std::int64_t saturating_sum(std::initializer_list<std::int64_t> parts) {
    std::int64_t sum = 0;
    for (std::int64_t v : parts) sum = saturating_add(sum, std::max<std::int64_t>(v, 0));
    return sum;
}

}  // namespace spendcap
