// The management API's logic (SPEC section 7): routing, body validation and
// the JSON of every answer, without NGINX or Redis.
//
// Choices the header leaves open:
// - Paths are matched as given (NGINX has already percent-decoded the URI);
//   one leading and one trailing "/" are optional. "/keys/self..." never
//   names a key whose id is "self": /keys/self/rotate and /keys/self/limits
//   are 404, and a key cannot be created with the id "self".
// - Queries are percent-decoded ('+' stays a '+': no id may hold a space, so
//   nothing needs it as one). A parameter the call does not take, one given
//   twice or a malformed escape is 400, for every call. keys_list takes
//   exactly one of project= and org=; events_get takes after= (a stream id
//   "MS-SEQ") and count= (1..1000), and its Route always holds "count",
//   normalized ("100" when not given).
// - Bodies: JSON null stands for "absent" only where the policy file takes an
//   empty value too (`limits`); elsewhere a null is a wrong type. Counts are
//   JSON integers; amounts are strings or numbers, a number read from its own
//   text in the body (jansson would give a double), never through a double.
// - render_events: an event field whose name is already taken in its object
//   (the stream entry's own "id": a warning event's `id` names the capped
//   scope) is written as "data_" + name, as the webhook body keeps fields
//   under "data".
// - Answers are built by hand, in the documented field order, every string
//   escaped, invalid UTF-8 (an id from a path or a Redis field is only
//   bytes) written as U+FFFD.
#include "admin/api.h"

#include "http/envelope.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cstdio>
#include <initializer_list>
#include <limits>
#include <map>
#include <memory>
#include <new>
#include <stdexcept>
#include <utility>

namespace spendcap::admin {

namespace {

struct JsonDeleter {
    void operator()(json_t *value) const { json_decref(value); }
};
using JsonPtr = std::unique_ptr<json_t, JsonDeleter>;

std::string quoted(std::string_view name) { return "`" + std::string(name) + "`"; }

constexpr std::int64_t kMaxGraceSeconds = 30 * 86400;
constexpr std::size_t kMaxNameBytes = 256;
constexpr std::size_t kMaxIdempotencyKeyBytes = 128;
constexpr std::int64_t kDefaultEventCount = 100;
constexpr std::int64_t kMaxEventCount = 1000;
// Amounts a client wrote are quoted back in messages only when short.
constexpr std::size_t kMaxQuotedAmount = 40;

// ---------------------------------------------------------------- JSON out


// One JSON object, its members appended in the order they are written.
class ObjectWriter {
public:
    ObjectWriter &string(std::string_view name, std::string_view value) {
        key(name);
        append_json_string(out_, value);
        return *this;
    }
    // "" is written as null.
    ObjectWriter &string_or_null(std::string_view name, std::string_view value) {
        return value.empty() ? null(name) : string(name, value);
    }
    ObjectWriter &integer(std::string_view name, std::int64_t value) {
        key(name);
        out_ += std::to_string(value);
        return *this;
    }
    ObjectWriter &integer(std::string_view name, const std::optional<std::int64_t> &value) {
        return value ? integer(name, *value) : null(name);
    }
    ObjectWriter &boolean(std::string_view name, bool value) {
        key(name);
        out_ += value ? "true" : "false";
        return *this;
    }
    ObjectWriter &null(std::string_view name) {
        key(name);
        out_ += "null";
        return *this;
    }
    // `json` is already JSON text (a nested object or array).
    ObjectWriter &raw(std::string_view name, std::string_view json) {
        key(name);
        out_ += json;
        return *this;
    }
    // Every amount twice: NAME_nanousd (integer) and NAME_usd (exact decimal).
    ObjectWriter &amount(std::string_view name, const std::optional<Nanos> &nanos) {
        const std::string base(name);
        if (!nanos) return null(base + "_nanousd").null(base + "_usd");
        return integer(base + "_nanousd", *nanos).string(base + "_usd", format_usd(*nanos));
    }
    // RFC 3339, or null.
    ObjectWriter &time(std::string_view name, const std::optional<std::int64_t> &unix_seconds) {
        return unix_seconds ? string(name, format_rfc3339(*unix_seconds)) : null(name);
    }
    // A reset time where 0 means none.
    ObjectWriter &reset_time(std::string_view name, std::int64_t unix_seconds) {
        return unix_seconds != 0 ? string(name, format_rfc3339(unix_seconds)) : null(name);
    }
    std::string done() {
        out_ += '}';
        return std::move(out_);
    }

private:
    void key(std::string_view name) {
        if (!first_) out_ += ',';
        first_ = false;
        append_json_string(out_, name);
        out_ += ':';
    }

