// One pass of the tokenizer over the request body, keeping per open
// container only what decides the bill's reach: where it is (the root, the
// content of messages / input / system, the tools) and, for an object there,
// its `type`.
#include "request/reach.h"

#include <array>
#include <vector>

#include "json/tokenizer.h"

namespace spendcap {

namespace {

using Token = JsonTokenizer::Token;

// Content parts and items whose billed input is all in the body. Anything
// else in the content (an image, a file, a document, an item by reference, a
// type this gateway does not know) may bring input the body does not hold.
constexpr std::string_view kInBodyTypes[] = {
    // text and the model's own earlier output
    "text", "input_text", "output_text", "refusal", "summary_text", "reasoning_text", "message",
    "thinking", "redacted_thinking", "search_result",
    // tool calls and their (text) results; a result holding an image is caught by its part
    "function", "function_call", "function_call_output", "custom_tool_call", "custom_tool_call_output",
    "tool_use", "tool_result", "computer_call", "local_shell_call", "local_shell_call_output", "shell_call",
    "shell_call_output", "apply_patch_call", "apply_patch_call_output",
    // cache control and citations inside parts
    "ephemeral", "url_citation", "file_citation", "container_file_citation", "file_path", "char_location",
    "page_location", "content_block_location", "search_result_location", "web_search_result_location",
    // checked apart: in the body only with its encrypted content
    "reasoning",
};

// Tools the client runs: function definitions, and the provider's own
// client-side tools (whose definitions the provider expands into a prompt).
bool is_plain_tool(std::string_view type) { return type.empty() || type == "function" || type == "custom"; }

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

bool is_client_provider_tool(std::string_view type) {
    for (std::string_view prefix : {"bash_", "text_editor_", "computer_", "memory_"})
        if (starts_with(type, prefix)) return true;
    return type == "computer_use_preview" || type == "local_shell" || type == "shell" || type == "apply_patch";
}

bool in_body_type(std::string_view type) {
    for (std::string_view known : kInBodyTypes)
        if (type == known) return true;
    return false;
}

enum class Area : std::uint8_t {
    root,        // the root object
    content,     // below messages / input / system
    tools,       // the tools array
    tool,        // one element of it
    mcp_servers, // Anthropic's MCP connector: tools run by the provider
    modalities,  // output modalities
    other,       // anything else: not read
};

struct Frame {
    Area area = Area::other;
    bool object = false;
    std::string key;            // the last key read in this object (decoded, "" if cut)
    std::string type;           // its `type` (objects in the content and the tools)
    bool has_type = false;
    bool encrypted_content = false;  // a non-empty encrypted_content (reasoning items)
    bool audio_key = false;     // an `audio` / `input_audio` member with a value
};

// The root fields whose duplicates are refused: the price and the output bound.
constexpr std::array<std::string_view, 6> kSingleRootFields = {"model", "max_tokens", "max_completion_tokens",
                                                               "max_output_tokens", "n", "best_of"};

std::string quoted(std::string_view s) { return "`" + std::string(s) + "`"; }

class Walker {
public:
    explicit Walker(RequestReach &out) : out_(out) {}

    void run(std::string_view body) {
        JsonTokenizer t;
        std::size_t pos = 0;
        while (out_.refusal.empty()) {
            const Token token = t.next(body, pos);
            if (token == Token::need_more) break;
            if (token == Token::error) {
                out_.refusal = "request body could not be read: " + t.error();
                return;
            }
            on_token(t, token);
        }
    }

private:
    void refuse(std::string why) {
        if (out_.refusal.empty()) out_.refusal = std::move(why);
    }
    // The last reason wins: a part ends after the objects inside it (an
    // image's `source`), so the part itself is named.
    void outside(std::string why) { out_.outside_input = std::move(why); }

    // The area a new container opens in, under the innermost frame.
    Area child_area() const {
        if (frames_.empty()) return Area::root;
        const Frame &parent = frames_.back();
        switch (parent.area) {
        case Area::root:
            if (parent.key == "messages" || parent.key == "input" || parent.key == "system") return Area::content;
            if (parent.key == "tools") return Area::tools;
            if (parent.key == "mcp_servers") return Area::mcp_servers;
            if (parent.key == "modalities") return Area::modalities;
            return Area::other;
        case Area::content: return Area::content;
        case Area::tools: return Area::tool;
        default: return Area::other;
        }
    }

