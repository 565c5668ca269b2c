// Webhook bodies, and their Standard Webhooks signatures (signing.h). The
// signed content is the exact body bytes sent, so the body is built once and
// signed as it is.
#include "relay/webhook.h"

#include <cstdio>
#include <limits>
#include <stdexcept>

#include "base/periods.h"
#include "json/escape.h"
#include "json/writer.h"

namespace spendcap::relay {

namespace {

const std::string *field(const StreamEvent &event, std::string_view name) {
    for (const auto &[key, value] : event.fields)
        if (key == name) return &value;
    return nullptr;
}

bool parse_int64(std::string_view text, std::int64_t &value) {
    const bool negative = !text.empty() && text.front() == '-';
    if (negative) text.remove_prefix(1);
    if (text.empty()) return false;
    std::uint64_t magnitude = 0;
    const std::uint64_t limit = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) + negative;
    for (char c : text) {
        if (c < '0' || c > '9') return false;
        const unsigned digit = static_cast<unsigned>(c - '0');
        if (magnitude > (limit - digit) / 10) return false;
        magnitude = magnitude * 10 + digit;
    }
    value = negative ? static_cast<std::int64_t>(0 - magnitude) : static_cast<std::int64_t>(magnitude);
    return true;
}

bool is_amount_field(std::string_view name) {
    return name == "spent" || name == "cap" || name == "balance" || name == "threshold";
}

constexpr std::string_view kNanousdSuffix = "_nanousd";

bool ends_with(std::string_view text, std::string_view suffix) {
    return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}

// A Slack line stays one line whatever a field holds.
std::string one_line(std::string_view text) {
    std::string out(text);
    for (char &c : out)
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
    return out;
}

// Slack reads &, < and > as markup (links, mentions); these are shown as text.
std::string slack_escaped(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (char c : text) {
        if (c == '&') out += "&amp;";
        else if (c == '<') out += "&lt;";
        else if (c == '>') out += "&gt;";
        else out += c;
    }
    return out;
}

// "k=v k=v": every field but the type, amounts in USD.
std::string listed_fields(const StreamEvent &event) {
    std::string out;
    for (const auto &[key, value] : event.fields) {
        if (key == "type") continue;
        if (!out.empty()) out += ' ';
        if (is_amount_field(key)) {
            out += key + "=" + usd_of_nanos(value) + " USD";
        } else if (ends_with(key, kNanousdSuffix) && key.size() > kNanousdSuffix.size()) {
            out += key.substr(0, key.size() - kNanousdSuffix.size()) + "=" + usd_of_nanos(value) + " USD";
        } else {
            out += key + "=" + value;
        }
    }
    return out.empty() ? "no fields" : out;
}

// "key k1 monthly (2026-12) spent 10.000000 USD of 10.000000 USD cap"; false
// when a field it needs is missing.
bool describe_counter(const StreamEvent &event, std::string &out) {
    const std::string *scope = field(event, "scope"), *id = field(event, "id"), *window = field(event, "window"),
                      *spent = field(event, "spent"), *cap = field(event, "cap");
    if (!scope || !id || !window || !spent || !cap) return false;
    const std::string *period = field(event, "period");
    out = *scope + " " + *id + " " + *window;
    if (period && !period->empty()) out += " (" + *period + ")";
    out += " spent " + usd_of_nanos(*spent) + " USD of " + usd_of_nanos(*cap) + " USD cap";
    return true;
}

// What happened, in words, for the documented types; the fields otherwise.
std::string describe(const StreamEvent &event, const std::string &type) {
    std::string text;
    if (type == "spend_cap_reached" && describe_counter(event, text)) return text;
    if (type == "spend_cap_warning_threshold_reached" && describe_counter(event, text)) {
        const std::string *fraction = field(event, "fraction");
        return fraction ? text + " (warning at " + *fraction + ")" : text;
    }
    if (type == "low_balance") {
        const std::string *balance = field(event, "balance"), *threshold = field(event, "threshold");
        if (balance && threshold)
            return "balance " + usd_of_nanos(*balance) + " USD is below the " + usd_of_nanos(*threshold) +
                   " USD threshold";
    }
    if (type == "key_expired") {
        const std::string *id = field(event, "id"), *expires_at = field(event, "expires_at");
        if (id && expires_at) return "key " + *id + " expired at " + *expires_at;
    }
    return listed_fields(event);
}

}  // namespace

