// Money is an integer count of nano-USD everywhere; no floating point touches it.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

#include "base/saturating.h"  // saturating_add / saturating_sub, for money too

namespace spendcap {

using Nanos = std::int64_t;  // nano-USD: 1 USD = 1'000'000'000
constexpr Nanos kNanosPerUsd = 1'000'000'000;

// Parses a non-negative decimal USD amount exactly ("0.075", "15", "3.750",
// "1000") into nano-USD. Rejects signs, exponents ("1e-3"), more than nine
// fractional digits, empty text, spaces and overflow. On failure returns false
// and sets `error` to a short human reason.
bool parse_usd(std::string_view text, Nanos &out, std::string &error);

// Exact decimal rendering: at least two fractional digits, trailing zeros
// beyond that trimmed: 10 USD -> "10.00", 123 nanos -> "0.000000123",
// negative values get a leading '-'.
std::string format_usd(Nanos nanos);

// A token count and its price in nano-USD per million tokens.
struct PricedTokens {
    std::int64_t tokens;
    Nanos price_per_million;
};

// ceil(sum(tokens_i * price_i) / 1'000'000) nano-USD (SPEC section 4), computed
// without overflow for any int64 inputs that fit the result; negative token
// counts count as zero.
Nanos cost_of(std::initializer_list<PricedTokens> parts);

}  // namespace spendcap
