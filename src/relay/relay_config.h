// The relay's YAML file (SPEC section 8): where the event streams are, and
// the endpoints that receive them as webhooks. Every mistake names the file
// and line, and no message ever holds a secret, a password or a url (a Slack
// url is itself a credential).
#pragma once

#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "base/text_file.h"
#include "relay/backoff.h"  // RetryConfig

namespace spendcap::relay {

struct Endpoint {
    enum class Format { json, slack };

    std::string name;  // [a-z0-9_-]{1,32}: names the endpoint's position in each org's stream
    std::string url;   // http:// or https://
    Format format = Format::json;
    std::vector<std::string> secrets;              // as written ("whsec_..."), newest first
    std::vector<std::vector<unsigned char>> keys;  // the same, decoded: the HMAC keys
    std::set<std::string> types;                   // empty: every type
    std::set<std::string> orgs;                    // empty: every org

    bool accepts(const std::string &type, const std::string &org) const;
};

struct RelayConfig {
    std::vector<std::string> redis_nodes;  // "host:port" as written: one, or the cluster's seeds
    bool cluster = false;
    std::string password;     // "" when none
    std::string policy_path;  // "" when none
    std::string metrics_host;  // "" when no metrics endpoint
    int metrics_port = 0;
    std::vector<Endpoint> endpoints;
    RetryConfig retry;
};

// "host:port", or "[v6 address]:port" (the host is then without brackets).
struct HostPort {
    std::string host;
    int port = 0;
};
// nullopt unless the host is a name or address and the port 1-65535.
std::optional<HostPort> parse_host_port(std::string_view text);

// A bad relay file: what() is "FILE:LINE: REASON" (the line 1-based, 0 when
// the mistake has no line, such as a file that cannot be read).
class RelayConfigError : public FileError {
public:
    using FileError::FileError;
};

// Parses and validates the relay's YAML: exactly one of redis and cluster,
// known fields only (no duplicates), endpoint names and urls, secrets
// (required for json, refused for slack), event types and org ids of the
// filters, durations (first <= max) and metrics' HOST:PORT.
RelayConfig parse_relay_config(const std::string &text, const std::string &name_for_errors);
// Reads the file and parses it.
RelayConfig load_relay_config(const std::string &path);

}  // namespace spendcap::relay
