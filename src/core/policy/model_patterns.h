// Model patterns of per-model limits and allowed_models (SPEC section 2b):
// an exact model name, or one with `*` standing for any run of characters
// ("gpt-4o*", "claude-*").
#pragma once

#include <string>
#include <string_view>

namespace spendcap {

// Patterns are 1 to 128 bytes of printable ASCII (no space); any number of '*'.
constexpr std::size_t kMaxModelPatternBytes = 128;

// "" when `pattern` is a valid pattern, else why not (for a load error or a 400).
std::string model_pattern_problem(std::string_view pattern);

// Whether `model` (a request's model, any bytes) matches `pattern`: every
// character equal, '*' matching any run (none included). Linear in
// |pattern| * |model| at worst, without recursion.
bool model_matches(std::string_view pattern, std::string_view model);

// The pattern as one part of a Redis key: '%', ':', '{', '}', space and
// bytes outside printable ASCII as %XX (upper-case hex), so that a pattern can
// neither end the key's part nor move the key to another hash slot.
std::string encode_pattern(std::string_view pattern);

}  // namespace spendcap
