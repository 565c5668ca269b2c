// Reading and validating the relay's YAML. A mistake names the file and line;
// no message quotes a secret, the password or a url, since a log of the
// error must not leak them.
#include "relay/relay_config.h"

#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <stdexcept>
#include <utility>

#include "policy/policy.h"  // valid_id, kIdRule: the org ids of the filters
#include "relay/signing.h"  // decode_secret

namespace spendcap::relay {


bool Endpoint::accepts(const std::string &type, const std::string &org) const {
    return (types.empty() || types.count(type)) && (orgs.empty() || orgs.count(org));
}

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_lower_or_digit(char c) { return (c >= 'a' && c <= 'z') || is_digit(c); }

bool valid_host(std::string_view host) {
    if (host.empty() || host.size() > 255) return false;
    for (char c : host)
        if (!(is_lower_or_digit(c) || (c >= 'A' && c <= 'Z') || c == '.' || c == '-' || c == '_')) return false;
    return true;
}

bool valid_v6_host(std::string_view host) {
    if (host.empty() || host.size() > 64 || host.find(':') == std::string_view::npos) return false;
    for (char c : host)
        if (!(is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == ':' || c == '.')) return false;
    return true;
}

bool parse_port(std::string_view text, int &port) {
    port = 0;
    if (text.empty() || text.size() > 5) return false;
    for (char c : text) {
        if (!is_digit(c)) return false;
        port = port * 10 + (c - '0');
    }
    return port >= 1 && port <= 65535;
}

bool valid_endpoint_name(std::string_view name) {
    if (name.empty() || name.size() > 32) return false;
    for (char c : name)
        if (!(is_lower_or_digit(c) || c == '_' || c == '-')) return false;
    return true;
}

bool valid_event_type(std::string_view type) {
    if (type.empty() || type.size() > 64) return false;
    for (char c : type)
        if (!((c >= 'a' && c <= 'z') || c == '_')) return false;
    return true;
}

bool starts_with_ignoring_case(std::string_view text, std::string_view prefix) {
    if (text.size() < prefix.size()) return false;
    for (std::size_t i = 0; i < prefix.size(); ++i) {
        char c = text[i];
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
        if (c != prefix[i]) return false;
    }
    return true;
}

// "" when the url will do, else why not (without the url).
std::string url_problem(std::string_view url) {
    for (char c : url)
        if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return "url must not hold spaces or control characters";
    std::string_view rest;
    if (starts_with_ignoring_case(url, "https://")) rest = url.substr(8);
    else if (starts_with_ignoring_case(url, "http://")) rest = url.substr(7);
    else return "url must start with http:// or https://";
    const std::string_view authority = rest.substr(0, rest.find_first_of("/?#"));
    if (authority.find('@') != std::string_view::npos) return "url must not hold a user or password";
    std::string_view host = authority;
    std::string_view port_text;
    bool has_port = false;
    if (!authority.empty() && authority.front() == '[') {
        const std::size_t close = authority.find(']');
        if (close == std::string_view::npos || !valid_v6_host(authority.substr(1, close - 1)))
            return "url must name a host";
        host = authority.substr(1, close - 1);
        const std::string_view after = authority.substr(close + 1);
        if (!after.empty()) {
            if (after.front() != ':') return "url must name a host";
            has_port = true;
            port_text = after.substr(1);
        }
    } else {
        const std::size_t colon = authority.find(':');
        if (colon != std::string_view::npos) {
            host = authority.substr(0, colon);
            has_port = true;
            port_text = authority.substr(colon + 1);
        }
        if (!valid_host(host)) return "url must name a host";
    }
    int port = 0;
    if (has_port && !parse_port(port_text, port)) return "url's port must be 1-65535";
    return {};
}

int line_of(const YAML::Mark &mark) { return mark.line >= 0 ? mark.line + 1 : 0; }

// User text for a message: quoted, cut short, and never a secret pasted in
// the wrong place.
std::string shown(std::string_view text) {
    if (text.substr(0, 6) == "whsec_") return "\"whsec_...\"";
    if (text.size() > 64) return "\"" + std::string(text.substr(0, 64)) + "...\"";
    return "\"" + std::string(text) + "\"";
}

class RelayConfigParser {
public:
    RelayConfigParser(std::string file, RelayConfig &config) : file_(std::move(file)), config_(config) {}

