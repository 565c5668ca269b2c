// What a request body lets the provider bill beyond its own bytes (SPEC
// section 3, step 3), read before anything is reserved: input the body only
// names (a stored response or conversation, a file, an image or audio, an
// item by reference), prompts the provider adds for tools, predicted output,
// and the things no reservation can bound (tools the provider runs and bills
// per call, audio at rates the policy does not list, priority processing),
// which are refused.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace spendcap {

// Tokens the provider adds to the prompt of a request that declares tools
// (Anthropic documents 313 to 530 for its tool-use system prompt; OpenAI
// renders function definitions in a wrapper of its own).
constexpr std::int64_t kToolPromptTokens = 1024;
// And for each tool the provider defines and the client runs (Anthropic's
// computer, text editor, bash and memory tools: 245 to 735 tokens each plus
// up to 499 of system prompt; OpenAI's computer use and shell tools).
constexpr std::int64_t kProviderToolTokens = 2048;

struct RequestReach {
    // Non-empty: the request is refused (400 invalid_request) with this message,
    // before anything is reserved: its cost has no bound a reservation can hold.
    std::string refusal;
    // Non-empty: some of the billed input is not in the body; says which
    // field or part ("previous_response_id", "a content part of type `image_url`").
    // The input is then estimated at the model's context window.
    std::string outside_input;
    // Tool prompts the provider adds to the input.
    std::int64_t hidden_input_tokens = 0;
    // A predicted output (`prediction`): its rejected tokens are billed as
    // output, up to its own length, which the body's length bounds.
    bool prediction = false;
};

// Reads every occurrence of the fields that matter, duplicates included (a
// provider that keeps the first of two keys must not see what we did not).
// `body` has been accepted by parse_request_body; `anthropic_beta` is the
// request's anthropic-beta header ("" when absent). A duplicated `model` or
// output bound is refused: the provider and the gateway might read different ones.
RequestReach reach_of(std::string_view body, std::string_view anthropic_beta = {});

}  // namespace spendcap
