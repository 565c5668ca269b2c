// Webhooks (relay/webhook.h): Standard Webhooks signatures (the standard's
// own test vector), rotation's two signatures, the JSON and Slack bodies and
// the request an endpoint gets.
#include "relay/webhook.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

using namespace spendcap::relay;

namespace {

// From the Standard Webhooks reference libraries' tests (checked with
// python3's hmac and base64).
constexpr const char *kSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
constexpr const char *kMsgId = "msg_p5jXN8AQM9LWM0D4loKWxJek";
constexpr std::int64_t kTimestamp = 1614265330;
constexpr const char *kPayload = R"({"test": 2432232314})";
constexpr const char *kSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

// "c2Vjb25kIGtleSBvZiAyNCBieXRlcyEh" is base64 of "second key of 24 bytes!!".
constexpr const char *kOtherSecret = "whsec_c2Vjb25kIGtleSBvZiAyNCBieXRlcyEh";

StreamEvent reached_event() {
    return {"acme",
            "1796486627123-0",
            {{"type", "spend_cap_reached"},
             {"scope", "key"},
             {"id", "k1"},
             {"window", "monthly"},
             {"period", "2026-12"},
             {"spent", "10000000000"},
             {"cap", "10000000000"}}};
}

Endpoint json_endpoint(std::initializer_list<const char *> secrets) {
    Endpoint endpoint;
    endpoint.name = "billing";
    endpoint.url = "https://billing.example.com/hooks/spend-cap";
    for (const char *secret : secrets) {
        endpoint.secrets.push_back(secret);
        endpoint.keys.push_back(decode_secret(secret));
    }
    return endpoint;
}

TEST(RelaySignature, StandardWebhooksTestVector) {
    const std::vector<unsigned char> key = decode_secret(kSecret);
    EXPECT_EQ(key.size(), 24u);
    EXPECT_EQ(sign(key, kMsgId, kTimestamp, kPayload), kSignature);
    // Any change to what is signed changes the signature.
    EXPECT_NE(sign(key, kMsgId, kTimestamp + 1, kPayload), kSignature);
    EXPECT_NE(sign(key, "msg_other", kTimestamp, kPayload), kSignature);
    EXPECT_NE(sign(key, kMsgId, kTimestamp, R"({"test": 2432232315})"), kSignature);
}

TEST(RelaySignature, DecodesOnlyWhsecAndCanonicalBase64) {
    const std::vector<unsigned char> other = decode_secret(kOtherSecret);
    EXPECT_EQ(std::string(other.begin(), other.end()), "second key of 24 bytes!!");
    EXPECT_EQ(decode_secret("whsec_YQ==").size(), 1u);
    EXPECT_EQ(decode_secret("whsec_YWI=").size(), 2u);
    for (const char *bad : {"", "whsec_", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS",    // not a multiple of 4
                            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS_",   // url-safe alphabet
                            "whsec_MfKQ9r8GKYqrTwjUPD8I LPZIo2LaLaSw",  // a space
                            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n", "whsec_YQ", "whsec_YQ=", "whsec_YR==",
                            "whsec_Y===", "whsec_====", "whsec_YQ==YQ==", "whsec_=YQ="}) {
        try {
            decode_secret(bad);
            ADD_FAILURE() << "accepted " << bad;
        } catch (const std::invalid_argument &e) {
            EXPECT_STREQ(e.what(), "a secret must start with whsec_ and hold base64");
        }
    }
}

TEST(RelaySignature, RotationCarriesOneSignaturePerSecret) {
    EXPECT_EQ(signature_header(json_endpoint({kSecret}), kMsgId, kTimestamp, kPayload), kSignature);
    const std::string both = signature_header(json_endpoint({kOtherSecret, kSecret}), kMsgId, kTimestamp, kPayload);
    EXPECT_EQ(both, sign(decode_secret(kOtherSecret), kMsgId, kTimestamp, kPayload) + " " + kSignature);
    EXPECT_EQ(signature_header(Endpoint(), kMsgId, kTimestamp, kPayload), "");
}

TEST(RelayEvent, IdTypeAndTime) {
    const StreamEvent event = reached_event();
    EXPECT_EQ(webhook_id(event), "acme:1796486627123-0");
    EXPECT_EQ(event_type(event), "spend_cap_reached");
    EXPECT_EQ(event_type(StreamEvent{"acme", "1-0", {{"id", "k1"}}}), "");

    EXPECT_EQ(rfc3339_of_stream_id("1796486627123-0"), "2026-12-05T16:03:47.123Z");
    EXPECT_EQ(rfc3339_of_stream_id("1733400000000-0"), "2024-12-05T12:00:00.000Z");
    EXPECT_EQ(rfc3339_of_stream_id("1733400000007-12"), "2024-12-05T12:00:00.007Z");
    EXPECT_EQ(rfc3339_of_stream_id("0-1"), "1970-01-01T00:00:00.000Z");
    EXPECT_EQ(rfc3339_of_stream_id("1709164800999"), "2024-02-29T00:00:00.999Z");  // no sequence part
    EXPECT_EQ(rfc3339_of_stream_id("253402300799999-0"), "9999-12-31T23:59:59.999Z");
    EXPECT_FALSE(rfc3339_of_stream_id("9223372036854775807-0").empty());  // absurd, yet no overflow
    for (const char *bad : {"", "-0", "-5-0", "abc-0", "12a-0", "99999999999999999999-0"})
        EXPECT_EQ(rfc3339_of_stream_id(bad), "") << bad;
}

TEST(RelayJsonBody, TypeTimestampAndDataInStoredOrder) {
    EXPECT_EQ(json_body(reached_event()),
              R"({"type":"spend_cap_reached","timestamp":"2026-12-05T16:03:47.123Z","data":{"org":"acme",)"
              R"("event_id":"1796486627123-0","scope":"key","id":"k1","window":"monthly","period":"2026-12",)"
              R"("spent":"10000000000","cap":"10000000000"}})");
}

TEST(RelayJsonBody, EscapesAndNeverRepeatsAMember) {
    const StreamEvent event{"o\"rg",
                            "1733400000000-0",
                            {{"by", "api"},
                             {"note", "a \"quoted\"\nline\\"},
                             {"k\"ey", "\x01"},
                             {"type", "topup"},
                             {"org", "other"},
                             {"event_id", "forged"}}};
    EXPECT_EQ(json_body(event),
              R"({"type":"topup","timestamp":"2024-12-05T12:00:00.000Z","data":{"org":"o\"rg",)"
              R"("event_id":"1733400000000-0","by":"api","note":"a \"quoted\"\nline\\","k\"ey":"\u0001"}})");
    EXPECT_EQ(json_body(StreamEvent{"acme", "1733400000000-0", {}}),
              R"({"type":"","timestamp":"2024-12-05T12:00:00.000Z","data":{"org":"acme","event_id":"1733400000000-0"}})");
}