    void parse_document(const YAML::Node &root) {
        if (!root.IsDefined() || root.IsNull()) fail(0, "the file is empty (expected redis and endpoints)");
        if (!root.IsMap()) fail(line_of(root.Mark()), "the file must be a mapping (redis, endpoints, ...)");
        const int root_line = line_of(root.Mark());
        bool redis_seen = false, cluster_seen = false, endpoints_seen = false;
        for_each_field(root, "", [&](const std::string &name, const YAML::Node &value) {
            if (name == "redis") {
                if (cluster_seen) fail(value, "set redis or cluster, not both");
                redis_seen = true;
                config_.redis_nodes = {host_port(value, "redis")};
            } else if (name == "cluster") {
                if (redis_seen) fail(value, "set redis or cluster, not both");
                cluster_seen = true;
                config_.cluster = true;
                parse_cluster(value);
            } else if (name == "password") {
                // Even a password YAML reads as a number is taken as written.
                if (!value.IsScalar() || value.Scalar().empty()) fail(value, "password must be a non-empty string");
                config_.password = value.Scalar();
            } else if (name == "policy") {
                config_.policy_path = string_value(value, "policy");
            } else if (name == "metrics") {
                const std::string text = host_port(value, "metrics");
                const HostPort address = *parse_host_port(text);
                config_.metrics_host = address.host;
                config_.metrics_port = address.port;
            } else if (name == "endpoints") {
                endpoints_seen = true;
                parse_endpoints(value);
            } else if (name == "retry") {
                parse_retry(value);
            } else {
                fail(current_key_line_, "unknown field " + shown(name) +
                                            " (expected redis, cluster, password, policy, metrics, endpoints, retry)");
            }
        });
        if (!redis_seen && !cluster_seen) fail(root_line, "redis (HOST:PORT) or cluster ([HOST:PORT, ...]) is required");
        if (!endpoints_seen) fail(root_line, "endpoints is required (at least one)");
    }

private:
    using FieldVisitor = std::function<void(const std::string &name, const YAML::Node &value)>;

    [[noreturn]] void fail(int line, const std::string &reason) const { throw RelayConfigError(file_, line, context_ + reason); }
    // An empty value ("url:" and nothing) is marked where the next token
    // starts, often lines later; blame the field's own line instead.
    [[noreturn]] void fail(const YAML::Node &at, const std::string &reason) const {
        fail(at.IsNull() && current_key_line_ > 0 ? current_key_line_ : line_of(at.Mark()), reason);
    }

    // A mapping's fields in file order. YAML parsers keep duplicate keys
    // silently (one wins); here a duplicate is an error.
    void for_each_field(const YAML::Node &map, const std::string &where, const FieldVisitor &visit) {
        std::map<std::string, int> first_lines;
        for (auto it = map.begin(); it != map.end(); ++it) {
            const YAML::Node key = it->first;
            const int key_line = line_of(key.Mark());
            if (!key.IsScalar()) fail(key_line, "field names" + where + " must be plain strings");
            const std::string &name = key.Scalar();
            const auto [earlier, inserted] = first_lines.emplace(name, key_line);
            if (!inserted)
                fail(key_line, "duplicate field " + shown(name) + where + " (first at line " +
                                   std::to_string(earlier->second) + ")");
            const int outer_key_line = current_key_line_;
            current_key_line_ = key_line;
            visit(name, it->second);
            current_key_line_ = outer_key_line;
        }
    }

    std::string string_value(const YAML::Node &node, const std::string &what) {
        if (!node.IsScalar() || node.Scalar().empty()) fail(node, what + " must be a non-empty string");
        return node.Scalar();
    }

    // Checked here, kept as written: the Redis client parses it again. Not
    // quoted back: "redis://:PASSWORD@host" is a mistake that holds a password.
    std::string host_port(const YAML::Node &node, const std::string &what) {
        const std::string text = string_value(node, what);
        if (!parse_host_port(text)) fail(node, what + " must be HOST:PORT with a port 1-65535");
        return text;
    }

