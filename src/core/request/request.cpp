// The request side: API surface, body fields that bound the cost, the
// worst-case estimate, and the hashes keys and scripts are named by.
#include "request/request.h"

#include "base/saturating.h"

#include <cctype>
#include <limits>

#include <jansson.h>

#include <memory>

#include "json/tokenizer.h"
#include "request/scan.h"

namespace spendcap {

namespace {

struct JsonDeleter {
    void operator()(json_t *value) const { json_decref(value); }
};
using JsonPtr = std::unique_ptr<json_t, JsonDeleter>;

constexpr std::string_view kAnthropicMessagesPath = "/v1/messages";
constexpr std::string_view kAnthropicCountTokensPath = "/v1/messages/count_tokens";

RequestParse parse_error(std::string why) {
    RequestParse result;
    result.error = std::move(why);
    return result;
}

// JSON null counts as absent: clients send "max_tokens": null to mean "unset".
json_t *member(json_t *object, const char *name) {
    json_t *value = json_object_get(object, name);
    return json_is_null(value) ? nullptr : value;
}

// false when `name` is present but not true/false.
bool read_bool(json_t *object, const char *name, bool &out) {
    json_t *value = member(object, name);
    if (!value) return true;
    if (!json_is_boolean(value)) return false;
    out = json_is_true(value);
    return true;
}

}  // namespace

static bool ends_with(std::string_view s, std::string_view suffix) {
    return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

Surface surface_for_path(std::string_view uri_path) {
    if (ends_with(uri_path, kAnthropicMessagesPath) || ends_with(uri_path, kAnthropicCountTokensPath))
        return Surface::anthropic;
    return Surface::openai;
}

Endpoint endpoint_for(std::string_view method, std::string_view path) {
    if (method == "GET" || method == "HEAD" || method == "DELETE" || method == "OPTIONS") return Endpoint::free;
    if (method != "POST") return Endpoint::unsupported;
    // Counting a request's tokens is free at both providers; so is cancelling
    // a background response (/responses/ID/cancel).
    if (ends_with(path, "/messages/count_tokens") || ends_with(path, "/responses/input_tokens"))
        return Endpoint::free;
    if (ends_with(path, "/cancel")) {
        const std::string_view rest = path.substr(0, path.size() - 7);
        const std::size_t slash = rest.rfind('/');
        if (slash != std::string_view::npos && slash + 1 < rest.size() && ends_with(rest.substr(0, slash), "/responses"))
            return Endpoint::free;
    }
    if (ends_with(path, "/chat/completions")) return Endpoint::chat_completions;
    if (ends_with(path, "/completions")) return Endpoint::completions;
    if (ends_with(path, "/embeddings")) return Endpoint::embeddings;
    if (ends_with(path, "/responses")) return Endpoint::responses;
    if (ends_with(path, "/messages")) return Endpoint::messages;
    return Endpoint::unsupported;
}

bool is_metered(Endpoint e) { return e != Endpoint::free && e != Endpoint::unsupported; }

std::string endpoint_refusal(Endpoint e, std::string_view method, std::string_view uri_path,
                             std::string_view sent_path) {
    try {
        if (sent_path != uri_path)
            return "the request path must be sent in normal form (no percent-encoding, no `.` or `..` segments, "
                   "no `//`)";
        if (e == Endpoint::unsupported)
            return "spend-cap cannot bound the cost of " + std::string(method) + " " + std::string(uri_path) +
                   ": its location takes the metered endpoints (chat/completions, completions, embeddings, "
                   "responses, messages) and requests without a body";
        return {};
    } catch (...) {
        return "the request could not be read (out of memory)";
    }
}

std::string_view output_bound_field(Endpoint e) {
    switch (e) {
    case Endpoint::chat_completions: return "max_completion_tokens";
    case Endpoint::completions: return "max_tokens";
    case Endpoint::responses: return "max_output_tokens";
    default: return {};
    }
}

RequestParse parse_request_body_with_jansson(std::string_view body) {
    try {
        json_error_t json_error;
        // JSON_ALLOW_NUL: "\u0000" inside a prompt is valid JSON the upstream accepts.
        JsonPtr root(json_loadb(body.data(), body.size(), JSON_ALLOW_NUL, &json_error));
        if (!root)
            return parse_error("request body is not valid JSON: " + std::string(json_error.text) +
                               " at line " + std::to_string(json_error.line) + " column " +
                               std::to_string(json_error.column));
        if (!json_is_object(root.get())) return parse_error("request body is not a JSON object");

        RequestParse result;
        json_t *model = member(root.get(), "model");
        if (!model) return parse_error("request body has no model");
        if (!json_is_string(model) || json_string_length(model) == 0)
            return parse_error("model must be a non-empty string");
        result.info.model.assign(json_string_value(model), json_string_length(model));

        // The surfaces name the output bound differently; if several are
        // given, the largest is the worst case.
        for (const char *name : {"max_tokens", "max_completion_tokens", "max_output_tokens"}) {
            json_t *value = member(root.get(), name);
            if (!value) continue;
            if (!json_is_integer(value) || json_integer_value(value) < 0)
                return parse_error(std::string(name) + " must be a non-negative integer");
            const std::int64_t tokens = json_integer_value(value);
            if (!result.info.max_output_tokens || tokens > *result.info.max_output_tokens)
                result.info.max_output_tokens = tokens;
        }

        // OpenAI bills every generated choice: `n` (and `best_of` on Completions)
        // multiplies the output bound.
        for (const char *name : {"n", "best_of"}) {
            json_t *value = member(root.get(), name);
            if (!value) continue;
            if (!json_is_integer(value) || json_integer_value(value) < 1)
                return parse_error(std::string(name) + " must be a positive integer");
            if (json_integer_value(value) > result.info.choices)
                result.info.choices = json_integer_value(value);
        }

        if (!read_bool(root.get(), "stream", result.info.stream))
            return parse_error("stream must be true or false");
        if (json_t *options = member(root.get(), "stream_options")) {
            if (!json_is_object(options)) return parse_error("stream_options must be an object");
            if (!read_bool(options, "include_usage", result.info.include_usage))
                return parse_error("stream_options.include_usage must be true or false");
        }

        result.ok = true;
        return result;
    } catch (...) {
        return parse_error("request body could not be read (out of memory)");
    }
}

RequestParse parse_request_body(std::string_view body) {
    // One pass without a tree for the bodies it is sure of; jansson for the
    // rest, and for every error message.
    std::optional<RequestInfo> info = scan_request_body(body);
    if (!info) return parse_request_body_with_jansson(body);
    RequestParse result;
    result.ok = true;
    result.info = std::move(*info);
    return result;
}

namespace {

bool is_json_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// Where the value of a key starts: after whitespace, ':' and whitespace.
std::size_t value_start(std::string_view body, std::size_t key_end) {
    std::size_t at = key_end;
    while (at < body.size() && body[at] != ':') ++at;
    ++at;
    while (at < body.size() && is_json_space(body[at])) ++at;
    return at;
}

// Byte positions in a body, found with the tokenizer: the root's '{', and the
// last top-level "stream_options" and, inside it, its last "include_usage"
// (the last duplicate wins, as in jansson).
struct StreamOptionsLayout {
    std::size_t root_open = 0;
    bool options = false;             // a top-level "stream_options" key
    std::size_t options_begin = 0;    // its value: [begin, end)
    std::size_t options_end = 0;
    bool options_object = false;
    bool options_empty = true;
    bool include_usage = false;       // an "include_usage" key in that object
    std::size_t include_usage_begin = 0;
    std::size_t include_usage_end = 0;
};

bool find_stream_options(std::string_view body, StreamOptionsLayout &out) {
    using Token = JsonTokenizer::Token;
    JsonTokenizer t;
    std::size_t pos = 0;
    bool root = false;
    bool value_next = false;          // a key was read: the next token starts its value
    bool key_is_options = false, key_is_include_usage = false;
    std::size_t key_end = 0;
    bool in_options = false;          // inside the last stream_options object
    std::size_t options_depth = 0;    // stream_options is a container open at this depth
    std::size_t include_usage_depth = 0;
    while (true) {
        const Token token = t.next(body, pos);
        if (token == Token::need_more) break;
        if (token == Token::error) return false;
        const std::size_t depth = t.depth();
        if (!root) {
            if (token != Token::object_begin) return false;
            root = true;
            out.root_open = pos - 1;
            continue;
        }
        if (token == Token::key) {
            const bool whole = !t.text_truncated();
            key_end = pos;
            value_next = true;
            key_is_options = depth == 1 && whole && t.text() == "stream_options";
            key_is_include_usage = false;
            if (depth == 2 && in_options) {
                out.options_empty = false;
                key_is_include_usage = whole && t.text() == "include_usage";
            }
            continue;
        }
        const bool opens = token == Token::object_begin || token == Token::array_begin;
        if (value_next) {
            value_next = false;
            if (key_is_options) {
                out.options = true;
                out.options_begin = value_start(body, key_end);
                out.options_end = pos;
                out.options_object = token == Token::object_begin;
                out.options_empty = true;
                out.include_usage = false;
                in_options = out.options_object;
                options_depth = opens ? depth : 0;
            } else if (key_is_include_usage) {
                out.include_usage = true;
                out.include_usage_begin = value_start(body, key_end);
                out.include_usage_end = pos;
                include_usage_depth = opens ? depth : 0;
            }
            continue;
        }
        if (token == Token::object_end || token == Token::array_end) {
            if (include_usage_depth != 0 && depth + 1 == include_usage_depth) {
                out.include_usage_end = pos;
                include_usage_depth = 0;
            }
            if (options_depth != 0 && depth + 1 == options_depth) {
                out.options_end = pos;
                options_depth = 0;
                in_options = false;
            }
        }
    }
    t.finish();
    return t.complete();
}

}  // namespace

bool stream_usage_is_optional(std::string_view uri_path) {
    const std::size_t query = uri_path.find('?');
    if (query != std::string_view::npos) uri_path = uri_path.substr(0, query);
    return ends_with(uri_path, "/chat/completions") || ends_with(uri_path, "/completions");
}

std::optional<std::string> with_stream_usage(std::string_view body) {
    try {
        // What the upstream will read (jansson: the last duplicate key wins).
        json_error_t json_error;
        JsonPtr root(json_loadb(body.data(), body.size(), JSON_ALLOW_NUL, &json_error));
        if (!root || !json_is_object(root.get())) return std::nullopt;
        if (!json_is_true(json_object_get(root.get(), "stream"))) return std::nullopt;
        json_t *options = json_object_get(root.get(), "stream_options");
        if (json_is_object(options) && json_is_true(json_object_get(options, "include_usage")))
            return std::nullopt;

        // Where to edit.
        StreamOptionsLayout at;
        if (!find_stream_options(body, at)) return std::nullopt;
        std::string edited;
        auto splice = [&](std::size_t begin, std::size_t end, std::string_view text) {
            edited.reserve(body.size() - (end - begin) + text.size());
            edited.append(body.substr(0, begin));
            edited.append(text);
            edited.append(body.substr(end));
        };
        if (!at.options) {
            // The root holds "stream": it is not empty.
            splice(at.root_open + 1, at.root_open + 1, R"("stream_options":{"include_usage":true},)");
        } else if (!at.options_object) {
            splice(at.options_begin, at.options_end, R"({"include_usage":true})");
        } else if (!at.include_usage) {
            splice(at.options_begin + 1, at.options_begin + 1,
                   at.options_empty ? R"("include_usage":true)" : R"("include_usage":true,)");
        } else {
            splice(at.include_usage_begin, at.include_usage_end, "true");
        }
        return edited;
    } catch (...) {
        return std::nullopt;
    }
}

std::optional<std::string> with_output_bound(std::string_view body, std::string_view field,
                                             std::int64_t tokens) {
    try {
        // Where the root object opens, and where a `field` of its own (null,
        // as the caller gave no bound) has its value: that value is replaced,
        // so that no parser can take the null instead of the bound.
        using Token = JsonTokenizer::Token;
        JsonTokenizer t;
        std::size_t pos = 0, root_open = 0, key_end = 0, begin = 0, end = 0;
        bool root = false, field_next = false, found = false, empty = true;
        while (true) {
            const Token token = t.next(body, pos);
            if (token == Token::need_more) break;
            if (token == Token::error) return std::nullopt;
            if (!root) {
                if (token != Token::object_begin) return std::nullopt;
                root = true;
                root_open = pos - 1;
                continue;
            }
            if (token == Token::key && t.depth() == 1) {
                empty = false;
                field_next = !t.text_truncated() && t.text() == field;
                key_end = pos;
                continue;
            }
            if (field_next) {
                field_next = false;
                if (token == Token::object_begin || token == Token::array_begin) return std::nullopt;
                found = true;
                begin = value_start(body, key_end);
                end = pos;  // a null (or any scalar) ends here; a container is not a bound anyway
            }
        }
        const std::string number = std::to_string(tokens);
        std::string edited;
        if (found) {
            edited.reserve(body.size() + number.size());
            edited.append(body.substr(0, begin)).append(number).append(body.substr(end));
        } else {
            const std::string member = "\"" + std::string(field) + "\":" + number + (empty ? "" : ",");
            edited.reserve(body.size() + member.size());
            edited.append(body.substr(0, root_open + 1)).append(member).append(body.substr(root_open + 1));
        }
        return edited;
    } catch (...) {
        return std::nullopt;
    }
}

std::int64_t Estimate::tokens() const { return saturating_add(input_tokens, output_tokens); }

std::string bounds_error(const RequestInfo &info, const ModelPrice &price) {
    try {
        const std::int64_t most = price.max_output_tokens ? *price.max_output_tokens : kMaxOutputTokens;
        if (info.max_output_tokens && *info.max_output_tokens > most)
            return "max tokens " + std::to_string(*info.max_output_tokens) + " exceed the model's limit of " +
                   std::to_string(most) + " output tokens";
        if (info.choices > kMaxChoices)
            return "n " + std::to_string(info.choices) + " exceeds the limit of " + std::to_string(kMaxChoices) +
                   " choices";
        return {};
    } catch (...) {
        return "request exceeds the limits";
    }
}

std::int64_t output_bound(const ModelPrice &price, const Policy &policy,
                          const std::optional<std::int64_t> &max_output_tokens) {
    const std::int64_t bound = max_output_tokens         ? *max_output_tokens
                               : price.max_output_tokens ? *price.max_output_tokens
                                                         : policy.default_max_output_tokens;
    return bound > 0 ? bound : 0;
}

Estimate estimate_worst_case(const ModelPrice &price, const Policy &policy,
                             std::int64_t body_bytes,
                             const std::optional<std::int64_t> &max_output_tokens,
                             std::int64_t choices, const RequestReach &reach) {
    constexpr std::int64_t most = std::numeric_limits<std::int64_t>::max();
    Estimate estimate;
    if (body_bytes < 0) body_bytes = 0;
    // A token is at least one byte of the body, so the body's length bounds
    // them, with the prompts the provider adds for tools; input the body only
    // names fills at most the model's context window.
    estimate.input_tokens = reach.outside_input.empty()
                                ? (body_bytes > most - reach.hidden_input_tokens ? most : body_bytes + reach.hidden_input_tokens)
                                : policy.context_window(price);
    estimate.output_tokens = output_bound(price, policy, max_output_tokens);
    if (choices > 1)
        estimate.output_tokens = estimate.output_tokens > most / choices ? most : estimate.output_tokens * choices;
    // A prediction's rejected tokens bill as output; they are no more than its
    // own length, which is part of the body's.
    if (reach.prediction)
        estimate.output_tokens = estimate.output_tokens > most - body_bytes ? most : estimate.output_tokens + body_bytes;
    // cost_of saturates, so an absurd max_tokens blocks instead of wrapping.
    estimate.cost = cost_of({{estimate.input_tokens, price.max_input_rate()},
                             {estimate.output_tokens, price.output}});
    return estimate;
}

std::string caller_key(const std::optional<std::string_view> &authorization,
                       const std::optional<std::string_view> &x_api_key) {
    try {
        if (authorization && authorization->size() > 7) {
            std::string_view v = *authorization;
            const std::string_view scheme = v.substr(0, 7);
            bool bearer = true;
            for (std::size_t i = 0; i < 7; ++i)
                bearer = bearer && std::tolower(static_cast<unsigned char>(scheme[i])) == "bearer "[i];
            if (bearer) {
                v.remove_prefix(7);
                const std::size_t start = v.find_first_not_of(' ');
                if (start != std::string_view::npos)
                    return std::string(v.substr(start, v.find_last_not_of(' ') - start + 1));
            }
        }
        return x_api_key ? std::string(*x_api_key) : std::string();
    } catch (...) {
        return {};
    }
}

}  // namespace spendcap
