// What the management API keeps in Redis (SPEC section 7) and how a request
// reads it: key records, the overrides of keys, projects, orgs and customers,
// and each org's config version, which the reserve script checks so that a
// change holds for the very next request on every node.
//
// Layout (the README's Redis section says the same):
//   sc:key:SHA256               hash  id, org, project: which key a secret is (never changes)
//   sc:keyid:ID                 string  the org of API key ID (makes ids unique)
//   sc:project:ID               string  the org of API project ID
//   sc:orgs                     set   the orgs the API created (the sweeper visits them)
//   sc:{ORG}:config             string  the org's config version, INCR by every change
//   sc:{ORG}:key:ID             hash  source (api|file), project, name, created_at,
//                               expires_at, revoked, limits (JSON), sha256 (the current
//                               secret's), old_sha256 + old_until_ms (a rotation's grace;
//                               old_until in seconds, from before it was kept)
//   sc:{ORG}:keys               set   the org's API key ids
//   sc:{ORG}:project:ID         hash  source, limits
//   sc:{ORG}:projects           set   the org's API project ids
//   sc:{ORG}:org                hash  source, plan, created_at, prepaid, low_balance_usd, limits
//   sc:{ORG}:customer:ID        hash  limits
//   sc:{ORG}:topup:IDEMPOTENCY  string  "AMOUNT BALANCE_AFTER" of a top-up (replays answer it)
// A field present overrides the file's; `limits` replaces the entity's limits
// whole (a customer's: field by field over customers.default_limits, as the
// file's overrides do). Times are unix seconds, amounts nano-USD.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "policy/policy.h"
#include "redis/command.h"

namespace spendcap {

// A hash as HGETALL gives it.
using Fields = std::vector<std::pair<std::string, std::string>>;
const std::string *field(const Fields &fields, const std::string &name);
// A decimal int64 as Redis writes one ("-" sign, digits); false for anything
// else, overflow included.
bool parse_int64(const std::string &text, std::int64_t &out);

// HGETALL's flat array as pairs; false if it is not one.
bool fields_of(const Reply &reply, Fields &out);

// sc:key:SHA256 of an API key (or of a file key's rotated secret).
struct KeyLookup {
    std::string id, org, project;
};
std::optional<KeyLookup> parse_key_lookup(const Fields &fields);

// An org's records as one fetch read them, atomically, at one version ("" =
// the org was never changed through the API: none exist).
struct OrgRecords {
    std::string version;
    Fields key, project, org, customer;  // empty: no record
};
// org_records_command's reply; false when it is not one.
bool parse_org_records(const Reply &reply, OrgRecords &out);

// A request's key with everything that applies to it resolved: the file's
// entities with the org's records over them, at one config version.
struct Identity {
    std::uint64_t serial = 0;       // unique in the process (caches key on it)
    std::uint64_t policy_generation = 0;  // the file it was resolved with
    std::string version;            // the org's config version it was read at
    Key key;
    Project project;
    Org org;
    std::string customer;           // "" none
    Limits customer_limits;
    bool from_file = false;
    // The secret it was resolved for is a rotated one, accepted until then
    // (unix milliseconds): a cached identity must not outlive the grace.
    std::optional<std::int64_t> secret_until_ms;
};

enum class IdentityProblem { none, unknown, revoked, expired };

struct Resolution {
    IdentityProblem problem = IdentityProblem::none;
    std::shared_ptr<const Identity> identity;  // set unless unknown
    std::string reason;                        // for the log ("no project acme-x")
};

// Resolves the key whose secret hashes to `sha256`: `file_key` when the file
// has that hash, else `lookup` (sc:key:SHA256) names it. `records` were read
// for that key's org, key id, project and `customer`. A record's secret
// (rotation) decides over the file's: the presented hash must be the current
// one, or the old one within its grace. Unknown: neither names it, or the
// records do not (an API key whose record is gone, a rotated-away secret).
Resolution resolve_identity(const Policy &policy, const std::string &sha256, const Key *file_key,
                            const std::optional<KeyLookup> &lookup, const std::string &customer,
                            const OrgRecords &records, std::int64_t now_ms);

// The same for a file key when its org has no records (version ""): no
// Redis needed.
Resolution resolve_file_identity(const Policy &policy, const Key &file_key, const std::string &customer);

// The Redis commands the request path sends before a reserve when it lacks
// a key's records (the admin API reads them the same way): the lookup of a
// secret (global; reply: HGETALL's array), and the read of an org's records
// for a key (one slot; parse_org_records).
Command key_lookup_command(const std::string &sha256);
Command org_records_command(const std::string &org, const std::string &key_id, const std::string &project,
                            const std::string &customer);
// A sample of `n` orgs the API created (sc:orgs, which the file does not
// list), for the sweeper: sampling a few each second reaches all of them
// with bounded work. Reply: an array of org ids.
Command api_orgs_sample_command(int n);

// Per-worker caches of what the request path read, bounded whatever the
// traffic: identities by (secret hash, customer) and each org's last known
// config version (a reserve that finds another one says so, and the org's
// identities are then read again); secrets Redis did not know (each costs
// Redis one lookup a second at most); secrets Redis did know (immutable).
// Identities and lookups are hash maps that are emptied when full: a miss
// costs a round trip, so no two busy keys may evict each other as they
// would sharing a slot (the working set only has to fit); the unknown
// secrets are direct-mapped (a collision only costs another lookup).
class IdentityCache {
public:
    // Up to `capacity` identities (one per secret and customer), lookups, org
    // versions and unknown secrets each: with 16,384, about 30 MB per worker
    // when all are full (an identity is about 1.3 KB with its strings).
    explicit IdentityCache(std::size_t capacity = 16384, std::int64_t unknown_ttl_ms = 1000);

    // The identity cached for this secret and customer, if it was read at the
    // org's current version (for a file key with no record: version "") with
    // this policy file.
    std::shared_ptr<const Identity> find(const std::string &sha256, const std::string &customer,
                                         std::uint64_t policy_generation) const;
    void store(const std::string &sha256, std::shared_ptr<const Identity> identity);

    // The org's version as last seen; "" when never seen (assumed unchanged).
    const std::string &org_version(const std::string &org) const;
    void set_org_version(const std::string &org, const std::string &version);
    // A reserve found the org's version changed: everything of it is read again.
    void org_changed(const std::string &org);

    bool known_unknown(const std::string &sha256, std::int64_t now_ms) const;
    void remember_unknown(const std::string &sha256, std::int64_t now_ms);
    std::optional<KeyLookup> lookup(const std::string &sha256) const;
    void remember_lookup(const std::string &sha256, const KeyLookup &lookup);

    std::size_t identities() const { return identities_.size(); }
    std::size_t lookups() const { return lookups_.size(); }

private:
    struct UnknownSlot {
        std::string sha256;
        std::int64_t until_ms = 0;
    };
    std::size_t capacity_;
    std::unordered_map<std::string, std::shared_ptr<const Identity>> identities_;  // sha256 "\n" customer
    std::vector<UnknownSlot> unknown_;
    std::unordered_map<std::string, KeyLookup> lookups_;
    std::unordered_map<std::string, std::string> org_versions_;
    std::int64_t unknown_ttl_ms_;
};

// A fresh serial for an Identity.
std::uint64_t next_identity_serial();

}  // namespace spendcap
