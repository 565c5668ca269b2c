// The response side: token usage read from an upstream answer, and its cost.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "money.h"
#include "policy.h"
#include "request.h"

namespace spendcap {

// Tokens by how they are billed. For OpenAI, prompt_tokens includes cached
// tokens: `input` here holds prompt - cached. Reasoning tokens are part of output.
struct Usage {
    std::int64_t input = 0;         // billed at `input`
    std::int64_t cached_input = 0;  // billed at `cached_input` (else `input`)
    std::int64_t cache_write = 0;   // billed at `cache_write` (else `input`)
    std::int64_t cache_read = 0;    // billed at `cache_read` (else `input`)
    std::int64_t output = 0;        // billed at `output`

    std::int64_t input_total() const { return input + cached_input + cache_write + cache_read; }
};

// Parses one `usage` JSON object (the object's own text) of the given surface:
// OpenAI Chat Completions / Completions / Embeddings (prompt_tokens,
// completion_tokens, prompt_tokens_details.cached_tokens), OpenAI Responses
// (input_tokens, output_tokens, input_tokens_details.cached_tokens), Anthropic
// Messages (input_tokens, output_tokens, cache_creation_input_tokens,
// cache_read_input_tokens). nullopt if it is not such an object.
std::optional<Usage> parse_usage_object(std::string_view json, Surface surface);

Nanos usage_cost(const Usage &u, const ModelPrice &price);

// Reads a plain JSON response body as it streams past, chunk by chunk split at
// any byte, and keeps only the top-level "usage" object. Memory stays under
// kMaxCapture bytes plus a small constant whatever the body's length.
class UsageScanner {
public:
    static constexpr std::size_t kMaxCapture = 8192;

    explicit UsageScanner(Surface surface);
    void feed(std::string_view chunk);
    // Call once at the end of the body.
    void finish();

    enum class State {
        reading,    // before finish()
        found,      // a complete body with a parseable top-level usage
        no_usage,   // complete JSON body without a usage object
        malformed,  // not JSON, truncated, or a usage that does not parse / is too large
    };
    State state() const;
    const std::optional<Usage> &usage() const;
    // Why the state is malformed, for one warn log line.
    const std::string &error() const;

private:
    struct Impl;
    std::shared_ptr<Impl> impl_;
};

}  // namespace spendcap
