// The management API's key calls: create, list, read, revoke, limits, rotate,
// usage and budgets, and the self-service calls a key's own secret makes.
#include "admin/ops.h"

#include <algorithm>
#include <utility>

#include "admin/body.h"
#include "admin/ops_support.h"
#include "admin/render.h"
#include "admin/secret.h"
#include "base/digest.h"
#include "policy/limits_json.h"
#include "redis/keys.h"
#include "redis/script.h"

namespace spendcap::admin {

namespace {

ApiError revoked_conflict(const std::string &id) {
    return conflict("key `" + id + "` is revoked: a new secret for it would never work");
}

}  // namespace

std::optional<Command> Operation::key_create() {
    ApiError error;
    std::optional<KeyCreate> body = parse_key_create(body_, error);
    if (!body) return fail(error);
    const std::string id = body->id ? *body->id : new_key_id();
    if (file_key_by_id(policy_, id) != nullptr) return fail(conflict("key `" + id + "` exists (in the policy file)"));
    auto create = [this, id, body = *body](const std::string &org) -> std::optional<Command> {
        const std::string secret = new_secret();
        const std::string sha = sha256_hex(secret);
        // The secret's lookup first (a fresh secret: nobody presents it yet),
        // then the id (global, so a slot of its own), then the record.
        return then(eval(scripts::put_lookup(), {keys::key_lookup(sha)}, {org, id, body.project}),
                    [this, id, body, org, secret, sha](const Reply &) -> std::optional<Command> {
          return then(eval(scripts::claim_key_id(), {keys::key_id(id)}, {org}),
                    [this, id, body, org, secret, sha](const Reply &r) -> std::optional<Command> {
                        if (r.type != Reply::Type::integer || r.integer != 1)
                            return then(eval(scripts::undo_lookup(), {keys::key_lookup(sha)}, {}),
                                        [this, id](const Reply &) { return fail(conflict("key `" + id + "` exists")); });
                        const Pairs set{{"source", "api"}, {"project", body.project}, {"name", body.name},
                                        {"created_at", std::to_string(now_)}, {"expires_at", opt_time(body.expires_at)},
                                        {"revoked", "0"}, {"limits", limits_json(body.limits)}, {"sha256", sha}};
                        return then(eval(scripts::apply(),
                                         {keys::key_record(org, id), keys::config(org), keys::events(org), keys::api_keys(org)},
                                         apply_args("absent", id, "key_created",
                                                    {{"id", id}, {"project", body.project}}, set, {})),
                                    [this, id, org, secret, sha](const Reply &r2) -> std::optional<Command> {
                                        Fields record;
                                        bool existed = false;
                                        if (!applied(r2, record, existed)) {
                                            return then(eval(scripts::undo_lookup(), {keys::key_lookup(sha)}, {}),
                                                        [this, id](const Reply &) {
                                                            return fail(conflict("key `" + id + "` exists"));
                                                        });
                                        }
                                        change_ = "key_created " + id;
                                        return finish(201, render_key(key_view(nullptr, id, org, record), secret));
                                    });
                    });
                    });
    };
    return with_project_org(body->project, create);
}

std::optional<Command> Operation::keys_list() {
    auto project = route_.query.find("project");
    auto list = [this](const std::string &org, const std::string &only_project) -> std::optional<Command> {
        return then(eval(scripts::members(), {keys::api_keys(org)}, {}),
                    [this, org, only_project](const Reply &members) -> std::optional<Command> {
                        // the API's keys, then the file's of the org
                        std::vector<std::string> ids;
                        if (!members.is_array()) return fail(unavailable());
                        for (const Reply &m : members.elements) {
                            if (!m.is_string()) return fail(unavailable());
                            ids.push_back(m.str);
                        }
                        std::sort(ids.begin(), ids.end());
                        std::vector<std::string> file_ids;
                        for (const auto &entry : policy_.keys_by_sha256)
                            if (policy_.project_of(entry.second).org == org
                                && !std::binary_search(ids.begin(), ids.end(), entry.second.id))
                                file_ids.push_back(entry.second.id);
                        ids.insert(ids.end(), file_ids.begin(), file_ids.end());
                        std::vector<std::string> records;
                        for (const std::string &id : ids) records.push_back(keys::key_record(org, id));
                        return then(eval(scripts::hgetall_each(), std::move(records), {}),
                                    [this, org, only_project, ids](const Reply &r) -> std::optional<Command> {
                        if (r.type != Reply::Type::array || r.elements.size() != ids.size()) return fail(unavailable());
                        std::vector<KeyView> keys;
                        for (std::size_t i = 0; i < ids.size(); ++i) {
                            Fields record;
                            if (!fields_of(r.elements[i], record)) return fail(unavailable());
                            const std::string &id = ids[i];
                            const Key *file_key = file_key_by_id(policy_, id);
                            if (file_key == nullptr && record.empty()) continue;
                            KeyView view = key_view(file_key, id, org, record);
                            if (only_project.empty() || view.project == only_project) keys.push_back(std::move(view));
                        }
                        std::sort(keys.begin(), keys.end(),
                                  [](const KeyView &a, const KeyView &b) { return a.id < b.id; });
                        return finish(200, render_keys(keys));
                                    });
                    });
    };
    if (project != route_.query.end()) {
        const std::string p = project->second;
        return with_project_org(p, [list, p](const std::string &org) { return list(org, p); });
    }
    const std::string org = route_.query.count("org") ? route_.query.at("org") : "";
    return with_org(org, [list, org]() { return list(org, ""); });
}

std::optional<Command> Operation::key_get(const std::string &id) {
    return with_key(id, [this, id](const std::string &org, const Key *file_key) -> std::optional<Command> {
        return then(eval(scripts::hgetall(), {keys::key_record(org, id)}, {}),
                    [this, id, org, file_key](const Reply &r) -> std::optional<Command> {
                        Fields record;
                        if (!fields_of(r, record)) return fail(unavailable());
                        if (file_key == nullptr && record.empty()) return fail(not_found("no key `" + id + "`"));
                        return finish(200, render_key(key_view(file_key, id, org, record)));
                    });
    });
}

// Revocation and the limits' put and delete: one apply each. A change
// already made (a key revoked before, limits deleted with none set) answers
// the key as it is, with no audit event.
std::optional<Command> Operation::key_change(const std::string &id) {
    std::optional<Limits> limits;
    if (route_.call == Call::key_limits_put) {
        ApiError error;
        limits = parse_limits_put(body_, error);
        if (!limits) return fail(error);
    }
    return with_key(id, [this, id, limits](const std::string &org, const Key *file_key) -> std::optional<Command> {
        const bool revoke = route_.call == Call::key_revoke;
        if (revoke && file_key != nullptr && file_key->revoked) {
            return then(eval(scripts::hgetall(), {keys::key_record(org, id)}, {}),
                        [this, id, org, file_key](const Reply &r) -> std::optional<Command> {
                            Fields record;
                            if (!fields_of(r, record)) return fail(unavailable());
                            return finish(200, render_key(key_view(file_key, id, org, record)));
                        });
        }
        Pairs set;
        std::vector<std::string> del;
        std::pair<std::string, std::string> guard;
        if (revoke) {
            set.emplace_back("revoked", "1");
            guard = {"revoked", "1"};
        } else if (limits) {
            set.emplace_back("limits", limits_json(*limits));
        } else {
            del.push_back("limits");
            guard = {"limits", ""};
        }
        if (file_key != nullptr) set.emplace_back("source", "file");
        // The limits now in force: those put, else the file's (an API key: none).
        const std::string in_force = limits_json(limits ? *limits : file_key != nullptr ? file_key->limits : Limits{});
        const Pairs event = revoke ? Pairs{{"id", id}} : Pairs{{"scope", "key"}, {"id", id}, {"limits", in_force}};
        return then(eval(scripts::apply(), {keys::key_record(org, id), keys::config(org), keys::events(org)},
                         apply_args(file_key != nullptr ? "any" : "exists", "", revoke ? "key_revoked" : "limits_changed",
                                    event, set, del, guard)),
                    [this, id, org, file_key](const Reply &r) -> std::optional<Command> {
                        Fields record;
                        bool existed = false, changed = false;
                        if (!applied(r, record, existed, &changed)) return fail(not_found("no key `" + id + "`"));
                        if (changed) change_ = std::string(call_name(route_.call)) + " " + id;
                        return finish(200, render_key(key_view(file_key, id, org, record)));
                    });
    });
}

std::optional<Command> Operation::key_rotate(const std::string &id) {
    ApiError error;
    std::optional<Rotate> body = parse_rotate(body_, error);
    if (!body) return fail(error);
    const std::int64_t grace = body->grace_seconds;
    return with_key(id, [this, id, grace](const std::string &org, const Key *file_key) -> std::optional<Command> {
        // The project for the new secret's lookup: the record's, else the file's.
        return then(eval(scripts::hgetall(), {keys::key_record(org, id)}, {}),
                    [this, id, org, file_key, grace](const Reply &r) -> std::optional<Command> {
                        Fields record;
                        if (!fields_of(r, record)) return fail(unavailable());
                        if (file_key == nullptr && record.empty()) return fail(not_found("no key `" + id + "`"));
                        const KeyView view = key_view(file_key, id, org, record);
                        if (view.revoked) return fail(revoked_conflict(id));
                        const std::string project = view.project;
                        const std::string secret = new_secret();
                        const std::string sha = sha256_hex(secret);
                        return then(
                            eval(scripts::put_lookup(), {keys::key_lookup(sha)}, {org, id, project}),
                            [this, id, org, file_key, grace, secret, sha](const Reply &) -> std::optional<Command> {
                                return then(eval(scripts::rotate(),
                                                 {keys::key_record(org, id), keys::config(org), keys::events(org)},
                                                 {file_key != nullptr ? file_key->sha256 : "", sha,
                                                  std::to_string(now_ms_ + grace * 1000), id, std::to_string(grace),
                                                  file_key != nullptr ? "any" : "exists",
                                                  std::to_string((now_ms_ + grace * 1000 + 999) / 1000)}),
                                            [this, id, org, file_key, secret](const Reply &r2) -> std::optional<Command> {
                                                if (r2.type == Reply::Type::integer && r2.integer == -1)
                                                    return fail(revoked_conflict(id));
                                                Fields after;
                                                if (!fields_of(r2, after)) return fail(not_found("no key `" + id + "`"));
                                                change_ = "key_rotated " + id;
                                                return finish(200, render_key(key_view(file_key, id, org, after), secret));
                                            });
                            });
                    });
    });
}

std::optional<Command> Operation::key_usage(const std::string &id, bool budgets) {
    return with_key(id, [this, id, budgets](const std::string &org, const Key *file_key) -> std::optional<Command> {
        return with_identity(org, id, file_key != nullptr ? file_key->project : "", file_key,
                             [this, budgets](const Identity &identity) -> std::optional<Command> {
            if (budgets) return key_budgets(identity);
            const Periods p = periods_in_zone(identity.org.timezone, now_);
            const Identity copy = identity;
            return then(eval(scripts::mget(), usage_keys(identity.org.id, Scope::key, identity.key.id, p,
                                                         identity.key.limits), {}),
                        [this, copy, p](const Reply &r) -> std::optional<Command> {
                            if (r.type != Reply::Type::array || r.elements.size() != usage_key_count(copy.key.limits))
                                return fail(unavailable());
                            return finish(200, render_usage(usage_of(Scope::key, copy.key.id, copy.org.id,
                                                                     copy.key.limits, std::nullopt, r.elements, p)));
                        });
        });
    });
}

// Budgets: the key's, project's and org's spend counters, the org's cleared
// spend (a plan ceiling), its balance and held.
std::optional<Command> Operation::key_budgets(const Identity &identity) {
    const Periods p = periods_in_zone(identity.org.timezone, now_);
    const std::string &org = identity.org.id;
    const Limits org_limits = policy_.org_limits(identity.org);
    std::vector<std::string> keys = usage_keys(org, Scope::key, identity.key.id, p, identity.key.limits);
    for (const std::string &k : usage_keys(org, Scope::project, identity.project.id, p, identity.project.limits))
        keys.push_back(k);
    for (const std::string &k : usage_keys(org, Scope::org, org, p, org_limits)) keys.push_back(k);
    const std::size_t extra = keys.size();  // then cleared, balance, held
    keys.push_back(keys::cleared(org));
    keys.push_back(keys::balance(org));
    keys.push_back(keys::held(org));
    const Identity copy = identity;
    return then(eval(scripts::mget(), std::move(keys), {}),
                [this, copy, p, org_limits, extra](const Reply &r) -> std::optional<Command> {
        if (r.type != Reply::Type::array || r.elements.size() != extra + 3) return fail(unavailable());
        std::optional<Nanos> ceiling;
        if (const std::vector<CeilingRow> *rows = policy_.dynamic_ceiling(copy.org)) {
            const std::int64_t age = copy.org.created_at ? p.now - *copy.org.created_at : 0;
            ceiling = ceiling_for(*rows, std::max<Nanos>(to_int(r.elements[extra]), 0), age);
        }
        std::vector<Layer> layers;
        std::size_t at = 0;
        append_layers(usage_of(Scope::key, copy.key.id, copy.org.id, copy.key.limits, std::nullopt, r.elements, p, at),
                      layers);
        at += usage_key_count(copy.key.limits);
        append_layers(usage_of(Scope::project, copy.project.id, copy.org.id, copy.project.limits, std::nullopt,
                               r.elements, p, at),
                      layers);
        at += usage_key_count(copy.project.limits);
        append_layers(usage_of(Scope::org, copy.org.id, copy.org.id, org_limits, ceiling, r.elements, p, at), layers);
        if (copy.org.prepaid) {
            Layer l;
            l.scope = Scope::org;
            l.id = copy.org.id;
            l.window = "balance";
            const Nanos available = to_int(r.elements[extra + 1]), held = to_int(r.elements[extra + 2]);
            l.spent = held;
            l.cap = saturating_add(available, std::max<Nanos>(held, 0));
            l.remaining = std::max<Nanos>(available, 0);
            layers.push_back(l);
        }
        return finish(200, render_budgets(copy.key.id, layers));
    });
}

std::optional<Command> Operation::self_call() {
    const std::string sha = self_sha256_;
    auto go = [this, sha](const std::string &org, const std::string &id, const std::string &project,
                          const Key *file_key) -> std::optional<Command> {
        return with_records(org, id, project,
                    [this, sha, org, id, project, file_key](const OrgRecords &records,
                                                             const std::string &) -> std::optional<Command> {
                        std::optional<KeyLookup> lookup;
                        if (file_key == nullptr) lookup = KeyLookup{id, org, project};
                        Resolution found = resolve_identity(policy_, sha, file_key, lookup, "", records, now_ms_);
                        if (found.identity == nullptr || found.problem == IdentityProblem::revoked)
                            return fail(unauthorized());
                        if (route_.call == Call::self_get)
                            return finish(200, render_key(key_view(file_key, id, org, records.key)));
                        if (route_.call == Call::self_usage_daily) return usage_daily(Scope::key, id, org);
                        if (route_.call == Call::self_check) return key_check(id);
                        return key_usage(id, route_.call == Call::self_budgets);
                    });
    };
    if (sha.empty()) return fail(unauthorized());
    if (const Key *file_key = policy_.find_key(sha))
        return go(policy_.project_of(*file_key).org, file_key->id, file_key->project, file_key);
    return then(eval(scripts::hgetall(), {keys::key_lookup(sha)}, {}), [this, go](const Reply &r) -> std::optional<Command> {
        Fields fields;
        std::optional<KeyLookup> lookup;
        if (fields_of(r, fields)) lookup = parse_key_lookup(fields);
        if (!lookup) return fail(unauthorized());
        // a file key's rotated secret is still the file's key
        return go(lookup->org, lookup->id, lookup->project, policy_.find_key_by_id(lookup->id));
    });
}

}  // namespace spendcap::admin
