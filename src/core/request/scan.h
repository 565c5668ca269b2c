// The request body's fields in one pass, without building a JSON tree: the
// fast path of parse_request_body (request.h). jansson stays the judge of
// everything this pass is not sure of, and the author of every error.
#pragma once

#include <optional>
#include <string_view>

#include "request/request.h"

namespace spendcap {

// The fields parse_request_body reads, for a body that jansson
// (json_loadb, JSON_ALLOW_NUL) certainly reads the same way and that
// parse_request_body certainly accepts: a well-formed JSON object whose
// fields of interest are plain (a model string without escapes, integer or
// null token bounds, true/false/null flags, an object or null
// stream_options), last duplicate winning as in jansson. nullopt for
// anything else: malformed JSON, a field that would be refused, escapes in a
// top-level key, integers of 19 digits or more, reals that might overflow,
// nesting past 512, a lone surrogate; the caller then asks jansson.
std::optional<RequestInfo> scan_request_body(std::string_view body);

// parse_request_body without the fast path: jansson only (for the fuzzer
// and the tests that hold the two to the same answers).
RequestParse parse_request_body_with_jansson(std::string_view body);

}  // namespace spendcap
