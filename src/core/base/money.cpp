// Exact decimal money: parsing policy amounts, rendering them, and the cost formula.
#include "base/money.h"

#include <cstdint>
#include <limits>

namespace spendcap {

namespace {

constexpr int kFractionDigits = 9;  // nano-USD resolution
constexpr std::int64_t kTokensPerPriceUnit = 1'000'000;

bool is_digit(char c) { return c >= '0' && c <= '9'; }

}  // namespace

bool parse_usd(std::string_view text, Nanos &out, std::string &error) {
    if (text.empty()) {
        error = "empty amount";
        return false;
    }
    // Grammar: DIGITS [ "." DIGITS ] — no sign, exponent, spaces or bare point.
    std::size_t pos = 0;
    std::int64_t whole = 0;
    const std::int64_t max_whole = std::numeric_limits<Nanos>::max() / kNanosPerUsd;
    std::size_t whole_digits = 0;
    for (; pos < text.size() && is_digit(text[pos]); ++pos, ++whole_digits) {
        whole = whole * 10 + (text[pos] - '0');
        if (whole > max_whole) {
            error = "amount is too large";
            return false;
        }
    }
    if (whole_digits == 0) {
        const char first = text[0];
        if (first == '-')
            error = "negative amounts are not allowed";
        else if (first == '+')
            error = "signs are not allowed";
        else if (first == ' ' || first == '\t')
            error = "spaces are not allowed";
        else
            error = "amount must start with a digit";
        return false;
    }

    std::int64_t fraction = 0;
    if (pos < text.size() && text[pos] == '.') {
        ++pos;
        int fraction_digits = 0;
        for (; pos < text.size() && is_digit(text[pos]); ++pos) {
            if (++fraction_digits > kFractionDigits) {
                error = "more than nine digits after the decimal point";
                return false;
            }
            fraction = fraction * 10 + (text[pos] - '0');
        }
        if (fraction_digits == 0) {
            error = "a digit must follow the decimal point";
            return false;
        }
        for (int i = fraction_digits; i < kFractionDigits; ++i) fraction *= 10;
    }

    if (pos != text.size()) {
        const char c = text[pos];
        if (c == 'e' || c == 'E')
            error = "exponents are not allowed; write the amount in plain decimal";
        else if (c == ' ' || c == '\t')
            error = "spaces are not allowed";
        else
            error = "not a plain non-negative decimal amount";
        return false;
    }

    // whole <= max_whole, so whole * 1e9 fits; the fraction may still overflow it.
    Nanos whole_nanos = whole * kNanosPerUsd;
    if (fraction > std::numeric_limits<Nanos>::max() - whole_nanos) {
        error = "amount is too large";
        return false;
    }
    out = whole_nanos + fraction;
    return true;
}

std::string format_usd(Nanos nanos) {
    // Work in unsigned so that the most negative value negates safely.
    bool negative = nanos < 0;
    std::uint64_t magnitude = negative ? (~static_cast<std::uint64_t>(nanos) + 1)
                                       : static_cast<std::uint64_t>(nanos);
    std::uint64_t whole = magnitude / kNanosPerUsd;
    std::uint64_t fraction = magnitude % kNanosPerUsd;

    std::string fraction_text(kFractionDigits, '0');
    for (int i = kFractionDigits - 1; i >= 0; --i) {
        fraction_text[i] = static_cast<char>('0' + fraction % 10);
        fraction /= 10;
    }
    std::size_t keep = kFractionDigits;
    while (keep > 2 && fraction_text[keep - 1] == '0') --keep;
    fraction_text.resize(keep);

    std::string result = negative ? "-" : "";
    result += std::to_string(whole);
    result += '.';
    result += fraction_text;
    return result;
}

Nanos cost_of(std::initializer_list<PricedTokens> parts) {
    // Each product fits in 127 bits; saturate the running sum so that many
    // huge parts cannot wrap it. Past `ceiling` the result saturates anyway.
    const __int128 ceiling =
        static_cast<__int128>(std::numeric_limits<Nanos>::max()) * kTokensPerPriceUnit;
    const __int128 floor = -ceiling;
    __int128 total = 0;
    for (const PricedTokens &part : parts) {
        if (part.tokens <= 0) continue;
        total += static_cast<__int128>(part.tokens) * part.price_per_million;
        if (total > ceiling) total = ceiling;
        if (total < floor) total = floor;
    }
    // Ceiling division: C++ division truncates toward zero, which is already
    // the ceiling for negative totals (only possible with negative prices).
    __int128 cost = total / kTokensPerPriceUnit;
    if (total > 0 && total % kTokensPerPriceUnit != 0) ++cost;
    if (cost > std::numeric_limits<Nanos>::max()) return std::numeric_limits<Nanos>::max();
    if (cost < std::numeric_limits<Nanos>::min()) return std::numeric_limits<Nanos>::min();
    return static_cast<Nanos>(cost);
}

}  // namespace spendcap