    std::string out_ = "{";
    bool first_ = true;
};

std::string json_array(const std::vector<std::string> &elements) {
    std::string out = "[";
    for (std::size_t i = 0; i < elements.size(); ++i) {
        if (i) out += ',';
        out += elements[i];
    }
    out += ']';
    return out;
}

Nanos remaining_of(Nanos cap, Nanos spent) { return std::max<Nanos>(saturating_sub(cap, spent), 0); }

// ---------------------------------------------------------------- JSON in

// The members a number sits under, from the root ({"limits", "rpm"}).
using Path = std::vector<std::string>;

// The text of every number held by objects only (no array on the way), by
// its path. jansson gives a real as a double, which cannot say 0.1 exactly;
// this is the number as the client wrote it. Runs on a body jansson has
// accepted (duplicates refused), so each path names one number.
class NumberTexts {
public:
    void scan(std::string_view json) {
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

    std::optional<std::string_view> find(const Path &path) const {
        auto found = texts_.find(path);
        if (found == texts_.end()) return std::nullopt;
        return found->second;
    }

private:
    // A key as jansson decoded it ("monthly\u005fusd" is monthly_usd).
    static std::string decode_key(std::string_view literal) {
        if (literal.find('\\') == std::string_view::npos)
            return std::string(literal.substr(1, literal.size() >= 2 ? literal.size() - 2 : 0));
        json_error_t error;
        JsonPtr decoded(json_loadb(literal.data(), literal.size(), JSON_DECODE_ANY, &error));
        if (!decoded || !json_is_string(decoded.get())) return std::string(literal);
        return std::string(json_string_value(decoded.get()), json_string_length(decoded.get()));
    }

    std::map<Path, std::string_view> texts_;
};

struct Body {
    JsonPtr root;
    NumberTexts numbers;
};

bool fail(ApiError &error, std::string message) {
    error = invalid_request(std::move(message));
    return false;
}

bool is_blank(std::string_view text) {
    return text.find_first_not_of(" \t\r\n") == std::string_view::npos;
}

// Parses `text` strictly into a JSON object. `empty_is_object`: a blank
// body reads as {} (a POST without a body).
bool load_object(std::string_view text, Body &body, ApiError &error, bool empty_is_object = false) {
    if (empty_is_object && is_blank(text)) {
        body.root.reset(json_object());
        if (!body.root) throw std::bad_alloc();
        return true;
    }
    json_error_t json_error;
    body.root.reset(json_loadb(text.data(), text.size(), JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &json_error));
    if (!body.root)
        return fail(error, "request body is not valid JSON: " + std::string(json_error.text) + " at line " +
                               std::to_string(json_error.line) + " column " + std::to_string(json_error.column));
    if (!json_is_object(body.root.get())) return fail(error, "request body must be a JSON object");
    body.numbers.scan(text);
    return true;
}

// Reads the members of one object of a body, each error naming the member
// by its path ("`limits.rpm`").
class ObjectReader {
public:
    ObjectReader(json_t *object, const NumberTexts &numbers, Path path, ApiError &error)
        : object_(object), numbers_(numbers), path_(std::move(path)), error_(error) {}

    // Refuses members other than `known`.
    bool only(std::initializer_list<std::string_view> known) {
        const char *name;
        json_t *value;
        json_object_foreach(object_, name, value) {
            (void)value;
            if (std::find(known.begin(), known.end(), std::string_view(name)) == known.end())
                return fail(error_, "unknown field " + label(name));
        }
        return true;
    }

    // The member, or nullptr when it is absent.
    json_t *get(const char *name) const { return json_object_get(object_, name); }
    bool has(const char *name) const { return get(name) != nullptr; }

    std::string label(std::string_view name) const {
        std::string dotted;
        for (const std::string &part : path_) dotted += part + ".";
        return quoted(dotted + std::string(name));
    }

    bool required(const char *name) {
        return has(name) || fail(error_, label(name) + " is required");
    }

    bool string(const char *name, std::optional<std::string> &out) {
        json_t *value = get(name);
        if (!value) return true;
        if (!json_is_string(value)) return fail(error_, label(name) + " must be a string");
        out.emplace(json_string_value(value), json_string_length(value));
        return true;
    }

    bool id(const char *name, std::optional<std::string> &out) {
        if (!string(name, out)) return false;
        if (out && !valid_id(*out)) return fail(error_, label(name) + " " + kIdRule);
        return true;
    }

    bool count(const char *name, std::optional<std::int64_t> &out) {
        json_t *value = get(name);
        if (!value) return true;
        if (!json_is_integer(value) || json_integer_value(value) < 0)
            return fail(error_, label(name) + " must be a non-negative integer");
        out = json_integer_value(value);
        return true;
    }

    bool boolean(const char *name, bool &out) {
        json_t *value = get(name);
        if (!value) return true;
        if (!json_is_boolean(value)) return fail(error_, label(name) + " must be true or false");
        out = json_is_true(value);
        return true;
    }