    void parse_cluster(const YAML::Node &node) {
        if (!node.IsSequence() || node.size() == 0) fail(node, "cluster must be a list of HOST:PORT (at least one)");
        for (const YAML::Node &seed : node) config_.redis_nodes.push_back(host_port(seed, "cluster node"));
    }

    std::int64_t duration(const YAML::Node &node, const std::string &what) {
        const std::int64_t ms = node.IsScalar() ? parse_duration_ms(node.Scalar()) : 0;
        if (ms <= 0) fail(node, what + " must be a positive whole number with a unit: ms, s, m or h (as 30s)");
        return ms;
    }

    void parse_retry(const YAML::Node &node) {
        if (!node.IsMap()) fail(node, "retry must be a mapping ({first: 1s, max: 5m, give_up_after: 24h})");
        int first_line = current_key_line_;
        for_each_field(node, " in retry", [&](const std::string &name, const YAML::Node &value) {
            if (name == "first") {
                first_line = current_key_line_;
                config_.retry.first_ms = duration(value, "retry.first");
            } else if (name == "max") {
                config_.retry.max_ms = duration(value, "retry.max");
            } else if (name == "give_up_after") {
                config_.retry.give_up_after_ms = duration(value, "retry.give_up_after");
            } else {
                fail(current_key_line_, "unknown field " + shown(name) + " in retry (expected first, max, give_up_after)");
            }
        });
        if (config_.retry.first_ms > config_.retry.max_ms)
            fail(first_line, "retry.first must not be longer than retry.max");
    }

    void parse_endpoints(const YAML::Node &node) {
        if (!node.IsSequence() || node.size() == 0) fail(node, "endpoints must be a list of at least one endpoint");
        std::map<std::string, int> name_lines;
        std::size_t position = 0;
        for (const YAML::Node &entry : node) {
            ++position;
            context_ = "endpoint " + std::to_string(position) + ": ";
            if (!entry.IsMap()) fail(entry, "must be a mapping (name, url, ...)");
            config_.endpoints.push_back(parse_endpoint(entry));
            const auto [earlier, inserted] = name_lines.emplace(config_.endpoints.back().name, line_of(entry.Mark()));
            if (!inserted)
                fail(line_of(entry.Mark()), "the name is taken by the endpoint at line " + std::to_string(earlier->second));
            context_.clear();
        }
    }

    // The name comes first, whatever its place in the mapping, so that every
    // other mistake can say which endpoint it is in.
    Endpoint parse_endpoint(const YAML::Node &entry) {
        Endpoint endpoint;
        for (auto it = entry.begin(); it != entry.end(); ++it) {
            if (!it->first.IsScalar() || it->first.Scalar() != "name") continue;
            const int outer_key_line = current_key_line_;
            current_key_line_ = line_of(it->first.Mark());
            endpoint.name = string_value(it->second, "name");
            if (!valid_endpoint_name(endpoint.name))
                fail(it->second, "name " + shown(endpoint.name) + " must be 1 to 32 of a-z 0-9 _ -");
            current_key_line_ = outer_key_line;
            context_ = "endpoint \"" + endpoint.name + "\": ";
            break;
        }
        if (endpoint.name.empty()) fail(entry, "name is required");

        bool url_seen = false, secret_seen = false;
        int secret_line = 0;
        for_each_field(entry, "", [&](const std::string &name, const YAML::Node &value) {
            if (name == "name") {
                // read above
            } else if (name == "url") {
                endpoint.url = string_value(value, "url");
                const std::string problem = url_problem(endpoint.url);
                if (!problem.empty()) fail(value, problem);
                url_seen = true;
            } else if (name == "format") {
                const std::string format = string_value(value, "format");
                if (format == "json") endpoint.format = Endpoint::Format::json;
                else if (format == "slack") endpoint.format = Endpoint::Format::slack;
                else fail(value, "format must be json or slack, not " + shown(format));
            } else if (name == "secret" || name == "secrets") {
                if (secret_seen) fail(current_key_line_, "set secret or secrets, not both");
                secret_seen = true;
                secret_line = current_key_line_;
                if (name == "secret") {
                    if (!value.IsScalar()) fail(value, "secret must be a string (several go in secrets: [NEW, OLD])");
                    add_secret(endpoint, value, "secret");
                } else {
                    if (!value.IsSequence() || value.size() == 0)
                        fail(value, "secrets must be a list of at least one secret");
                    std::size_t index = 0;
                    for (const YAML::Node &secret : value)
                        add_secret(endpoint, secret, "secrets[" + std::to_string(++index) + "]");
                }
            } else if (name == "types") {
                for (const auto &[type, line] : string_list(value, "types")) {
                    if (!valid_event_type(type)) fail(line, "types: " + shown(type) + " is not an event type ([a-z_]{1,64})");
                    if (!endpoint.types.insert(type).second) fail(line, "types: " + shown(type) + " is listed twice");
                }
            } else if (name == "orgs") {
                for (const auto &[org, line] : string_list(value, "orgs")) {
                    if (!valid_id(org)) fail(line, "orgs: " + shown(org) + " " + kIdRule);
                    if (!endpoint.orgs.insert(org).second) fail(line, "orgs: " + shown(org) + " is listed twice");
                }
            } else {
                fail(current_key_line_, "unknown field " + shown(name) +
                                            " (expected name, url, format, secret, secrets, types, orgs)");
            }
        });
        const int entry_line = line_of(entry.Mark());
        if (!url_seen) fail(entry_line, "url is required");
        if (endpoint.format == Endpoint::Format::json && !secret_seen)
            fail(entry_line, "secret is required: a json endpoint is signed (whsec_ and base64)");
        if (endpoint.format == Endpoint::Format::slack && secret_seen)
            fail(secret_line, "a slack endpoint is not signed: remove its secret");
        return endpoint;
    }

