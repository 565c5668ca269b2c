// The request side: what the body says, the API surface, the worst-case estimate.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "base/money.h"
#include "policy/policy.h"
#include "request/reach.h"

namespace spendcap {

enum class Surface { openai, anthropic };

// `auto` surface: a path ending in "/v1/messages" (or its
// "/v1/messages/count_tokens") is Anthropic, else OpenAI.
Surface surface_for_path(std::string_view uri_path);

// What an enforced location does with a request, by its method and path.
enum class Endpoint {
    // Metered: the body is read, the worst case reserved, the usage settled.
    chat_completions,  // .../chat/completions
    completions,       // .../completions
    embeddings,        // .../embeddings
    responses,         // .../responses
    messages,          // .../messages (Anthropic)
    // Identified, forwarded and counted nowhere (SPEC section 3): nothing the
    // provider bills (GET, HEAD, DELETE, OPTIONS; counting input tokens,
    // cancelling a response).
    free,
    // Refused with 400 after identification: a call whose cost no
    // reservation bounds (files, batches, fine-tuning, images, audio...).
    unsupported,
};
Endpoint endpoint_for(std::string_view method, std::string_view uri_path);
bool is_metered(Endpoint e);

// Why an enforced location refuses a request of an endpoint that is not free,
// before reading its body ("" when it does not): the path the upstream gets
// (`sent_path`: the client's own, when NGINX passes it on) differs from the
// normalized one the endpoint was decided by, or the endpoint is unsupported.
std::string endpoint_refusal(Endpoint e, std::string_view method, std::string_view uri_path,
                             std::string_view sent_path);

// The body field that bounds output at a metered endpoint, for a request that
// names none ("" where the provider needs none or requires one: embeddings,
// Anthropic's max_tokens).
std::string_view output_bound_field(Endpoint e);

// The body with `"FIELD":TOKENS` added as the root object's first member, the
// rest unchanged; nullopt when the body is not a JSON object.
std::optional<std::string> with_output_bound(std::string_view body, std::string_view field,
                                             std::int64_t tokens);

struct RequestInfo {
    std::string model;
    // max_tokens / max_completion_tokens / max_output_tokens (the largest if
    // several are given); absent when none is.
    std::optional<std::int64_t> max_output_tokens;
    bool stream = false;
    bool include_usage = false;  // stream_options.include_usage == true
    std::int64_t choices = 1;    // OpenAI `n` / `best_of`: each choice is billed
};

struct RequestParse {
    bool ok = false;
    std::string error;  // "request body is not valid JSON", "request body has no model", ...
    RequestInfo info;
};

// Parses a request body (one pass for the plain ones, request_scan.h; jansson
// for the rest, and for every error). Not a JSON object, no string `model`,
// or a max-tokens field that is not a non-negative integer -> !ok.
RequestParse parse_request_body(std::string_view body);

// OpenAI Chat Completions and Completions streams carry usage only when the
// request asks: paths ending in "/chat/completions" or "/completions".
bool stream_usage_is_optional(std::string_view uri_path);

// For a streaming request (`stream: true`) without
// stream_options.include_usage == true: the same body with it set to true,
// edited in place (the rest of the bytes unchanged, no re-serialisation);
// nullopt when there is nothing to change or the body is not a JSON object.
std::optional<std::string> with_stream_usage(std::string_view body);

struct Estimate {
    std::int64_t input_tokens = 0;   // the body's byte length and tool prompts, or the context window
    std::int64_t output_tokens = 0;  // output_bound() x choices (+ the body's length for a prediction)
    Nanos cost = 0;                  // input at max_input_rate(), output at output rate

    std::int64_t tokens() const;     // input + output, saturating
};

// The largest max-tokens a request may ask of a model without its own
// max_output_tokens, and the most choices (OpenAI's own limit on `n`).
constexpr std::int64_t kMaxOutputTokens = 1'000'000;
constexpr std::int64_t kMaxChoices = 128;

// Why a request asks for more than any provider would give ("" if it does
// not): max tokens above the model's max_output_tokens (else above
// kMaxOutputTokens), or more than kMaxChoices choices. Such a request is
// refused with 400 before anything is counted, as the provider would.
std::string bounds_error(const RequestInfo &info, const ModelPrice &price);

// The output tokens one choice may bill: the request's max tokens, else the
// model's max_output_tokens, else the policy's default_max_output_tokens.
std::int64_t output_bound(const ModelPrice &price, const Policy &policy,
                          const std::optional<std::int64_t> &max_output_tokens);

// SPEC section 3 step 3. Input: the body's bytes (a token is at least one
// byte) plus the tool prompts the provider adds, or, when some input is not
// in the body (`reach.outside_input`), the model's context window.
Estimate estimate_worst_case(const ModelPrice &price, const Policy &policy,
                             std::int64_t body_bytes,
                             const std::optional<std::int64_t> &max_output_tokens,
                             std::int64_t choices = 1, const RequestReach &reach = {});

// The caller's key when spend_cap_key is not set: the bearer token of
// Authorization ("Bearer", any case, surrounding spaces trimmed), else
// x-api-key (Anthropic clients); "" when neither gives one.
std::string caller_key(const std::optional<std::string_view> &authorization,
                       const std::optional<std::string_view> &x_api_key);


}  // namespace spendcap