    bool time(const char *name, std::optional<std::int64_t> &out) {
        json_t *value = get(name);
        if (!value) return true;
        std::int64_t when = 0;
        if (!json_is_string(value) ||
            !parse_rfc3339(std::string_view(json_string_value(value), json_string_length(value)), when))
            return fail(error_, label(name) + " must be an RFC 3339 time such as \"2027-01-01T00:00:00Z\"");
        out = when;
        return true;
    }

    // A decimal USD amount, string or number, parsed exactly as the file's.
    bool amount(const char *name, std::optional<Nanos> &out) {
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
            if (!written) return fail(error_, rule);  // cannot happen for a body jansson accepted
            text = *written;
        } else {
            return fail(error_, rule + ", a string or number such as \"10.50\"");
        }
        Nanos nanos = 0;
        std::string reason;
        if (!parse_usd(text, nanos, reason)) {
            std::string message = rule + " such as \"10.50\": " + reason;
            if (text.size() <= kMaxQuotedAmount) message += " (got \"" + std::string(text) + "\")";
            return fail(error_, message);
        }
        out = nanos;
        return true;
    }

    // A LIMITS object (or null: none), as the file's `limits`.
    bool limits(const char *name, Limits &out) {
        json_t *value = get(name);
        if (!value || json_is_null(value)) return true;
        if (!json_is_object(value)) return fail(error_, label(name) + " must be an object of limits");
        Path path = path_;
        path.emplace_back(name);
        return read_limits(value, numbers_, std::move(path), error_, out);
    }

    static bool read_limits(json_t *object, const NumberTexts &numbers, Path path, ApiError &error,
                            Limits &out) {
        ObjectReader reader(object, numbers, std::move(path), error);
        Limits limits;
        const bool ok = reader.only({"daily_usd", "monthly_usd", "lifetime_usd", "daily_requests",
                                     "monthly_requests", "daily_tokens", "monthly_tokens", "rpm", "tpm"}) &&
                        reader.amount("daily_usd", limits.daily_usd) &&
                        reader.amount("monthly_usd", limits.monthly_usd) &&
                        reader.amount("lifetime_usd", limits.lifetime_usd) &&
                        reader.count("daily_requests", limits.daily_requests) &&
                        reader.count("monthly_requests", limits.monthly_requests) &&
                        reader.count("daily_tokens", limits.daily_tokens) &&
                        reader.count("monthly_tokens", limits.monthly_tokens) &&
                        reader.count("rpm", limits.rpm) && reader.count("tpm", limits.tpm);
        if (ok) out = limits;
        return ok;
    }

private:
    json_t *object_;
    const NumberTexts &numbers_;
    Path path_;
    ApiError &error_;
};

// ---------------------------------------------------------------- routing

std::string percent_decode(std::string_view text, bool &ok) {
    auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    };
    std::string out;
    out.reserve(text.size());
    ok = true;
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (text[i] != '%') {
            out += text[i];
            continue;
        }
        const int high = i + 2 < text.size() ? hex(text[i + 1]) : -1;
        const int low = i + 2 < text.size() ? hex(text[i + 2]) : -1;
        if (high < 0 || low < 0) {
            ok = false;
            return out;
        }
        out += static_cast<char>(high * 16 + low);
        i += 2;
    }
    return out;
}