    // The message never holds the secret, whatever is wrong with it.
    void add_secret(Endpoint &endpoint, const YAML::Node &node, const std::string &what) {
        try {
            if (!node.IsScalar()) throw std::invalid_argument("not a string");
            endpoint.keys.push_back(decode_secret(node.Scalar()));
        } catch (const std::invalid_argument &) {
            fail(node, what + " must start with whsec_ and hold base64");
        }
        endpoint.secrets.push_back(node.Scalar());
    }

    // A non-empty list of non-empty strings, each with its line.
    std::vector<std::pair<std::string, int>> string_list(const YAML::Node &node, const std::string &what) {
        if (!node.IsSequence() || node.size() == 0) fail(node, what + " must be a list of at least one name");
        std::vector<std::pair<std::string, int>> items;
        for (const YAML::Node &item : node) items.emplace_back(string_value(item, what + " entry"), line_of(item.Mark()));
        return items;
    }

    std::string file_;
    RelayConfig &config_;
    std::string context_;       // "endpoint \"billing\": " while in one
    int current_key_line_ = 0;  // line of the field whose value is being read
};

}  // namespace

std::optional<HostPort> parse_host_port(std::string_view text) {
    const std::size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    HostPort address;
    if (!parse_port(text.substr(colon + 1), address.port)) return std::nullopt;
    std::string_view host = text.substr(0, colon);
    if (!host.empty() && host.front() == '[') {
        if (host.size() < 2 || host.back() != ']' || !valid_v6_host(host.substr(1, host.size() - 2))) return std::nullopt;
        host = host.substr(1, host.size() - 2);
    } else if (!valid_host(host)) {
        return std::nullopt;
    }
    address.host = std::string(host);
    return address;
}

RelayConfig parse_relay_config(const std::string &text, const std::string &name_for_errors) {
    YAML::Node root;
    try {
        root = YAML::Load(text);
    } catch (const YAML::Exception &e) {
        throw RelayConfigError(name_for_errors, line_of(e.mark), "invalid YAML: " + e.msg);
    }
    RelayConfig config;
    try {
        RelayConfigParser(name_for_errors, config).parse_document(root);
    } catch (const RelayConfigError &) {
        throw;
    } catch (const YAML::Exception &e) {  // a conversion the checks above did not foresee
        throw RelayConfigError(name_for_errors, line_of(e.mark), e.msg);
    }
    return config;
}

RelayConfig load_relay_config(const std::string &path) {
    std::string why_not;
    std::optional<std::string> text = read_text_file(path, "the relay file", why_not);
    if (!text) throw RelayConfigError(path, 0, why_not);
    return parse_relay_config(*text, path);
}

}  // namespace spendcap::relay
