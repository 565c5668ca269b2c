// The LIMITS object as JSON: what the management API takes and answers, and
// what the records it writes hold (which the request path reads back).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "json/object_reader.h"
#include "policy/policy.h"

namespace spendcap {

// The members of a LIMITS object, as the policy file's `limits`: amounts are
// decimal USD, string or number, parsed exactly; counts are JSON integers;
// unknown members are refused. `out` is set only when all of it reads.
bool read_limits(json::ObjectReader &reader, Limits &out);
// Member `name` of `parent` as a LIMITS object; absent or null is no limits
// (`out` left as it was), as in the file.
bool read_limits(json::ObjectReader &parent, const char *name, Limits &out);

// A LIMITS object from its JSON text, or nullopt with the reason in `error`.
std::optional<Limits> parse_limits(std::string_view text, std::string &error);

// LIMITS as the file writes it: amounts as exact decimal strings ("10.00"),
// counts as integers, absent limits left out: {"monthly_usd": "10.00", "rpm": 600}.
std::string limits_json(const Limits &limits);

}  // namespace spendcap