std::vector<std::string_view> split(std::string_view text, char separator) {
    std::vector<std::string_view> parts;
    std::size_t start = 0;
    while (true) {
        const std::size_t end = text.find(separator, start);
        parts.push_back(text.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
        if (end == std::string_view::npos) return parts;
        start = end + 1;
    }
}

// What a path allows: each method and the call it makes.
struct PathMethods {
    std::vector<std::pair<const char *, Call>> methods;  // in Allow order
};

// The path's calls by shape: "keys", "keys/self/usage", "keys/:/limits",
// "orgs/:/customers/:/usage" (':' for an id: no id holds one).
const std::map<std::string, PathMethods> &path_table() {
    static const std::map<std::string, PathMethods> table = {
        {"keys", {{{"GET", Call::keys_list}, {"POST", Call::key_create}}}},
        {"keys/self", {{{"GET", Call::self_get}}}},
        {"keys/self/usage", {{{"GET", Call::self_usage}}}},
        {"keys/self/budgets", {{{"GET", Call::self_budgets}}}},
        {"keys/:", {{{"GET", Call::key_get}, {"DELETE", Call::key_revoke}}}},
        {"keys/:/rotate", {{{"POST", Call::key_rotate}}}},
        {"keys/:/limits", {{{"PUT", Call::key_limits_put}, {"DELETE", Call::key_limits_delete}}}},
        {"keys/:/usage", {{{"GET", Call::key_usage}}}},
        {"keys/:/budgets", {{{"GET", Call::key_budgets}}}},
        {"projects/:", {{{"GET", Call::project_get}, {"PUT", Call::project_put}}}},
        {"projects/:/usage", {{{"GET", Call::project_usage}}}},
        {"projects/:/limits", {{{"PUT", Call::project_limits_put}, {"DELETE", Call::project_limits_delete}}}},
        {"orgs/:", {{{"GET", Call::org_get}, {"PUT", Call::org_put}}}},
        {"orgs/:/usage", {{{"GET", Call::org_usage}}}},
        {"orgs/:/limits", {{{"PUT", Call::org_limits_put}, {"DELETE", Call::org_limits_delete}}}},
        {"orgs/:/balance", {{{"GET", Call::balance_get}}}},
        {"orgs/:/topups", {{{"POST", Call::topup}}}},
        {"orgs/:/cleared", {{{"PUT", Call::cleared_put}}}},
        {"orgs/:/events", {{{"GET", Call::events_get}}}},
        {"orgs/:/customers/:/usage", {{{"GET", Call::customer_usage}}}},
        {"orgs/:/customers/:/limits",
         {{{"PUT", Call::customer_limits_put}, {"DELETE", Call::customer_limits_delete}}}},
    };
    return table;
}

Routed route_error(ApiError error) {
    Routed routed;
    routed.error = std::move(error);
    return routed;
}

bool valid_stream_id(std::string_view id) {
    const std::size_t dash = id.find('-');
    if (dash == std::string_view::npos) return false;
    for (std::string_view part : {id.substr(0, dash), id.substr(dash + 1)}) {
        if (part.empty() || part.size() > 20) return false;
        std::uint64_t value = 0;
        for (char c : part) {
            if (c < '0' || c > '9') return false;
            const std::uint64_t digit = static_cast<std::uint64_t>(c - '0');
            if (value > (std::numeric_limits<std::uint64_t>::max() - digit) / 10) return false;
            value = value * 10 + digit;
        }
    }
    return true;
}

// Checks the query against what the call takes.
bool check_query(Route &route, ApiError &error) {
    auto &query = route.query;
    auto refuse_others = [&](std::initializer_list<std::string_view> taken) {
        for (const auto &[name, value] : query) {
            (void)value;
            if (std::find(taken.begin(), taken.end(), name) == taken.end())
                return fail(error, "unknown query parameter " + quoted(name));
        }
        return true;
    };
    switch (route.call) {
    case Call::keys_list: {
        if (!refuse_others({"project", "org"})) return false;
        const bool by_project = query.count("project") != 0, by_org = query.count("org") != 0;
        if (by_project == by_org)
            return fail(error, by_project ? "give one of `project` and `org`, not both"
                                          : "`project` or `org` is required (exactly one)");
        const char *name = by_project ? "project" : "org";
        if (!valid_id(query.at(name))) return fail(error, quoted(name) + " " + kIdRule);
        return true;
    }
    case Call::events_get: {
        if (!refuse_others({"after", "count"})) return false;
        auto after = query.find("after");
        if (after != query.end() && !valid_stream_id(after->second))
            return fail(error, "`after` must be an event id such as \"1700000000000-0\"");
        std::int64_t count = kDefaultEventCount;
        auto given = query.find("count");
        if (given != query.end()) {
            count = 0;
            const std::string &text = given->second;
            bool ok = !text.empty() && text.size() <= 7;
            for (char c : text) {
                if (c < '0' || c > '9') ok = false;
                if (ok) count = count * 10 + (c - '0');
            }
            if (!ok || count < 1 || count > kMaxEventCount)
                return fail(error, "`count` must be an integer from 1 to " + std::to_string(kMaxEventCount));
        }
        query["count"] = std::to_string(count);
        return true;
    }
    default:
        return refuse_others({});
    }
}

bool parse_query(std::string_view query, std::map<std::string, std::string> &out, ApiError &error) {
    if (query.empty()) return true;
    for (std::string_view pair : split(query, '&')) {
        if (pair.empty()) continue;  // "a=1&&b=2"
        const std::size_t equals = pair.find('=');
        bool name_ok = false, value_ok = true;
        std::string name = percent_decode(pair.substr(0, equals), name_ok);
        std::string value;
        if (equals != std::string_view::npos) value = percent_decode(pair.substr(equals + 1), value_ok);
        if (!name_ok || !value_ok) return fail(error, "the query string has a malformed percent escape");
        if (!out.emplace(std::move(name), std::move(value)).second)
            return fail(error, "query parameter " + quoted(pair.substr(0, equals)) + " is given twice");
    }
    return true;
}

// ---------------------------------------------------------------- randomness

// `count` base62 characters, each equally likely: a byte of 248 or more
// (248 = 4 * 62) is drawn again instead of wrapping the alphabet.
std::string random_base62(std::size_t count) {
    static const char kAlphabet[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    std::string out;
    out.reserve(count);
    unsigned char buffer[64];
    while (out.size() < count) {
        if (RAND_bytes(buffer, sizeof buffer) != 1) {
            OPENSSL_cleanse(buffer, sizeof buffer);
            throw std::runtime_error("the system's random source failed");
        }
        for (unsigned char byte : buffer) {
            if (byte >= 248) continue;
            out += kAlphabet[byte % 62];
            if (out.size() == count) break;
        }
    }
    OPENSSL_cleanse(buffer, sizeof buffer);
    return out;
}

// ---------------------------------------------------------------- rendering

std::string key_object(const KeyView &key, const std::string &secret) {
    ObjectWriter object;
    object.string("id", key.id)
        .string_or_null("name", key.name)
        .string("project", key.project)
        .string("org", key.org)
        .raw("limits", limits_json(key.limits))
        .time("expires_at", key.expires_at)
        .boolean("revoked", key.revoked)
        .time("created_at", key.created_at)
        .string("source", key.from_file ? "file" : "api");
    if (!secret.empty()) object.string("secret", secret);
    return object.done();
}

std::string window_object(const WindowUsage &w) {
    const bool lifetime = w.window == Window::lifetime;
    ObjectWriter object;
    object.string("window", window_name(w.window));
    if (lifetime)
        object.null("period").null("reset_at");
    else
        object.string_or_null("period", w.period).reset_time("reset_at", w.reset_at);
    object.amount("spent", w.spent)
        .amount("cap", w.cap)
        .amount("remaining", w.cap ? std::optional<Nanos>(remaining_of(*w.cap, w.spent)) : std::nullopt)
        // No lifetime counter of requests or tokens is kept (SPEC section 6): null, not 0.
        .integer("requests", lifetime ? std::nullopt : std::optional<std::int64_t>(w.requests))
        .integer("requests_cap", lifetime ? std::nullopt : w.requests_cap)
        .integer("tokens", lifetime ? std::nullopt : std::optional<std::int64_t>(w.tokens))
        .integer("tokens_cap", lifetime ? std::nullopt : w.tokens_cap);
    return object.done();
}

std::string rate_object(const RateUsage &rate) {
    if (!rate.cap) return "null";
    return ObjectWriter()
        .integer("used", rate.used)
        .integer("cap", *rate.cap)
        .reset_time("reset_at", rate.reset_at)
        .done();
}

}  // namespace

// ---------------------------------------------------------------- calls

const char *call_name(Call c) {
    switch (c) {
    case Call::key_create: return "key_create";
    case Call::keys_list: return "keys_list";
    case Call::key_get: return "key_get";
    case Call::key_revoke: return "key_revoke";
    case Call::key_rotate: return "key_rotate";
    case Call::key_limits_put: return "key_limits_put";
    case Call::key_limits_delete: return "key_limits_delete";
    case Call::key_usage: return "key_usage";
    case Call::key_budgets: return "key_budgets";
    case Call::self_get: return "self_get";
    case Call::self_usage: return "self_usage";
    case Call::self_budgets: return "self_budgets";
    case Call::project_put: return "project_put";
    case Call::project_get: return "project_get";
    case Call::project_usage: return "project_usage";
    case Call::project_limits_put: return "project_limits_put";
    case Call::project_limits_delete: return "project_limits_delete";
    case Call::org_put: return "org_put";
    case Call::org_get: return "org_get";
    case Call::org_usage: return "org_usage";
    case Call::org_limits_put: return "org_limits_put";
    case Call::org_limits_delete: return "org_limits_delete";
    case Call::customer_usage: return "customer_usage";
    case Call::customer_limits_put: return "customer_limits_put";
    case Call::customer_limits_delete: return "customer_limits_delete";
    case Call::balance_get: return "balance_get";
    case Call::topup: return "topup";
    case Call::cleared_put: return "cleared_put";
    case Call::events_get: return "events_get";
    }
    return "unknown";
}

bool is_self_call(Call c) { return c == Call::self_get || c == Call::self_usage || c == Call::self_budgets; }

bool is_change(Call c) {
    switch (c) {
    case Call::key_create:
    case Call::key_revoke:
    case Call::key_rotate:
    case Call::key_limits_put:
    case Call::key_limits_delete:
    case Call::project_put:
    case Call::project_limits_put:
    case Call::project_limits_delete:
    case Call::org_put:
    case Call::org_limits_put:
    case Call::org_limits_delete:
    case Call::customer_limits_put:
    case Call::customer_limits_delete:
    case Call::topup:
    case Call::cleared_put: return true;
    default: return false;
    }
}

// ---------------------------------------------------------------- errors

ApiError invalid_request(std::string message) { return ApiError{400, "invalid_request", std::move(message), ""}; }
ApiError unauthorized() { return ApiError{401, "unauthorized", "missing or wrong admin token", ""}; }
ApiError not_found(std::string message) { return ApiError{404, "not_found", std::move(message), ""}; }
ApiError conflict(std::string message) { return ApiError{409, "conflict", std::move(message), ""}; }
ApiError unavailable() { return ApiError{503, "unavailable", "redis is unavailable or too slow", ""}; }

std::string render_error(const ApiError &e) {
    const std::string inner = ObjectWriter().string("code", e.code).string("message", e.message).done();
    return ObjectWriter().raw("error", inner).done();
}

// ---------------------------------------------------------------- route

Routed route(std::string_view method, std::string_view path, std::string_view query) {
    std::string_view trimmed = path;
    if (!trimmed.empty() && trimmed.front() == '/') trimmed.remove_prefix(1);
    if (!trimmed.empty() && trimmed.back() == '/') trimmed.remove_suffix(1);
    const std::string shown = "/" + std::string(trimmed);
    const std::vector<std::string_view> segments = split(trimmed, '/');

    // The shape of the path: ids become ':' ("keys/self" stays itself).
    Route found;
    std::string shape;
    std::vector<std::string_view> ids;
    for (std::size_t i = 0; i < segments.size(); ++i) {
        const bool id_position = i == 1 || (i == 3 && segments[0] == "orgs" && segments[2] == "customers");
        const bool self = i == 1 && segments[0] == "keys" && segments[1] == "self";
        if (i) shape += '/';
        if (id_position && !self) {
            shape += ':';
            ids.push_back(segments[i]);
        } else {
            shape += segments[i];
        }
    }
    const auto &table = path_table();
    auto entry = table.find(shape);
    if (entry == table.end()) return route_error(not_found("no API call at " + quoted(shown)));
    for (std::string_view id : ids)
        if (!valid_id(id)) return route_error(not_found("no such resource: " + quoted(id) + " is not a valid id"));

    const PathMethods &allowed = entry->second;
    // HEAD is GET without the body (NGINX sends the headers only).
    const std::string_view as = method == "HEAD" ? std::string_view("GET") : method;
    auto call = std::find_if(allowed.methods.begin(), allowed.methods.end(),
                             [&](const auto &m) { return as == m.first; });
    if (call == allowed.methods.end()) {
        ApiError error{405, "method_not_allowed", "", ""};
        for (const auto &m : allowed.methods) error.allow += (error.allow.empty() ? "" : ", ") + std::string(m.first);
        error.message = "method " + std::string(method) + " is not allowed on " + quoted(shown) + " (allowed: " +
                        error.allow + ")";
        return route_error(std::move(error));
    }
    found.call = call->second;
    if (!ids.empty()) found.id = std::string(ids[0]);
    if (ids.size() > 1) found.customer = std::string(ids[1]);

    ApiError error;
    if (!parse_query(query, found.query, error) || !check_query(found, error)) return route_error(std::move(error));
    Routed routed;
    routed.route = std::move(found);
    return routed;
}

bool token_matches(std::string_view expected, std::string_view presented) {
    // Every byte of the longer one is read whatever the content; only the
    // lengths decide how many.
    const std::size_t longest = std::max(expected.size(), presented.size());
    unsigned difference = expected.size() != presented.size() ? 1u : 0u;
    for (std::size_t i = 0; i < longest; ++i) {
        const unsigned char a = i < expected.size() ? static_cast<unsigned char>(expected[i]) : 0;
        const unsigned char b = i < presented.size() ? static_cast<unsigned char>(presented[i]) : 0;
        difference |= static_cast<unsigned>(a ^ b);
    }
    // An empty token would let an empty bearer in; config load refuses one, and so does this.
    return difference == 0 && !expected.empty();
}

// ---------------------------------------------------------------- bodies

std::optional<KeyCreate> parse_key_create(std::string_view text, ApiError &error) {
    Body body;
    if (!load_object(text, body, error)) return std::nullopt;
    ObjectReader reader(body.root.get(), body.numbers, {}, error);
    KeyCreate create;
    std::optional<std::string> project, id, name;
    if (!reader.only({"project", "id", "name", "limits", "expires_at"}) || !reader.required("project") ||
        !reader.id("project", project) || !reader.id("id", id) || !reader.string("name", name) ||
        !reader.limits("limits", create.limits) || !reader.time("expires_at", create.expires_at))
        return std::nullopt;
    // /keys/self is the caller's own key: a key named so could not be reached.
    if (id && *id == "self") {
        fail(error, "`id` must not be `self`, which /keys/self keeps for the caller's own key");
        return std::nullopt;
    }
    if (name && name->size() > kMaxNameBytes) {
        fail(error, "`name` must be at most " + std::to_string(kMaxNameBytes) + " bytes");
        return std::nullopt;
    }
    create.project = std::move(*project);
    create.id = std::move(id);
    create.name = name ? std::move(*name) : std::string();
    return create;
}

std::optional<Rotate> parse_rotate(std::string_view text, ApiError &error) {
    Body body;
    if (!load_object(text, body, error, true)) return std::nullopt;
    ObjectReader reader(body.root.get(), body.numbers, {}, error);
    std::optional<std::int64_t> grace;
    if (!reader.only({"grace_seconds"})) return std::nullopt;
    if (!reader.count("grace_seconds", grace) || (grace && *grace > kMaxGraceSeconds)) {
        fail(error, "`grace_seconds` must be an integer from 0 to " + std::to_string(kMaxGraceSeconds) +
                        " (30 days)");
        return std::nullopt;
    }
    Rotate rotate;
    rotate.grace_seconds = grace.value_or(0);
    return rotate;
}

std::optional<Limits> parse_limits(std::string_view text, ApiError &error) {
    Body body;
    if (!load_object(text, body, error)) return std::nullopt;
    Limits limits;
    if (!ObjectReader::read_limits(body.root.get(), body.numbers, {}, error, limits)) return std::nullopt;
    return limits;
}

std::optional<ProjectPut> parse_project_put(std::string_view text, ApiError &error) {
    Body body;
    if (!load_object(text, body, error)) return std::nullopt;
    ObjectReader reader(body.root.get(), body.numbers, {}, error);
    ProjectPut put;
    std::optional<std::string> org;
    if (!reader.only({"org", "limits"}) || !reader.required("org") || !reader.id("org", org) ||
        !reader.limits("limits", put.limits))
        return std::nullopt;
    put.org = std::move(*org);
    return put;
}

std::optional<OrgPut> parse_org_put(std::string_view text, const Policy &policy, ApiError &error) {
    Body body;
    if (!load_object(text, body, error)) return std::nullopt;
    ObjectReader reader(body.root.get(), body.numbers, {}, error);
    OrgPut put;
    std::optional<std::string> plan;
    if (!reader.only({"plan", "created_at", "prepaid", "low_balance_usd", "limits"}) ||
        !reader.string("plan", plan) || !reader.time("created_at", put.created_at) ||
        !reader.boolean("prepaid", put.prepaid) || !reader.amount("low_balance_usd", put.low_balance_usd) ||
        !reader.limits("limits", put.limits))
        return std::nullopt;
    // The same cross-field rules as an org of the file.
    if (plan) {
        auto found = policy.plans.find(*plan);
        if (found == policy.plans.end()) {
            fail(error, "`plan` names plan " + quoted(*plan) + ", which is not defined in the policy file's `plans`");
            return std::nullopt;
        }
        // The ceilings' age_days are counted from created_at.
        if (!found->second.ceilings.empty() && !put.limits.monthly_usd && !put.created_at) {
            fail(error, "`created_at` is required with plan " + quoted(*plan) +
                            ", whose monthly ceiling rises with account age (or give `limits.monthly_usd`)");
            return std::nullopt;
        }
        put.plan = std::move(*plan);
    }
    // Without a balance there is nothing for the threshold to watch.
    if (put.low_balance_usd && !put.prepaid) {
        fail(error, "`low_balance_usd` needs `\"prepaid\": true`");
        return std::nullopt;
    }
    return put;
}

std::optional<Topup> parse_topup(std::string_view text, ApiError &error) {
    Body body;
    if (!load_object(text, body, error)) return std::nullopt;
    ObjectReader reader(body.root.get(), body.numbers, {}, error);
    std::optional<Nanos> amount;
    std::optional<std::string> key;
    if (!reader.only({"amount_usd", "idempotency_key"}) || !reader.required("amount_usd") ||
        !reader.amount("amount_usd", amount) || !reader.required("idempotency_key") ||
        !reader.string("idempotency_key", key))
        return std::nullopt;
    if (*amount <= 0) {
        fail(error, "`amount_usd` must be more than 0");
        return std::nullopt;
    }
    // It becomes part of a Redis key and is echoed in answers.
    const bool printable = std::all_of(key->begin(), key->end(), [](char c) { return c >= 0x20 && c < 0x7f; });
    if (key->empty() || key->size() > kMaxIdempotencyKeyBytes || !printable) {
        fail(error, "`idempotency_key` must be 1 to " + std::to_string(kMaxIdempotencyKeyBytes) +
                        " printable ASCII characters");
        return std::nullopt;
    }
    Topup topup;
    topup.amount = *amount;
    topup.idempotency_key = std::move(*key);
    return topup;
}

std::optional<Nanos> parse_cleared(std::string_view text, ApiError &error) {
    Body body;
    if (!load_object(text, body, error)) return std::nullopt;
    ObjectReader reader(body.root.get(), body.numbers, {}, error);
    std::optional<Nanos> cleared;
    if (!reader.only({"cleared_usd"}) || !reader.required("cleared_usd") || !reader.amount("cleared_usd", cleared))
        return std::nullopt;
    return cleared;
}

// ---------------------------------------------------------------- answers

std::string limits_json(const Limits &limits) {
    ObjectWriter object;
    // In the order of Limits, which is the order the SPEC lists them in.
    using Amount = std::pair<const char *, std::optional<Nanos> Limits::*>;
    using Count = std::pair<const char *, std::optional<std::int64_t> Limits::*>;
    for (const Amount &amount : {Amount{"daily_usd", &Limits::daily_usd}, Amount{"monthly_usd", &Limits::monthly_usd},
                                 Amount{"lifetime_usd", &Limits::lifetime_usd}})
        if (limits.*amount.second) object.string(amount.first, format_usd(*(limits.*amount.second)));
    for (const Count &count : {Count{"daily_requests", &Limits::daily_requests},
                               Count{"monthly_requests", &Limits::monthly_requests},
                               Count{"daily_tokens", &Limits::daily_tokens},
                               Count{"monthly_tokens", &Limits::monthly_tokens}, Count{"rpm", &Limits::rpm},
                               Count{"tpm", &Limits::tpm}})
        if (limits.*count.second) object.integer(count.first, *(limits.*count.second));
    return object.done();
}

std::string new_secret() { return "sk-sc-" + random_base62(43); }
std::string new_key_id() { return "key_" + random_base62(16); }

std::string render_key(const KeyView &key, const std::string &secret) { return key_object(key, secret); }

std::string render_keys(const std::vector<KeyView> &keys) {
    std::vector<std::string> objects;
    objects.reserve(keys.size());
    for (const KeyView &key : keys) objects.push_back(key_object(key, ""));
    return ObjectWriter().raw("keys", json_array(objects)).done();
}

std::string render_project(const ProjectView &project) {
    return ObjectWriter()
        .string("id", project.id)
        .string("org", project.org)
        .raw("limits", limits_json(project.limits))
        .string("source", project.from_file ? "file" : "api")
        .done();
}

std::string render_org(const OrgView &org) {
    return ObjectWriter()
        .string("id", org.id)
        .string_or_null("plan", org.plan)
        .time("created_at", org.created_at)
        .boolean("prepaid", org.prepaid)
        .amount("low_balance", org.low_balance_usd)
        .raw("limits", limits_json(org.limits))
        .amount("cleared", org.cleared)
        .string("source", org.from_file ? "file" : "api")
        .done();
}

std::string render_usage(const UsageView &usage) {
    std::vector<std::string> windows;
    windows.reserve(usage.windows.size());
    for (const WindowUsage &w : usage.windows) windows.push_back(window_object(w));
    return ObjectWriter()
        .string("scope", scope_name(usage.scope))
        .string("id", usage.id)
        .string("org", usage.org)
        .raw("windows", json_array(windows))
        .raw("rates", ObjectWriter().raw("rpm", rate_object(usage.rpm)).raw("tpm", rate_object(usage.tpm)).done())
        .done();
}

std::string render_budgets(const std::string &key_id, const std::vector<Layer> &layers) {
    std::size_t binding = 0;  // the first with the least remaining
    for (std::size_t i = 1; i < layers.size(); ++i)
        if (layers[i].remaining < layers[binding].remaining) binding = i;
    std::vector<std::string> objects;
    objects.reserve(layers.size());
    for (std::size_t i = 0; i < layers.size(); ++i) {
        const Layer &layer = layers[i];
        objects.push_back(ObjectWriter()
                              .string("scope", scope_name(layer.scope))
                              .string("id", layer.id)
                              .string("window", layer.window)
                              .amount("cap", layer.cap)
                              .amount("spent", layer.spent)
                              .amount("remaining", layer.remaining)
                              .reset_time("reset_at", layer.reset_at)
                              .boolean("binding", i == binding)
                              .done());
    }
    return ObjectWriter().string("key", key_id).raw("budgets", json_array(objects)).done();
}

std::string render_balance(const BalanceView &b) {
    return ObjectWriter()
        .string("org", b.org)
        .amount("balance", b.balance)
        .amount("reserved", b.reserved)
        .amount("available", saturating_sub(b.balance, b.reserved))
        .amount("low_balance", b.low_balance)
        .done();
}

std::string render_topup(const std::string &org, const Topup &topup, Nanos balance_after, bool applied) {
    return ObjectWriter()
        .string("org", org)
        .string("idempotency_key", topup.idempotency_key)
        .amount("amount", topup.amount)
        .amount("balance", balance_after)
        .boolean("applied", applied)
        .done();
}

std::string render_events(const std::vector<Event> &events, const std::string &after) {
    std::vector<std::string> objects;
    objects.reserve(events.size());
    for (const Event &event : events) {
        ObjectWriter object;
        object.string("id", event.id);
        std::vector<std::string> taken{"id"};
        for (const auto &[name, value] : event.fields) {
            std::string written = name;
            while (std::find(taken.begin(), taken.end(), written) != taken.end()) written = "data_" + written;
            object.string(written, value);
            taken.push_back(std::move(written));
        }
        objects.push_back(object.done());
    }
    ObjectWriter answer;
    answer.raw("events", json_array(objects));
    if (!events.empty())
        answer.string("next", events.back().id);
    else
        answer.string_or_null("next", after);
    return answer.done();
}

}  // namespace spendcap::admin