TEST(RelayUsd, SixDecimalsExactly) {
    EXPECT_EQ(usd_of_nanos("10000000000"), "10.000000");
    EXPECT_EQ(usd_of_nanos("0"), "0.000000");
    EXPECT_EQ(usd_of_nanos("123"), "0.000000");
    EXPECT_EQ(usd_of_nanos("499"), "0.000000");
    EXPECT_EQ(usd_of_nanos("500"), "0.000001");  // half rounds away from zero
    EXPECT_EQ(usd_of_nanos("1234567890"), "1.234568");
    EXPECT_EQ(usd_of_nanos("999999999"), "1.000000");
    EXPECT_EQ(usd_of_nanos("7500000"), "0.007500");
    EXPECT_EQ(usd_of_nanos("-2500000000"), "-2.500000");
    EXPECT_EQ(usd_of_nanos("-1500"), "-0.000002");
    EXPECT_EQ(usd_of_nanos("-400"), "0.000000");
    EXPECT_EQ(usd_of_nanos("9223372036854775807"), "9223372036.854776");
    EXPECT_EQ(usd_of_nanos("-9223372036854775808"), "-9223372036.854776");
    // Not an integer: shown as stored rather than invented.
    for (const char *odd : {"", "-", "1.5", "12abc", "9223372036854775808", "+5"}) EXPECT_EQ(usd_of_nanos(odd), odd);
}

TEST(RelaySlack, DocumentedTypesReadAsSentences) {
    EXPECT_EQ(slack_text(reached_event()),
              "spend-cap: spend_cap_reached in org acme: key k1 monthly (2026-12) spent 10.000000 USD of "
              "10.000000 USD cap");
    EXPECT_EQ(slack_body(reached_event()),
              R"({"text":"spend-cap: spend_cap_reached in org acme: key k1 monthly (2026-12) spent 10.000000 USD )"
              R"(of 10.000000 USD cap"})");

    const StreamEvent warning{"acme",
                              "1-0",
                              {{"type", "spend_cap_warning_threshold_reached"},
                               {"scope", "project"},
                               {"id", "web"},
                               {"window", "lifetime"},
                               {"period", ""},
                               {"fraction", "0.8"},
                               {"spent", "80000000123"},
                               {"cap", "100000000000"}}};
    EXPECT_EQ(slack_text(warning),
              "spend-cap: spend_cap_warning_threshold_reached in org acme: project web lifetime spent 80.000000 USD "
              "of 100.000000 USD cap (warning at 0.8)");

    const StreamEvent low{"acme", "1-0", {{"type", "low_balance"}, {"balance", "4500000000"}, {"threshold", "5000000000"}}};
    EXPECT_EQ(slack_text(low), "spend-cap: low_balance in org acme: balance 4.500000 USD is below the 5.000000 USD threshold");

    const StreamEvent expired{"acme", "1-0", {{"type", "key_expired"}, {"id", "k1"}, {"expires_at", "2026-12-01T00:00:00Z"}}};
    EXPECT_EQ(slack_text(expired), "spend-cap: key_expired in org acme: key k1 expired at 2026-12-01T00:00:00Z");
}