    // A value (scalar or the start of a container) of `key` in the root object.
    void root_value(const std::string &key, Token token, const JsonTokenizer &t) {
        const bool null = token == Token::null_value;
        if ((key == "previous_response_id" || key == "conversation") && !null) outside(quoted(key));
        else if (key == "prompt" && token == Token::object_begin) outside("a stored `prompt`");
        else if (key == "prediction" && !null) out_.prediction = true;
        else if (key == "web_search_options" && !null)
            refuse("`web_search_options` makes the provider search the web, billed per call: spend-cap cannot "
                   "bound its cost");
        else if (key == "audio" && !null)
            refuse("audio output is billed at audio rates the policy does not list");
        else if (key == "service_tier" && token == Token::string && t.text() == "priority")
            refuse("`service_tier` priority is billed above the policy's prices");
        for (std::size_t i = 0; i < kSingleRootFields.size(); ++i) {
            if (key != kSingleRootFields[i]) continue;
            if (seen_root_ & (1u << i)) refuse("request body has more than one " + quoted(key));
            seen_root_ |= 1u << i;
        }
    }

    // A value in an object of the content: its type, and audio members.
    void content_value(Frame &f, Token token, const JsonTokenizer &t) {
        if (f.key == "type" && token == Token::string) {
            f.has_type = true;
            f.type.assign(t.text_truncated() ? std::string_view("?") : t.text());
        } else if (f.key == "encrypted_content" && token == Token::string) {
            f.encrypted_content = !t.text().empty();
        } else if ((f.key == "audio" || f.key == "input_audio") && token != Token::null_value) {
            f.audio_key = true;
        }
    }

    void end_content_object(const Frame &f) {
        if (f.audio_key || (f.has_type && (f.type == "input_audio" || f.type == "audio")))
            return refuse("audio input is billed at audio rates the policy does not list");
        if (!f.has_type) return;
        if (!in_body_type(f.type)) return outside("a content part of type " + quoted(f.type));
        if (f.type == "reasoning" && !f.encrypted_content) outside("a reasoning item without its encrypted content");
    }

    void end_tool(const Frame &f) {
        if (is_plain_tool(f.type)) return;
        if (is_client_provider_tool(f.type)) {
            out_.hidden_input_tokens += kProviderToolTokens;
            return;
        }
        refuse("tool type " + quoted(f.type) +
               " runs at the provider and is billed per call: spend-cap cannot bound its cost");
    }

    void on_token(const JsonTokenizer &t, Token token) {
        if (token == Token::key) {
            Frame &f = frames_.back();
            f.key.assign(t.text_truncated() ? std::string_view() : t.text());
            return;
        }
        if (token == Token::object_end || token == Token::array_end) {
            const Frame f = std::move(frames_.back());
            frames_.pop_back();
            if (f.area == Area::content && f.object) end_content_object(f);
            if (f.area == Area::tool && f.object) end_tool(f);
            return;
        }
        // A value: a scalar, or a container opening.
        if (!frames_.empty()) {
            Frame &parent = frames_.back();
            if (parent.object) {
                if (parent.area == Area::root) root_value(parent.key, token, t);
                else if (parent.area == Area::content) content_value(parent, token, t);
                else if (parent.area == Area::tool && parent.key == "type" && token == Token::string)
                    parent.type.assign(t.text_truncated() ? std::string_view("?") : t.text());
            } else {
                if (parent.area == Area::tools && !tools_counted_) {
                    out_.hidden_input_tokens += kToolPromptTokens;
                    tools_counted_ = true;
                }
                if (parent.area == Area::mcp_servers)
                    refuse("`mcp_servers` makes the provider call tools, billed per call: spend-cap cannot bound "
                           "their cost");
                if (parent.area == Area::modalities && token == Token::string && t.text() == "audio")
                    refuse("audio output is billed at audio rates the policy does not list");
            }
        }
        if (token == Token::object_begin || token == Token::array_begin) {
            Frame f;
            f.area = child_area();
            f.object = token == Token::object_begin;
            frames_.push_back(std::move(f));
        }
    }

    RequestReach &out_;
    std::vector<Frame> frames_;
    unsigned seen_root_ = 0;
    bool tools_counted_ = false;
};

bool contains_ignoring_case(std::string_view text, std::string_view lower) {
    if (lower.size() > text.size()) return false;
    for (std::size_t i = 0; i + lower.size() <= text.size(); ++i) {
        std::size_t j = 0;
        while (j < lower.size()) {
            char c = text[i + j];
            if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
            if (c != lower[j]) break;
            ++j;
        }
        if (j == lower.size()) return true;
    }
    return false;
}

}  // namespace

RequestReach reach_of(std::string_view body, std::string_view anthropic_beta) {
    RequestReach out;
    try {
        if (contains_ignoring_case(anthropic_beta, "context-1m"))
            out.refusal = "the long-context beta (`anthropic-beta: context-1m-...`) is billed at rates the policy "
                          "does not list";
        else
            Walker(out).run(body);
    } catch (...) {
        out = RequestReach{};
        out.refusal = "request body could not be read (out of memory)";
    }
    return out;
}

}  // namespace spendcap
