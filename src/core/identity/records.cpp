// The management API's records as the request path reads them, and the
// per-worker caches that keep a known key at one round trip.
#include "identity/records.h"
#include "identity/validity.h"
#include "base/digest.h"

#include <atomic>
#include <functional>
#include <limits>

#include "policy/limits_json.h"
#include "redis/keys.h"
#include "redis/script.h"

namespace spendcap {

namespace {


// A record's `limits` (JSON as the API wrote it); false if it does not read.
bool read_record_limits(const Fields &fields, Limits &out) {
    const std::string *text = field(fields, "limits");
    if (text == nullptr) return true;
    std::string error;
    std::optional<Limits> limits = parse_limits(*text, error);
    if (!limits) return false;
    out = *limits;
    return true;
}

bool read_time(const Fields &fields, const char *name, std::optional<std::int64_t> &out) {
    const std::string *text = field(fields, name);
    if (text == nullptr) return true;
    if (text->empty()) {
        out.reset();
        return true;
    }
    std::int64_t v = 0;
    if (!parse_int64(*text, v)) return false;
    out = v;
    return true;
}

Resolution unknown(std::string reason) {
    Resolution r;
    r.problem = IdentityProblem::unknown;
    r.reason = std::move(reason);
    return r;
}

std::uint64_t mix(std::uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

}  // namespace

bool parse_int64(const std::string &text, std::int64_t &out) {
    const bool negative = !text.empty() && text[0] == '-';
    std::size_t i = negative ? 1 : 0;
    if (i == text.size()) return false;
    std::int64_t v = 0;
    for (; i < text.size(); ++i) {
        const char c = text[i];
        if (c < '0' || c > '9' || v > (std::numeric_limits<std::int64_t>::max() - (c - '0')) / 10) return false;
        v = v * 10 + (c - '0');
    }
    out = negative ? -v : v;
    return true;
}

const std::string *field(const Fields &fields, const std::string &name) {
    for (const auto &f : fields)
        if (f.first == name) return &f.second;
    return nullptr;
}

bool fields_of(const Reply &r, Fields &out) {
    if (!r.is_array() || r.elements.size() % 2 != 0) return false;
    out.reserve(out.size() + r.elements.size() / 2);
    for (std::size_t i = 0; i < r.elements.size(); i += 2) {
        if (!r.elements[i].is_string() || !r.elements[i + 1].is_string()) return false;
        out.emplace_back(r.elements[i].str, r.elements[i + 1].str);
    }
    return true;
}

bool parse_org_records(const Reply &r, OrgRecords &out) {
    return r.is_array() && r.elements.size() == 5 && r.elements[0].is_string()
           && (out.version = r.elements[0].str, fields_of(r.elements[1], out.key))
           && fields_of(r.elements[2], out.project) && fields_of(r.elements[3], out.org)
           && fields_of(r.elements[4], out.customer);
}

std::optional<KeyLookup> parse_key_lookup(const Fields &fields) {
    const std::string *id = field(fields, "id"), *org = field(fields, "org"), *project = field(fields, "project");
    if (id == nullptr || org == nullptr || project == nullptr || !valid_id(*id) || !valid_id(*org)
        || !valid_id(*project))
        return std::nullopt;
    return KeyLookup{*id, *org, *project};
}

std::uint64_t next_identity_serial() {
    static std::atomic<std::uint64_t> serial{0};
    return ++serial;
}

namespace {

// Which key the secret is: the file's (`file_key`, or the file key a lookup
// names: a file key's rotated secret is found through its lookup, still the
// file's key, with its limits and expiry; the record decides the secret),
// else the API key the lookup names. Sets the key and its org's id; false
// when neither names one.
bool name_the_key(const Policy &policy, const std::string &sha256, const Key *file_key,
                  const std::optional<KeyLookup> &lookup, Identity &id, std::string &org_id) {
    if (file_key == nullptr && lookup) file_key = policy.find_key_by_id(lookup->id);
    if (file_key != nullptr) {
        id.key = *file_key;
        id.from_file = true;
        org_id = policy.project_of(*file_key).org;
    } else if (lookup) {
        id.key.id = lookup->id;
        id.key.project = lookup->project;
        id.key.sha256 = sha256;
        org_id = lookup->org;
    } else {
        return false;
    }
    return true;
}

// The key's record over it: whether the presented secret is its current
// one, or its old one within the grace (then until when); its limits,
// expiry and revocation. The reason the key is unknown, or nullopt.
std::optional<std::string> read_key_record(const Fields &kr, const std::string &sha256, std::int64_t now_ms,
                                           Identity &id) {
    // An API key exists only while its record does.
    if (!id.from_file && kr.empty()) return "key " + id.key.id + " has no record";
    const std::string *current = field(kr, "sha256");
    if (current != nullptr && *current != sha256) {
        // The grace's end in milliseconds (old_until_ms); a record rotated
        // before it was kept has whole seconds only (old_until).
        const std::string *old = field(kr, "old_sha256");
        std::int64_t until_ms = 0;
        const std::string *ms_text = field(kr, "old_until_ms");
        const std::string *s_text = field(kr, "old_until");
        bool until_read = false;
        if (ms_text != nullptr) {
            until_read = parse_int64(*ms_text, until_ms);
        } else if (s_text != nullptr && parse_int64(*s_text, until_ms)) {
            until_read = until_ms <= std::numeric_limits<std::int64_t>::max() / 1000;
            until_ms *= 1000;
        }
        if (old == nullptr || *old != sha256 || !until_read)
            return "a secret of key " + id.key.id + " that was rotated away";
        id.secret_until_ms = until_ms;
        // key_standing judges the secret before anything else, so this is
        // the grace's end alone (now_ms >= until_ms), whatever else is read yet.
        if (key_standing(id, now_ms) == KeyStanding::grace_over)
            return "a secret of key " + id.key.id + " that was rotated away";
    }
    if (!read_record_limits(kr, id.key.limits) || !read_time(kr, "expires_at", id.key.expires_at))
        return "the record of key " + id.key.id + " does not read";
    if (const std::string *revoked = field(kr, "revoked")) id.key.revoked = id.key.revoked || *revoked == "1";
    return std::nullopt;
}

// Its project: the file's, or the API's; a record's limits replace the
// file's. The reason the key is unknown, or nullopt.
std::optional<std::string> resolve_project(const Policy &policy, const OrgRecords &records,
                                           const std::string &org_id, Identity &id) {
    auto file_project = policy.projects.find(id.key.project);
    if (file_project != policy.projects.end()) {
        id.project = file_project->second;
    } else if (!records.project.empty()) {
        id.project.id = id.key.project;
        id.project.org = org_id;
    } else {
        return "project " + id.key.project + " of key " + id.key.id + " does not exist";
    }
    if (id.project.org != org_id) return "key " + id.key.id + " names another org than its project";
    if (!read_record_limits(records.project, id.project.limits))
        return "the record of project " + id.project.id + " does not read";
    return std::nullopt;
}

// Its org: likewise, every field of a record over the file's. The reason
// the key is unknown, or nullopt.
std::optional<std::string> resolve_org(const Policy &policy, const Fields &orr, const std::string &org_id,
                                       Identity &id) {
    auto file_org = policy.orgs.find(org_id);
    if (file_org != policy.orgs.end()) {
        id.org = file_org->second;
    } else if (!orr.empty()) {
        id.org.id = org_id;
    } else {
        return "org " + org_id + " of key " + id.key.id + " does not exist";
    }
    if (const std::string *plan = field(orr, "plan")) id.org.plan = *plan;
    if (const std::string *prepaid = field(orr, "prepaid")) id.org.prepaid = *prepaid == "1";
    if (const std::string *zone = field(orr, "timezone")) id.org.timezone = *zone;
    if (const std::string *low = field(orr, "low_balance")) {
        std::int64_t v = 0;
        if (low->empty()) id.org.low_balance_usd.reset();
        else if (parse_int64(*low, v)) id.org.low_balance_usd = v;
        else return "the record of org " + org_id + " does not read";
    }
    if (!read_time(orr, "created_at", id.org.created_at) || !read_record_limits(orr, id.org.limits))
        return "the record of org " + org_id + " does not read";
    return std::nullopt;
}

// A resolved key as key_standing judges it at now_ms. A secret whose grace
// is over never gets here (read_key_record found it unknown).
Resolution judged(std::shared_ptr<Identity> id, std::int64_t now_ms) {
    Resolution r;
    switch (key_standing(*id, now_ms)) {
    case KeyStanding::valid: r.problem = IdentityProblem::none; break;
    case KeyStanding::revoked: r.problem = IdentityProblem::revoked; break;
    case KeyStanding::expired: r.problem = IdentityProblem::expired; break;
    case KeyStanding::grace_over: return unknown("a secret of key " + id->key.id + " that was rotated away");
    }
    r.identity = std::move(id);
    return r;
}

}  // namespace

Resolution resolve_identity(const Policy &policy, const std::string &sha256, const Key *file_key,
                            const std::optional<KeyLookup> &lookup, const std::string &customer,
                            const OrgRecords &records, std::int64_t now_ms) {
    auto id = std::make_shared<Identity>();
    id->version = records.version;
    id->customer = customer;
    std::string org_id;
    if (!name_the_key(policy, sha256, file_key, lookup, *id, org_id)) return unknown("no key has this secret");
    if (std::optional<std::string> why = read_key_record(records.key, sha256, now_ms, *id)) return unknown(*why);
    if (std::optional<std::string> why = resolve_project(policy, records, org_id, *id)) return unknown(*why);
    if (std::optional<std::string> why = resolve_org(policy, records.org, org_id, *id)) return unknown(*why);

    if (!customer.empty()) {
        id->customer_limits = policy.customers.limits_for(customer);
        if (const std::string *text = field(records.customer, "limits")) {
            std::string error;
            std::optional<Limits> limits = parse_limits(*text, error);
            if (!limits) return unknown("the record of customer " + customer + " does not read");
            id->customer_limits = limits->or_else(policy.customers.default_limits);
        }
    }
    id->serial = next_identity_serial();
    id->policy_generation = policy.generation;
    return judged(std::move(id), now_ms);
}

Resolution resolve_file_identity(const Policy &policy, const Key &file_key, const std::string &customer) {
    auto id = std::make_shared<Identity>();
    id->key = file_key;
    id->from_file = true;
    id->project = policy.project_of(file_key);
    id->org = policy.org_of(file_key);
    id->customer = customer;
    if (!customer.empty()) id->customer_limits = policy.customers.limits_for(customer);
    id->serial = next_identity_serial();
    id->policy_generation = policy.generation;
    Resolution r;
    r.identity = std::move(id);
    return r;
}

Command key_lookup_command(const std::string &sha256) {
    return eval(scripts::hgetall(), {keys::key_lookup(sha256)}, {});
}

Command org_records_command(const std::string &org, const std::string &key_id, const std::string &project,
                            const std::string &customer) {
    std::vector<std::string> records{keys::config(org), keys::key_record(org, key_id),
                                     keys::project_record(org, project), keys::org_record(org)};
    if (!customer.empty()) records.push_back(keys::customer_record(org, customer));
    return eval(scripts::org_records(), std::move(records), {});
}

Command api_orgs_sample_command(int n) { return eval(scripts::api_orgs_sample(), {keys::api_orgs()}, {std::to_string(n)}); }

IdentityCache::IdentityCache(std::size_t capacity, std::int64_t unknown_ttl_ms)
    : capacity_(std::max<std::size_t>(capacity, 1)), unknown_(capacity_), unknown_ttl_ms_(unknown_ttl_ms) {}

namespace {

std::string identity_key(const std::string &sha256, const std::string &customer) {
    return sha256 + '\n' + customer;  // neither holds a newline
}

std::size_t slot_of(const std::string &sha256, std::size_t slots) {
    return mix(std::hash<std::string>()(sha256)) % slots;
}

// Bounded: emptied when full (a cache, so nothing is lost but round trips).
template <typename Map>
void make_room(Map &map, const std::string &key, std::size_t capacity) {
    if (map.size() >= capacity && map.find(key) == map.end()) map.clear();
}

}  // namespace

std::shared_ptr<const Identity> IdentityCache::find(const std::string &sha256, const std::string &customer,
                                                    std::uint64_t policy_generation) const {
    auto found = identities_.find(identity_key(sha256, customer));
    if (found == identities_.end()) return nullptr;
    const std::shared_ptr<const Identity> &identity = found->second;
    if (identity->policy_generation != policy_generation || identity->version != org_version(identity->org.id))
        return nullptr;
    return identity;
}

void IdentityCache::store(const std::string &sha256, std::shared_ptr<const Identity> identity) {
    std::string key = identity_key(sha256, identity->customer);
    make_room(identities_, key, capacity_);
    identities_[std::move(key)] = std::move(identity);
}

const std::string &IdentityCache::org_version(const std::string &org) const {
    static const std::string kNever;
    auto found = org_versions_.find(org);
    return found != org_versions_.end() ? found->second : kNever;
}

void IdentityCache::set_org_version(const std::string &org, const std::string &version) {
    // forgetting a version only costs a stale reserve and a read
    make_room(org_versions_, org, capacity_);
    org_versions_[org] = version;
}

void IdentityCache::org_changed(const std::string &org) {
    // No version Redis writes (an integer) matches this: every identity of
    // the org is read again, file keys too.
    set_org_version(org, "changed");
}

bool IdentityCache::known_unknown(const std::string &sha256, std::int64_t now_ms) const {
    const UnknownSlot &slot = unknown_[slot_of(sha256, unknown_.size())];
    return slot.sha256 == sha256 && now_ms < slot.until_ms;
}

void IdentityCache::remember_unknown(const std::string &sha256, std::int64_t now_ms) {
    UnknownSlot &slot = unknown_[slot_of(sha256, unknown_.size())];
    slot.sha256 = sha256;
    slot.until_ms = now_ms + unknown_ttl_ms_;
}

std::optional<KeyLookup> IdentityCache::lookup(const std::string &sha256) const {
    auto found = lookups_.find(sha256);
    if (found == lookups_.end()) return std::nullopt;
    return found->second;
}

void IdentityCache::remember_lookup(const std::string &sha256, const KeyLookup &lookup) {
    make_room(lookups_, sha256, capacity_);
    lookups_[sha256] = lookup;
}

}  // namespace spendcap