TEST(RelaySlack, OtherTypesListTheirFields) {
    const StreamEvent topup{"acme",
                            "1-0",
                            {{"type", "topup"},
                             {"amount_nanousd", "25000000000"},
                             {"idempotency_key", "t-1"},
                             {"balance_nanousd", "30000000000"},
                             {"by", "api"}}};
    EXPECT_EQ(slack_text(topup),
              "spend-cap: topup in org acme: amount=25.000000 USD idempotency_key=t-1 balance=30.000000 USD by=api");
    const StreamEvent forecast{"acme",
                               "1-0",
                               {{"type", "spend_cap_forecast_exhaustion"}, {"id", "k1"}, {"spent", "1"}, {"cap", "2000"}}};
    EXPECT_EQ(slack_text(forecast),
              "spend-cap: spend_cap_forecast_exhaustion in org acme: id=k1 spent=0.000000 USD cap=0.000002 USD");
    // A documented type missing a field it needs is listed rather than guessed.
    const StreamEvent partial{"acme", "1-0", {{"type", "low_balance"}, {"balance", "1000"}}};
    EXPECT_EQ(slack_text(partial), "spend-cap: low_balance in org acme: balance=0.000001 USD");
    EXPECT_EQ(slack_text(StreamEvent{"acme", "1-0", {}}), "spend-cap: event in org acme: no fields");
}

TEST(RelaySlack, OneLineWithMarkupShownAsText) {
    const StreamEvent event{"acme", "1-0", {{"type", "note"}, {"text", "<!channel> a & b\nsecond line\t\"x\""}}};
    EXPECT_EQ(slack_text(event), "spend-cap: note in org acme: text=<!channel> a & b second line \"x\"");
    EXPECT_EQ(slack_body(event), R"({"text":"spend-cap: note in org acme: text=&lt;!channel&gt; a &amp; b second line \"x\""})");
}

TEST(RelayRequest, JsonIsSignedPerStandardWebhooks) {
    const Endpoint endpoint = json_endpoint({kOtherSecret, kSecret});
    const WebhookRequest request = build_request(endpoint, reached_event(), 1796486630);
    EXPECT_EQ(request.body, json_body(reached_event()));
    ASSERT_EQ(request.headers.size(), 4u);
    EXPECT_EQ(request.headers[0], (std::pair<std::string, std::string>{"Content-Type", "application/json"}));
    EXPECT_EQ(request.headers[1], (std::pair<std::string, std::string>{"webhook-id", "acme:1796486627123-0"}));
    EXPECT_EQ(request.headers[2], (std::pair<std::string, std::string>{"webhook-timestamp", "1796486630"}));
    EXPECT_EQ(request.headers[3].first, "webhook-signature");
    EXPECT_EQ(request.headers[3].second,
              sign(decode_secret(kOtherSecret), "acme:1796486627123-0", 1796486630, request.body) + " " +
                  sign(decode_secret(kSecret), "acme:1796486627123-0", 1796486630, request.body));
    // A later attempt: same id and body, new timestamp and signature.
    const WebhookRequest again = build_request(endpoint, reached_event(), 1796486690);
    EXPECT_EQ(again.body, request.body);
    EXPECT_EQ(again.headers[1], request.headers[1]);
    EXPECT_EQ(again.headers[2].second, "1796486690");
    EXPECT_NE(again.headers[3].second, request.headers[3].second);
}

TEST(RelayRequest, SlackIsUnsigned) {
    Endpoint endpoint;
    endpoint.name = "ops-slack";
    endpoint.url = "https://hooks.slack.com/services/T000/B000/XXXX";
    endpoint.format = Endpoint::Format::slack;
    const WebhookRequest request = build_request(endpoint, reached_event(), 1796486630);
    EXPECT_EQ(request.body, slack_body(reached_event()));
    ASSERT_EQ(request.headers.size(), 1u);
    EXPECT_EQ(request.headers[0], (std::pair<std::string, std::string>{"Content-Type", "application/json"}));
}

}  // namespace
