// The policy file (SPEC section 2): prices, orgs, projects, keys and their caps.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <unordered_map>

#include "money.h"
#include "periods.h"

namespace spendcap {

enum class Scope { key, project, org };

const char *scope_name(Scope s);  // "key", "project", "org" (Redis keys, x-spend-scope)
const char *scope_word(Scope s);  // "api key", "project", "account" (messages)

// Cost caps in nano-USD; absent = no cap in that window.
struct Limits {
    std::optional<Nanos> daily_usd;
    std::optional<Nanos> monthly_usd;
    std::optional<Nanos> lifetime_usd;

    const std::optional<Nanos> &cost_cap(Window w) const;
};

// Prices in nano-USD per million tokens.
struct ModelPrice {
    std::string name;
    Nanos input = 0;
    Nanos output = 0;
    std::optional<Nanos> cached_input;  // OpenAI cached prompt tokens
    std::optional<Nanos> cache_write;   // Anthropic cache_creation_input_tokens
    std::optional<Nanos> cache_read;    // Anthropic cache_read_input_tokens
    std::optional<std::int64_t> max_output_tokens;

    // The highest rate any input token can be billed at (input, cached_input,
    // cache_write, cache_read): what the worst-case estimate uses.
    Nanos max_input_rate() const;
};

struct Org {
    std::string id;
    Limits limits;
};

struct Project {
    std::string id;
    std::string org;
    Limits limits;
};

struct Key {
    std::string id;
    std::string sha256;   // lowercase hex, 64 chars
    std::string project;
    Limits limits;
    std::optional<std::int64_t> expires_at;  // unix seconds
    bool revoked = false;
};

struct Policy {
    std::string file;
    std::map<std::string, ModelPrice> models;
    std::string unknown_model = "reject";  // "reject" or a listed model's name
    std::int64_t default_max_output_tokens = 4096;
    std::map<std::string, Org> orgs;
    std::map<std::string, Project> projects;
    std::unordered_map<std::string, Key> keys_by_sha256;

    // The price to charge `model` at: the model itself, else the
    // `unknown_model` stand-in, else nullptr (reject: 400 model_not_priced).
    const ModelPrice *price_for(const std::string &model) const;
    // nullptr when no key has this hash (lowercase hex).
    const Key *find_key(const std::string &sha256_hex) const;
    // Both exist for any key of a loaded policy (validated at load).
    const Project &project_of(const Key &k) const;
    const Org &org_of(const Key &k) const;
};

// A bad policy file: names the file, the line (1-based, 0 if unknown) and the reason.
// what() is "FILE:LINE: REASON".
class PolicyError : public std::runtime_error {
public:
    PolicyError(std::string file, int line, std::string reason);
    const std::string &file() const { return file_; }
    int line() const { return line_; }
    const std::string &reason() const { return reason_; }

private:
    std::string file_;
    int line_;
    std::string reason_;
};

// Parses and validates policy YAML. Throws PolicyError for bad YAML, unknown
// fields, wrong types, bad prices or limits, malformed sha256, duplicate key
// ids or hashes, a key whose project or a project whose org is missing, and
// SPEC fields this version does not enforce yet (rather than ignoring a cap).
std::shared_ptr<const Policy> parse_policy(const std::string &yaml_text,
                                           const std::string &file_name);
// Reads the file (at configuration time only) and parses it.
std::shared_ptr<const Policy> load_policy_file(const std::string &path);

}  // namespace spendcap
