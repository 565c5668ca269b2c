// A JSON object read member by member, each error a message naming the member.
#include "json/object_reader.h"

#include <algorithm>
#include <new>
#include <utility>

#include "base/periods.h"

namespace spendcap::json {

namespace {

// Amounts a client wrote are quoted back in messages only when short.
constexpr std::size_t kMaxQuotedAmount = 40;

std::string quoted(std::string_view name) { return "`" + std::string(name) + "`"; }

bool is_blank(std::string_view text) {
    return text.find_first_not_of(" \t\r\n") == std::string_view::npos;
}

}  // namespace

// ---------------------------------------------------------------- number texts

void NumberTexts::scan(std::string_view json) {
    struct Frame {
        bool object = false;
        bool expecting_key = false;
        std::string key;
    };
    std::vector<Frame> frames;
    std::size_t arrays = 0;  // open arrays: numbers under them are not kept
    const std::size_t n = json.size();
    std::size_t i = 0;
    while (i < n) {
        const char c = json[i];
        if (c == '{' || c == '[') {
            frames.push_back(Frame{c == '{', c == '{', {}});
            if (c == '[') ++arrays;
            ++i;
        } else if (c == '}' || c == ']') {
            if (!frames.empty()) {
                if (!frames.back().object) --arrays;
                frames.pop_back();
            }
            ++i;
        } else if (c == ',') {
            if (!frames.empty() && frames.back().object) frames.back().expecting_key = true;
            ++i;
        } else if (c == '"') {
            const std::size_t start = i++;
            while (i < n && json[i] != '"') i += json[i] == '\\' ? 2 : 1;
            ++i;  // the closing quote
            if (!frames.empty() && frames.back().expecting_key) {
                frames.back().key = decode_key(json.substr(start, std::min(i, n) - start));
                frames.back().expecting_key = false;
            }
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            const std::size_t start = i;
            while (i < n && (json[i] == '-' || json[i] == '+' || json[i] == '.' || json[i] == 'e' ||
                             json[i] == 'E' || (json[i] >= '0' && json[i] <= '9')))
                ++i;
            if (arrays == 0 && !frames.empty()) {
                Path path;
                for (const Frame &frame : frames) path.push_back(frame.key);
                texts_[std::move(path)] = json.substr(start, i - start);
            }
        } else {
            ++i;  // whitespace, ':', the letters of true / false / null
        }
    }
}

std::optional<std::string_view> NumberTexts::find(const Path &path) const {
    auto found = texts_.find(path);
    if (found == texts_.end()) return std::nullopt;
    return found->second;
}

std::string NumberTexts::decode_key(std::string_view literal) {
    if (literal.find('\\') == std::string_view::npos)
        return std::string(literal.substr(1, literal.size() >= 2 ? literal.size() - 2 : 0));
    json_error_t error;
    JsonPtr decoded(json_loadb(literal.data(), literal.size(), JSON_DECODE_ANY, &error));
    if (!decoded || !json_is_string(decoded.get())) return std::string(literal);
    return std::string(json_string_value(decoded.get()), json_string_length(decoded.get()));
}

// ---------------------------------------------------------------- loading

bool load_object(std::string_view text, Body &body, std::string &error, bool empty_is_object) {
    if (empty_is_object && is_blank(text)) {
        body.root.reset(json_object());
        if (!body.root) throw std::bad_alloc();
        return true;
    }
    json_error_t json_error;
    body.root.reset(json_loadb(text.data(), text.size(), JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &json_error));
    if (!body.root) {
        error = "request body is not valid JSON: " + std::string(json_error.text) + " at line " +
                std::to_string(json_error.line) + " column " + std::to_string(json_error.column);
        return false;
    }
    if (!json_is_object(body.root.get())) {
        error = "request body must be a JSON object";
        return false;
    }
    body.numbers.scan(text);
    return true;
}

// ---------------------------------------------------------------- members

ObjectReader::ObjectReader(json_t *object, const NumberTexts &numbers, Path path, std::string &error)
    : object_(object), numbers_(numbers), path_(std::move(path)), error_(error) {}

bool ObjectReader::only(std::initializer_list<std::string_view> known) {
    const char *name;
    json_t *value;
    json_object_foreach(object_, name, value) {
        (void)value;
        if (std::find(known.begin(), known.end(), std::string_view(name)) == known.end())
            return fail("unknown field " + label(name));
    }
    return true;
}

std::string ObjectReader::label(std::string_view name) const {
    std::string dotted;
    for (const std::string &part : path_) dotted += part + ".";
    return quoted(dotted + std::string(name));
}

bool ObjectReader::fail(std::string message) {
    error_ = std::move(message);
    return false;
}

bool ObjectReader::required(const char *name) { return has(name) || fail(label(name) + " is required"); }

bool ObjectReader::string(const char *name, std::optional<std::string> &out) {
    json_t *value = get(name);
    if (!value) return true;
    if (!json_is_string(value)) return fail(label(name) + " must be a string");
    out.emplace(json_string_value(value), json_string_length(value));
    return true;
}

bool ObjectReader::count(const char *name, std::optional<std::int64_t> &out) {
    json_t *value = get(name);
    if (!value) return true;
    if (!json_is_integer(value) || json_integer_value(value) < 0)
        return fail(label(name) + " must be a non-negative integer");
    out = json_integer_value(value);
    return true;
}

bool ObjectReader::boolean(const char *name, bool &out) {
    json_t *value = get(name);
    if (!value) return true;
    if (!json_is_boolean(value)) return fail(label(name) + " must be true or false");
    out = json_is_true(value);
    return true;
}

bool ObjectReader::time(const char *name, std::optional<std::int64_t> &out) {
    json_t *value = get(name);
    if (!value) return true;
    std::int64_t when = 0;
    if (!json_is_string(value) ||
        !parse_rfc3339(std::string_view(json_string_value(value), json_string_length(value)), when))
        return fail(label(name) + " must be an RFC 3339 time such as \"2027-01-01T00:00:00Z\"");
    out = when;
    return true;
}

bool ObjectReader::amount(const char *name, std::optional<Nanos> &out) {
    json_t *value = get(name);
    if (!value) return true;
    const std::string rule = label(name) + " must be a non-negative decimal USD amount";
    std::string_view text;
    if (json_is_string(value)) {
        text = std::string_view(json_string_value(value), json_string_length(value));
    } else if (json_is_number(value)) {
        Path path = path_;
        path.emplace_back(name);
        std::optional<std::string_view> written = numbers_.find(path);
        if (!written) return fail(rule);  // cannot happen for a body jansson accepted
        text = *written;
    } else {
        return fail(rule + ", a string or number such as \"10.50\"");
    }
    Nanos nanos = 0;
    std::string reason;
    if (!parse_usd(text, nanos, reason)) {
        std::string message = rule + " such as \"10.50\": " + reason;
        if (text.size() <= kMaxQuotedAmount) message += " (got \"" + std::string(text) + "\")";
        return fail(message);
    }
    out = nanos;
    return true;
}

bool ObjectReader::object_or_null(const char *name, std::string_view what, std::optional<ObjectReader> &out) {
    json_t *value = get(name);
    if (!value || json_is_null(value)) return true;
    if (!json_is_object(value)) return fail(label(name) + " must be " + std::string(what));
    Path path = path_;
    path.emplace_back(name);
    out.emplace(value, numbers_, std::move(path), error_);
    return true;
}

bool ObjectReader::each_object(const char *name, std::string_view what,
                               const std::function<bool(const std::string &member, ObjectReader &reader)> &visit) {
    json_t *value = get(name);
    if (!value || json_is_null(value)) return true;
    if (!json_is_object(value)) return fail(label(name) + " must be " + std::string(what));
    const char *member = nullptr;
    json_t *inner = nullptr;
    json_object_foreach(value, member, inner) {
        Path path = path_;
        path.emplace_back(name);
        path.emplace_back(member);
        if (!json_is_object(inner)) return fail(label(std::string(name) + "." + member) + " must be an object");
        ObjectReader reader(inner, numbers_, std::move(path), error_);
        if (!visit(member, reader)) return false;
    }
    return true;
}

bool ObjectReader::strings(const char *name, std::optional<std::vector<std::string>> &out) {
    json_t *value = get(name);
    if (!value || json_is_null(value)) return true;
    if (!json_is_array(value)) return fail(label(name) + " must be an array of strings");
    std::vector<std::string> items;
    std::size_t index = 0;
    json_t *item = nullptr;
    json_array_foreach(value, index, item) {
        if (!json_is_string(item)) return fail(label(name) + " must be an array of strings");
        items.emplace_back(json_string_value(item), json_string_length(item));
    }
    out = std::move(items);
    return true;
}

}  // namespace spendcap::json
