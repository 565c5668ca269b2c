// The relay's file (relay/relay_config.h): the documented example, and every
// mistake named by file and line, never quoting a secret, password or url.
#include "relay/relay_config.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>

using namespace spendcap::relay;

namespace {

constexpr const char *kSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

const char *const kExample = R"(redis: 127.0.0.1:6379
password: secret
policy: /etc/nginx/spend-cap/policy.yaml
metrics: 127.0.0.1:9150
endpoints:
  - name: billing
    url: https://billing.example.com/hooks/spend-cap
    secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
    types: [spend_cap_warning_threshold_reached, spend_cap_reached, low_balance]
    orgs: [acme]
  - name: ops-slack
    url: https://hooks.slack.com/services/T000/B000/XXXX
    format: slack
retry: { first: 2s, max: 10m, give_up_after: 48h }
)";

// Two lines of head, then the endpoint's lines; the endpoint starts at line 3.
std::string with_endpoint(const std::string &endpoint_lines) {
    return "redis: 127.0.0.1:6379\nendpoints:\n" + endpoint_lines;
}

// what() of the error the text makes, checked never to hold a secret.
std::string error_of(const std::string &text) {
    try {
        parse_relay_config(text, "relay.yaml");
    } catch (const RelayConfigError &e) {
        const std::string message = e.what();
        EXPECT_EQ(message, e.file() + ":" + std::to_string(e.line()) + ": " + e.reason());
        EXPECT_EQ(message.find("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), std::string::npos) << message;
        return message;
    }
    ADD_FAILURE() << "accepted:\n" << text;
    return {};
}

TEST(RelayConfig, TheDocumentedExample) {
    const RelayConfig config = parse_relay_config(kExample, "relay.yaml");
    EXPECT_EQ(config.redis_nodes, (std::vector<std::string>{"127.0.0.1:6379"}));
    EXPECT_FALSE(config.cluster);
    EXPECT_EQ(config.password, "secret");
    EXPECT_EQ(config.policy_path, "/etc/nginx/spend-cap/policy.yaml");
    EXPECT_EQ(config.metrics_host, "127.0.0.1");
    EXPECT_EQ(config.metrics_port, 9150);
    ASSERT_EQ(config.endpoints.size(), 2u);

    const Endpoint &billing = config.endpoints[0];
    EXPECT_EQ(billing.name, "billing");
    EXPECT_EQ(billing.url, "https://billing.example.com/hooks/spend-cap");
    EXPECT_EQ(billing.format, Endpoint::Format::json);
    EXPECT_EQ(billing.secrets, (std::vector<std::string>{kSecret}));
    ASSERT_EQ(billing.keys.size(), 1u);
    EXPECT_EQ(billing.keys[0].size(), 24u);
    EXPECT_EQ(billing.types, (std::set<std::string>{"spend_cap_warning_threshold_reached", "spend_cap_reached",
                                                    "low_balance"}));
    EXPECT_EQ(billing.orgs, (std::set<std::string>{"acme"}));

    const Endpoint &slack = config.endpoints[1];
    EXPECT_EQ(slack.name, "ops-slack");
    EXPECT_EQ(slack.format, Endpoint::Format::slack);
    EXPECT_TRUE(slack.secrets.empty());
    EXPECT_TRUE(slack.keys.empty());
    EXPECT_TRUE(slack.types.empty());
    EXPECT_TRUE(slack.orgs.empty());

    EXPECT_EQ(config.retry.first_ms, 2000);
    EXPECT_EQ(config.retry.max_ms, 600000);
    EXPECT_EQ(config.retry.give_up_after_ms, 172800000);
}

TEST(RelayConfig, DefaultsAndTheClusterForm) {
    const RelayConfig config = parse_relay_config(R"(cluster: [10.0.0.1:7000, "redis-b.internal:7001", "[fd00::2]:7002"]
endpoints:
  - name: a_1
    url: http://localhost:8080/hook
    secrets:
      - whsec_c2Vjb25kIGtleSBvZiAyNCBieXRlcyEh
      - whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
)",
                                                  "relay.yaml");
    EXPECT_TRUE(config.cluster);
    EXPECT_EQ(config.redis_nodes,
              (std::vector<std::string>{"10.0.0.1:7000", "redis-b.internal:7001", "[fd00::2]:7002"}));
    EXPECT_EQ(config.password, "");
    EXPECT_EQ(config.policy_path, "");
    EXPECT_EQ(config.metrics_host, "");
    EXPECT_EQ(config.metrics_port, 0);
    ASSERT_EQ(config.endpoints.size(), 1u);
    EXPECT_EQ(config.endpoints[0].secrets,
              (std::vector<std::string>{"whsec_c2Vjb25kIGtleSBvZiAyNCBieXRlcyEh", kSecret}));
    ASSERT_EQ(config.endpoints[0].keys.size(), 2u);
    EXPECT_EQ(std::string(config.endpoints[0].keys[0].begin(), config.endpoints[0].keys[0].end()),
              "second key of 24 bytes!!");
    EXPECT_EQ(config.retry.first_ms, 1000);
    EXPECT_EQ(config.retry.max_ms, 300000);
    EXPECT_EQ(config.retry.give_up_after_ms, 86400000);
}

TEST(RelayConfig, FiltersAcceptWhatTheyList) {
    const RelayConfig config = parse_relay_config(kExample, "relay.yaml");
    const Endpoint &billing = config.endpoints[0];
    EXPECT_TRUE(billing.accepts("spend_cap_reached", "acme"));
    EXPECT_FALSE(billing.accepts("key_expired", "acme"));
    EXPECT_FALSE(billing.accepts("spend_cap_reached", "globex"));
    EXPECT_TRUE(config.endpoints[1].accepts("anything_at_all", "globex"));
}

TEST(RelayConfig, HostPort) {
    EXPECT_EQ(parse_host_port("127.0.0.1:6379")->host, "127.0.0.1");
    EXPECT_EQ(parse_host_port("127.0.0.1:6379")->port, 6379);
    EXPECT_EQ(parse_host_port("[::1]:9150")->host, "::1");
    EXPECT_EQ(parse_host_port("redis_1.local:65535")->port, 65535);
    for (const char *bad : {"", "127.0.0.1", "127.0.0.1:", ":6379", "host:0", "host:65536", "host:99999999",
                            "host:-1", "host:6379x", "ho st:6379", "::1:6379", "[::1]", "[]:6379", "[::1:6379",
                            "[host]:6379", "a/b:1"})
        EXPECT_FALSE(parse_host_port(bad).has_value()) << bad;
}

TEST(RelayConfig, TheSecretIsNeverInAMessage) {
    EXPECT_EQ(error_of(R"(redis: 127.0.0.1:6379
password: p
endpoints:
  - name: ops-slack
    url: https://hooks.slack.com/services/T000/B000/XXXX
    format: slack
  - name: billing
    url: https://billing.example.com/hooks/spend-cap
    secret: MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
)"),
              "relay.yaml:9: endpoint \"billing\": secret must start with whsec_ and hold base64");
    for (const char *bad : {"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw=", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw_",
                            "WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw \"",
                            "whsec_", "\"\"", "[whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw]"})
        EXPECT_EQ(error_of(with_endpoint("  - name: billing\n    url: https://b.example/h\n    secret: " +
                                         std::string(bad) + "\n")),
                  std::string("relay.yaml:5: endpoint \"billing\": ") +
                      (bad[0] == '[' ? "secret must be a string (several go in secrets: [NEW, OLD])"
                                     : "secret must start with whsec_ and hold base64"))
            << bad;
    EXPECT_EQ(error_of(with_endpoint("  - name: billing\n    url: https://b.example/h\n    secrets:\n"
                                     "      - whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n"
                                     "      - whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLa\n")),
              "relay.yaml:7: endpoint \"billing\": secrets[2] must start with whsec_ and hold base64");
    // Pasted where a field name goes, it is not quoted back either.
    EXPECT_EQ(error_of(with_endpoint("  - name: billing\n    url: https://b.example/h\n"
                                     "    whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw: 1\n")),
              "relay.yaml:5: endpoint \"billing\": unknown field \"whsec_...\" "
              "(expected name, url, format, secret, secrets, types, orgs)");
}

TEST(RelayConfig, NeitherPasswordNorUrlIsQuoted) {
    const std::string password = error_of("redis: 127.0.0.1:6379\npassword: [hunter2]\nendpoints: []\n");
    EXPECT_EQ(password, "relay.yaml:2: password must be a non-empty string");
    EXPECT_EQ(error_of("redis: \"redis://:hunter2@10.0.0.1:6379\"\n"),
              "relay.yaml:1: redis must be HOST:PORT with a port 1-65535");
    const std::string url = error_of(with_endpoint("  - name: ops\n    url: ftp://hooks.example/T000/B000/XXXX\n"
                                                   "    format: slack\n"));
    EXPECT_EQ(url, "relay.yaml:4: endpoint \"ops\": url must start with http:// or https://");
    EXPECT_EQ(error_of(with_endpoint("  - name: ops\n    url: https://user:pw@hooks.example/x\n    format: slack\n")),
              "relay.yaml:4: endpoint \"ops\": url must not hold a user or password");
    EXPECT_EQ(error_of(with_endpoint("  - name: ops\n    url: https://:443/x\n    format: slack\n")),
              "relay.yaml:4: endpoint \"ops\": url must name a host");
    EXPECT_EQ(error_of(with_endpoint("  - name: ops\n    url: https://h.example:0/x\n    format: slack\n")),
              "relay.yaml:4: endpoint \"ops\": url's port must be 1-65535");
    EXPECT_EQ(error_of(with_endpoint("  - name: ops\n    url: \"https://h.example/a b\"\n    format: slack\n")),
              "relay.yaml:4: endpoint \"ops\": url must not hold spaces or control characters");
    // Accepted forms.
    for (const char *good : {"HTTPS://h.example", "http://[::1]:8080/x?y=1#z", "https://h.example:8443"})
        EXPECT_NO_THROW(parse_relay_config(with_endpoint("  - name: ops\n    url: \"" + std::string(good) +
                                                         "\"\n    format: slack\n"),
                                           "relay.yaml"))
            << good;
}

TEST(RelayConfig, RedisIsOneAddressOrAClusterNotBoth) {
    EXPECT_EQ(error_of("endpoints:\n  - {name: a, url: http://h/x, format: slack}\n"),
              "relay.yaml:1: redis (HOST:PORT) or cluster ([HOST:PORT, ...]) is required");
    EXPECT_EQ(error_of("redis: 127.0.0.1:6379\ncluster: [10.0.0.1:7000]\n"),
              "relay.yaml:2: set redis or cluster, not both");
    EXPECT_EQ(error_of("cluster: [10.0.0.1:7000]\nredis: 127.0.0.1:6379\n"),
              "relay.yaml:2: set redis or cluster, not both");
    EXPECT_EQ(error_of("redis: 127.0.0.1\n"), "relay.yaml:1: redis must be HOST:PORT with a port 1-65535");
    EXPECT_EQ(error_of("redis: 127.0.0.1:65536\n"),
              "relay.yaml:1: redis must be HOST:PORT with a port 1-65535");
    EXPECT_EQ(error_of("redis:\nendpoints: []\n"), "relay.yaml:1: redis must be a non-empty string");
    EXPECT_EQ(error_of("cluster: 10.0.0.1:7000\n"), "relay.yaml:1: cluster must be a list of HOST:PORT (at least one)");
    EXPECT_EQ(error_of("cluster: []\n"), "relay.yaml:1: cluster must be a list of HOST:PORT (at least one)");
    EXPECT_EQ(error_of("cluster:\n  - 10.0.0.1:7000\n  - 10.0.0.2:0\n"),
              "relay.yaml:3: cluster node must be HOST:PORT with a port 1-65535");
}

TEST(RelayConfig, UnknownAndDuplicateFieldsAreNamed) {
    EXPECT_EQ(error_of("redis: 127.0.0.1:6379\nendpoint:\n  - name: a\n"),
              "relay.yaml:2: unknown field \"endpoint\" "
              "(expected redis, cluster, password, policy, metrics, endpoints, retry)");
    EXPECT_EQ(error_of(with_endpoint("  - name: billing\n    url: https://b.example/h\n    secret: " +
                                     std::string(kSecret) + "\n    type: [low_balance]\n")),
              "relay.yaml:6: endpoint \"billing\": unknown field \"type\" "
              "(expected name, url, format, secret, secrets, types, orgs)");
    EXPECT_EQ(error_of("redis: 127.0.0.1:6379\nretry: {first: 1s, maximum: 5m}\n"),
              "relay.yaml:2: unknown field \"maximum\" in retry (expected first, max, give_up_after)");
    EXPECT_EQ(error_of("redis: 127.0.0.1:6379\npolicy: /a.yaml\npolicy: /b.yaml\n"),
              "relay.yaml:3: duplicate field \"policy\" (first at line 2)");
    EXPECT_EQ(error_of(with_endpoint("  - name: ops\n    url: https://h.example/x\n    format: slack\n"
                                     "    url: https://h.example/y\n")),
              "relay.yaml:6: endpoint \"ops\": duplicate field \"url\" (first at line 4)");
}

TEST(RelayConfig, EndpointNamesAndFormats) {
    EXPECT_EQ(error_of("redis: 127.0.0.1:6379\n"), "relay.yaml:1: endpoints is required (at least one)");
    EXPECT_EQ(error_of("redis: 127.0.0.1:6379\nendpoints: []\n"),
              "relay.yaml:2: endpoints must be a list of at least one endpoint");
    EXPECT_EQ(error_of("redis: 127.0.0.1:6379\nendpoints:\n  - https://h.example/x\n"),
              "relay.yaml:3: endpoint 1: must be a mapping (name, url, ...)");
    EXPECT_EQ(error_of(with_endpoint("  - url: https://h.example/x\n    format: slack\n")),
              "relay.yaml:3: endpoint 1: name is required");
    // The name is read first, so a mistake before it still says which endpoint.
    EXPECT_EQ(error_of(with_endpoint("  - format: teams\n    name: ops\n")),
              "relay.yaml:3: endpoint \"ops\": format must be json or slack, not \"teams\"");
    for (const char *bad : {"Billing", "ops slack", "a.b", "\"\"", "abcdefghijklmnopqrstuvwxyz0123456"}) {
        const std::string message = error_of(with_endpoint("  - name: " + std::string(bad) + "\n"));
        EXPECT_EQ(message.rfind("relay.yaml:3: endpoint 1: name", 0), 0u) << message;
    }
    EXPECT_EQ(error_of(with_endpoint("  - name: Billing\n")),
              "relay.yaml:3: endpoint 1: name \"Billing\" must be 1 to 32 of a-z 0-9 _ -");
    EXPECT_EQ(error_of(with_endpoint("  - {name: ops, url: https://h.example/x, format: slack}\n"
                                     "  - {name: b, url: https://h.example/y, format: slack}\n"
                                     "  - {name: ops, url: https://h.example/z, format: slack}\n")),
              "relay.yaml:5: endpoint \"ops\": the name is taken by the endpoint at line 3");
    EXPECT_EQ(error_of(with_endpoint("  - name: ops\n    format: slack\n")), "relay.yaml:3: endpoint \"ops\": url is required");
    EXPECT_EQ(error_of(with_endpoint("  - name: billing\n    url: https://b.example/h\n")),
              "relay.yaml:3: endpoint \"billing\": secret is required: a json endpoint is signed (whsec_ and base64)");
    EXPECT_EQ(error_of(with_endpoint("  - name: ops\n    url: https://h.example/x\n    format: slack\n    secret: " +
                                     std::string(kSecret) + "\n")),
              "relay.yaml:6: endpoint \"ops\": a slack endpoint is not signed: remove its secret");
    EXPECT_EQ(error_of(with_endpoint("  - name: b\n    url: https://b.example/h\n    secret: " + std::string(kSecret) +
                                     "\n    secrets: [" + kSecret + "]\n")),
              "relay.yaml:6: endpoint \"b\": set secret or secrets, not both");
    EXPECT_EQ(error_of(with_endpoint("  - name: b\n    url: https://b.example/h\n    secrets: []\n")),
              "relay.yaml:5: endpoint \"b\": secrets must be a list of at least one secret");
}

TEST(RelayConfig, TypeAndOrgFilters) {
    const std::string head = "  - name: ops\n    url: https://h.example/x\n    format: slack\n";
    const RelayConfig config =
        parse_relay_config(with_endpoint(head + "    types: [key_expired, some_future_type]\n    orgs: [acme, a.b@c+d-1]\n"),
                           "relay.yaml");
    EXPECT_EQ(config.endpoints[0].types, (std::set<std::string>{"key_expired", "some_future_type"}));
    EXPECT_EQ(config.endpoints[0].orgs, (std::set<std::string>{"acme", "a.b@c+d-1"}));

    EXPECT_EQ(error_of(with_endpoint(head + "    types:\n      - low_balance\n      - Low-Balance\n")),
              "relay.yaml:8: endpoint \"ops\": types: \"Low-Balance\" is not an event type ([a-z_]{1,64})");
    EXPECT_EQ(error_of(with_endpoint(head + "    types: [low_balance, low_balance]\n")),
              "relay.yaml:6: endpoint \"ops\": types: \"low_balance\" is listed twice");
    EXPECT_EQ(error_of(with_endpoint(head + "    types: []\n")),
              "relay.yaml:6: endpoint \"ops\": types must be a list of at least one name");
    EXPECT_EQ(error_of(with_endpoint(head + "    types: low_balance\n")),
              "relay.yaml:6: endpoint \"ops\": types must be a list of at least one name");
    EXPECT_EQ(error_of(with_endpoint(head + "    orgs: [\"a/b\"]\n")),
              "relay.yaml:6: endpoint \"ops\": orgs: \"a/b\" must be 1 to 128 of the characters "
              "A-Z a-z 0-9 _ . @ + -, and not `.` or `..`");
    EXPECT_EQ(error_of(with_endpoint(head + "    orgs:\n")),
              "relay.yaml:6: endpoint \"ops\": orgs must be a list of at least one name");
}

TEST(RelayConfig, Durations) {
    const RelayConfig config =
        parse_relay_config(with_endpoint("  - {name: a, url: http://h/x, format: slack}\n") +
                               "retry:\n  first: 500ms\n  max: 1h\n  give_up_after: 90m\n",
                           "relay.yaml");
    EXPECT_EQ(config.retry.first_ms, 500);
    EXPECT_EQ(config.retry.max_ms, 3600000);
    EXPECT_EQ(config.retry.give_up_after_ms, 5400000);
    // Fields left out keep their defaults.
    EXPECT_EQ(parse_relay_config(with_endpoint("  - {name: a, url: http://h/x, format: slack}\n") + "retry: {max: 1m}\n",
                                 "relay.yaml")
                  .retry.first_ms,
              1000);

    const std::string head = with_endpoint("  - {name: a, url: http://h/x, format: slack}\n");
    for (const char *bad : {"0s", "10", "1.5s", "-1s", "1d", "\"\"", "[1s]"})
        EXPECT_EQ(error_of(head + "retry:\n  first: " + bad + "\n"),
                  "relay.yaml:5: retry.first must be a positive whole number with a unit: ms, s, m or h (as 30s)")
            << bad;
    EXPECT_EQ(error_of(head + "retry:\n  give_up_after:\n"),
              "relay.yaml:5: retry.give_up_after must be a positive whole number with a unit: ms, s, m or h (as 30s)");
    EXPECT_EQ(error_of(head + "retry:\n  max: 30s\n  first: 1m\n"),
              "relay.yaml:6: retry.first must not be longer than retry.max");
    EXPECT_EQ(error_of(head + "retry:\n  first: 10m\n"), "relay.yaml:5: retry.first must not be longer than retry.max");
    EXPECT_EQ(error_of(head + "retry: 5m\n"),
              "relay.yaml:4: retry must be a mapping ({first: 1s, max: 5m, give_up_after: 24h})");
}

TEST(RelayConfig, Metrics) {
    const std::string head = with_endpoint("  - {name: a, url: http://h/x, format: slack}\n");
    const RelayConfig config = parse_relay_config(head + "metrics: \"[::]:9150\"\n", "relay.yaml");
    EXPECT_EQ(config.metrics_host, "::");
    EXPECT_EQ(config.metrics_port, 9150);
    EXPECT_EQ(error_of(head + "metrics: 9150\n"), "relay.yaml:4: metrics must be HOST:PORT with a port 1-65535");
    EXPECT_EQ(error_of(head + "metrics: localhost:http\n"),
              "relay.yaml:4: metrics must be HOST:PORT with a port 1-65535");
}

TEST(RelayConfig, NotYamlOrNotAMapping) {
    EXPECT_EQ(error_of(""), "relay.yaml:0: the file is empty (expected redis and endpoints)");
    EXPECT_EQ(error_of("- redis\n"), "relay.yaml:1: the file must be a mapping (redis, endpoints, ...)");
    const std::string message = error_of("redis: 127.0.0.1:6379\nendpoints:\n  - name: [a\n");
    EXPECT_EQ(message.rfind("relay.yaml:", 0), 0u);
    EXPECT_NE(message.find("invalid YAML"), std::string::npos) << message;
    EXPECT_EQ(error_of("redis: 127.0.0.1:6379\nendpoints:\n  - name: a\n   url: x\n").rfind("relay.yaml:4: invalid YAML", 0), 0u);
}

TEST(RelayConfig, LoadsAFile) {
    const std::string path = testing::TempDir() + "relay_config_test.yaml";
    {
        std::ofstream out(path);
        out << kExample;
    }
    EXPECT_EQ(load_relay_config(path).endpoints.size(), 2u);
    std::remove(path.c_str());
    try {
        load_relay_config(path);
        ADD_FAILURE() << "loaded a missing file";
    } catch (const RelayConfigError &e) {
        EXPECT_EQ(std::string(e.what()), path + ":0: cannot open the relay file: No such file or directory");
    }
}

}  // namespace
