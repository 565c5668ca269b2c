// One event as a webhook: its id, its body (Standard Webhooks JSON or a Slack
// line) and its signature (https://www.standardwebhooks.com/), so that any
// receiver can verify it with the standard's libraries.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "relay/relay_config.h"  // Endpoint
#include "relay/signing.h"

namespace spendcap::relay {

// An event as read from the org's stream.
struct StreamEvent {
    std::string org;
    std::string stream_id;  // "1733400000000-0": the ms it was appended, and a sequence
    std::vector<std::pair<std::string, std::string>> fields;  // as XADD stored them, "type" included
};

struct WebhookRequest {
    std::string body;
    std::vector<std::pair<std::string, std::string>> headers;
};

// webhook-signature: one "v1,..." per key, space-separated; "" without keys.
std::string signature_header(const Endpoint &endpoint, std::string_view id, std::int64_t timestamp,
                             std::string_view body);

// "ORG:STREAM_ID": the same on every attempt, so receivers can drop repeats.
std::string webhook_id(const StreamEvent &event);
// The "type" field; "" if the event has none.
std::string event_type(const StreamEvent &event);
// The stream id's ms as UTC RFC 3339 with ms ("2026-12-05T16:03:47.123Z");
// "" when the id does not start with a ms count.
std::string rfc3339_of_stream_id(std::string_view stream_id);

// {"type":TYPE,"timestamp":RFC3339,"data":{"org":ORG,"event_id":STREAM_ID,...}}:
// the other fields as strings in stored order (one named type, org or
// event_id would repeat a member, and is left out).
std::string json_body(const StreamEvent &event);
// {"text":"..."}: one readable line, amounts in USD with 6 decimals.
std::string slack_body(const StreamEvent &event);
// The line inside slack_body, before JSON and Slack escaping.
std::string slack_text(const StreamEvent &event);
// Nano-USD as USD with exactly 6 decimals, rounded half away from zero
// ("10000000000" -> "10.000000"); the text itself unless it is an integer.
std::string usd_of_nanos(std::string_view nanos);

// The POST for an endpoint: json is signed (Content-Type, webhook-id,
// webhook-timestamp, webhook-signature), slack carries Content-Type only.
WebhookRequest build_request(const Endpoint &endpoint, const StreamEvent &event, std::int64_t now_unix_seconds);

}  // namespace spendcap::relay
