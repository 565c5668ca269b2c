// Reading one `usage` object of an API response (OpenAI's or Anthropic's
// fields) into Usage: in one pass where it can, else through jansson.
#include "usage/usage.h"

#include <jansson.h>

#include <memory>

#include "json/fields.h"

namespace spendcap {

namespace {

struct JsonDeleter {
    void operator()(json_t *value) const { json_decref(value); }
};
using JsonPtr = std::unique_ptr<json_t, JsonDeleter>;

// The usage fields the readers below take, by index into usage_names(): the
// one table both sources read them by.
enum UsageField {
    prompt_tokens, completion_tokens, input_tokens, output_tokens, cache_creation_input_tokens,
    cache_read_input_tokens, prompt_tokens_details, input_tokens_details, cache_creation
};

const JsonFieldNames &usage_names() {
    static const JsonFieldNames names = [] {
        JsonFieldNames v;
        v.root = {"prompt_tokens",  "completion_tokens", "input_tokens", "output_tokens",
                  "cache_creation_input_tokens", "cache_read_input_tokens", "prompt_tokens_details",
                  "input_tokens_details", "cache_creation"};
        v.nested[0].object = "prompt_tokens_details";  // both hold cached_tokens, their only field read
        v.nested[0].members = {"cached_tokens"};
        v.nested[1].object = "input_tokens_details";
        v.nested[1].members = {"cached_tokens"};
        v.nested[2].object = "cache_creation";  // Anthropic's split of cache writes by lifetime
        v.nested[2].members = {"ephemeral_1h_input_tokens"};
        return v;
    }();
    return names;
}

// The usage object as a tree (jansson). Rules of both sources: a token count
// absent or null is empty, one that is not a non-negative integer makes the
// whole usage unreadable; a details object may be absent or null.
struct TreeSource {
    json_t *usage;
    json_t *details = nullptr;

    static bool count_of(json_t *object, std::string_view name, std::optional<std::int64_t> &out) {
        // the names are string literals: NUL-terminated (json_object_getn is jansson 2.14+)
        json_t *value = object ? json_object_get(object, name.data()) : nullptr;
        if (!value || json_is_null(value)) return true;
        if (!json_is_integer(value) || json_integer_value(value) < 0) return false;
        out = json_integer_value(value);
        return true;
    }
    bool count(UsageField field, std::optional<std::int64_t> &out) const {
        return count_of(usage, usage_names().root[field], out);
    }
    bool select_details(UsageField field) {
        const std::string_view name = usage_names().root[field];
        json_t *value = json_object_get(usage, name.data());
        details = nullptr;
        if (!value || json_is_null(value)) return true;
        if (!json_is_object(value)) return false;
        details = value;
        return true;
    }
    bool cached_tokens(std::optional<std::int64_t> &out) const {
        return count_of(details, usage_names().nested[0].members[0], out);
    }
    bool one_hour_writes(std::optional<std::int64_t> &out) {
        if (!select_details(cache_creation)) return false;
        return count_of(details, usage_names().nested[2].members[0], out);
    }
};

// The same fields through the one-pass reader (json/fields.h): no tree, no
// allocation. Only for an object it read.
struct FieldSource {
    const JsonFieldReader &reader;
    int details = -1;  // which nested object (-1: none)

    static bool count_of(const JsonField &f, std::optional<std::int64_t> &out) {
        if (f.absent_or_null()) return true;
        if (f.kind != JsonField::Kind::integer || f.integer < 0) return false;
        out = f.integer;
        return true;
    }
    bool count(UsageField field, std::optional<std::int64_t> &out) const {
        return count_of(reader.root(field), out);
    }
    bool select_details(UsageField field) {
        const JsonField &f = reader.root(field);
        details = -1;
        if (f.absent_or_null()) return true;
        if (f.kind != JsonField::Kind::object) return false;
        details = field == prompt_tokens_details ? 0 : field == input_tokens_details ? 1 : 2;
        return true;
    }
    bool cached_tokens(std::optional<std::int64_t> &out) const {
        return details < 0 || count_of(reader.nested(details, 0), out);
    }
    bool one_hour_writes(std::optional<std::int64_t> &out) {
        if (!select_details(cache_creation)) return false;
        return details < 0 || count_of(reader.nested(details, 0), out);
    }
};

// OpenAI: Chat Completions / Completions / Embeddings (prompt_tokens, which
// include cached ones) or Responses (input_tokens, likewise inclusive).
template <class Source>
std::optional<Usage> openai_usage(Source source) {
    std::optional<std::int64_t> prompt, completion, input, output, cached;
    if (!source.count(prompt_tokens, prompt)) return std::nullopt;
    if (prompt) {
        if (!source.count(completion_tokens, completion)) return std::nullopt;
        if (!source.select_details(prompt_tokens_details)) return std::nullopt;
        input = prompt;
        output = completion;  // absent for embeddings
    } else {
        if (!source.count(input_tokens, input) || !input) return std::nullopt;
        if (!source.count(output_tokens, output)) return std::nullopt;
        if (!source.select_details(input_tokens_details)) return std::nullopt;
    }
    if (!source.cached_tokens(cached)) return std::nullopt;
    const std::int64_t cached_tokens = cached.value_or(0);
    if (cached_tokens > *input) return std::nullopt;  // inconsistent: cached is part of input

    Usage u;
    u.input = *input - cached_tokens;
    u.cached_input = cached_tokens;
    u.output = output.value_or(0);
    return u;
}

// Anthropic Messages: input_tokens excludes the cache tokens, which are
// counted apart. A stream's message_delta may carry output_tokens alone.
template <class Source>
std::optional<Usage> anthropic_usage(Source source) {
    std::optional<std::int64_t> input, output, cache_write, cache_read, one_hour;
    if (!source.count(input_tokens, input) || !source.count(output_tokens, output) ||
        !source.count(cache_creation_input_tokens, cache_write) ||
        !source.count(cache_read_input_tokens, cache_read) || !source.one_hour_writes(one_hour))
        return std::nullopt;
    if (!input && !output) return std::nullopt;
    Usage u;
    u.input = input.value_or(0);
    u.output = output.value_or(0);
    // cache_creation_input_tokens counts every write; the one-hour ones are a part of it.
    u.cache_write_1h = one_hour.value_or(0);
    if (u.cache_write_1h > cache_write.value_or(0)) return std::nullopt;  // inconsistent
    u.cache_write = cache_write.value_or(0) - u.cache_write_1h;
    u.cache_read = cache_read.value_or(0);
    return u;
}

}  // namespace

std::optional<Usage> parse_usage_object_with_jansson(std::string_view json, Surface surface) {
    try {
        json_error_t error;
        JsonPtr root(json_loadb(json.data(), json.size(), JSON_ALLOW_NUL, &error));
        if (!root || !json_is_object(root.get())) return std::nullopt;
        return surface == Surface::anthropic ? anthropic_usage(TreeSource{root.get()})
                                             : openai_usage(TreeSource{root.get()});
    } catch (...) {
        return std::nullopt;
    }
}

std::optional<Usage> parse_usage_object(std::string_view json, Surface surface) {
    // One pass without a tree where it is sure of the object; jansson otherwise.
    JsonFieldReader reader(usage_names());
    if (!reader.read(json)) return parse_usage_object_with_jansson(json, surface);
    return surface == Surface::anthropic ? anthropic_usage(FieldSource{reader}) : openai_usage(FieldSource{reader});
}

}  // namespace spendcap