std::string signature_header(const Endpoint &endpoint, std::string_view id, std::int64_t timestamp,
                             std::string_view body) {
    std::string header;
    for (const auto &key : endpoint.keys) {
        if (!header.empty()) header += ' ';
        header += sign(key, id, timestamp, body);
    }
    return header;
}

std::string webhook_id(const StreamEvent &event) { return event.org + ":" + event.stream_id; }

std::string event_type(const StreamEvent &event) {
    const std::string *type = field(event, "type");
    return type ? *type : std::string();
}

std::string rfc3339_of_stream_id(std::string_view stream_id) {
    std::int64_t ms = 0;
    const std::string_view ms_part = stream_id.substr(0, stream_id.find('-'));
    if (ms_part.empty() || ms_part.front() == '-' || !parse_int64(ms_part, ms)) return {};
    std::string seconds = format_rfc3339(ms / 1000);  // "...:47Z"
    char millis[8];
    std::snprintf(millis, sizeof millis, ".%03dZ", static_cast<int>(ms % 1000));
    seconds.pop_back();
    return seconds + millis;
}

std::string json_body(const StreamEvent &event) {
    json::ObjectWriter data;
    data.string("org", event.org).string("event_id", event.stream_id);
    for (const auto &[key, value] : event.fields)
        if (key != "type" && key != "org" && key != "event_id") data.string(key, value);
    return json::ObjectWriter()
        .string("type", event_type(event))
        .string("timestamp", rfc3339_of_stream_id(event.stream_id))
        .raw("data", data.done())
        .done();
}

std::string slack_text(const StreamEvent &event) {
    const std::string type = event_type(event);
    return one_line("spend-cap: " + (type.empty() ? std::string("event") : type) + " in org " + event.org + ": " +
                    describe(event, type));
}

std::string slack_body(const StreamEvent &event) {
    return json::ObjectWriter().string("text", slack_escaped(slack_text(event))).done();
}

std::string usd_of_nanos(std::string_view nanos) {
    std::int64_t value = 0;
    if (!parse_int64(nanos, value)) return std::string(nanos);
    // Rounded on the magnitude, so -0.5 micro-USD rounds like 0.5 does.
    const bool negative = value < 0;
    const std::uint64_t magnitude = negative ? 0 - static_cast<std::uint64_t>(value) : static_cast<std::uint64_t>(value);
    const std::uint64_t micros = magnitude / 1000 + (magnitude % 1000 >= 500);
    char text[40];
    std::snprintf(text, sizeof text, "%s%llu.%06llu", negative && micros != 0 ? "-" : "",
                  static_cast<unsigned long long>(micros / 1000000), static_cast<unsigned long long>(micros % 1000000));
    return text;
}

WebhookRequest build_request(const Endpoint &endpoint, const StreamEvent &event, std::int64_t now_unix_seconds) {
    WebhookRequest request;
    if (endpoint.format == Endpoint::Format::slack) {
        request.body = slack_body(event);
        request.headers = {{"Content-Type", "application/json"}};
        return request;
    }
    request.body = json_body(event);
    const std::string id = webhook_id(event);
    request.headers = {
        {"Content-Type", "application/json"},
        {"webhook-id", id},
        {"webhook-timestamp", std::to_string(now_unix_seconds)},
        {"webhook-signature", signature_header(endpoint, id, now_unix_seconds, request.body)},
    };
    return request;
}

}  // namespace spendcap::relay
