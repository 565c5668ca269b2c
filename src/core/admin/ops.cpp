// The management API's calls, each a few Redis commands (admin_ops.h).
#include "admin/ops.h"
#include "base/digest.h"

#include <algorithm>
#include <limits>

#include "admin/body.h"
#include "admin/secret.h"
#include "http/envelope.h"
#include "accounting/ledger.h"
#include "policy/limits_json.h"
#include "redis/keys.h"
#include "redis/script.h"

namespace spendcap::admin {

namespace {

// apply_script's reply: false when its precondition failed (or it is malformed).
// `changed` false: its guard found the change already made (no event).
bool applied(const Reply &r, Fields &fields, bool &existed, bool *changed = nullptr) {
    if (r.type != Reply::Type::array || r.elements.size() != 3 || r.elements[0].type != Reply::Type::integer
        || r.elements[2].type != Reply::Type::integer)
        return false;
    existed = r.elements[0].integer == 1;
    if (changed != nullptr) *changed = r.elements[2].integer == 1;
    return fields_of(r.elements[1], fields);
}

using Pairs = std::vector<std::pair<std::string, std::string>>;

constexpr const char *kLastStreamId = "18446744073709551615-18446744073709551615";

ApiError file_owned(const char *what, const char *path, const std::string &id) {
    return conflict(std::string(what) + " `" + id + "` is in the policy file, which owns it: override its limits "
                    "with PUT /" + path + "/" + id + "/limits");
}

ApiError revoked_conflict(const std::string &id) {
    return conflict("key `" + id + "` is revoked: a new secret for it would never work");
}

// apply_script's ARGV: the audit event gets `by: api` after `event`'s fields.
// `guard`: the field and value that say the change is already made.
std::vector<std::string> apply_args(const char *need, const std::string &member, const char *type,
                                    const Pairs &event, const Pairs &set, const std::vector<std::string> &del,
                                    const std::pair<std::string, std::string> &guard = {}) {
    std::vector<std::string> args{need, member, type, std::to_string(event.size() + 1)};
    for (const auto &f : event) {
        args.push_back(f.first);
        args.push_back(f.second);
    }
    args.push_back("by");
    args.push_back("api");
    args.push_back(std::to_string(set.size()));
    for (const auto &f : set) {
        args.push_back(f.first);
        args.push_back(f.second);
    }
    args.push_back(std::to_string(del.size()));
    for (const auto &d : del) args.push_back(d);
    args.push_back(guard.first);
    args.push_back(guard.second);
    return args;
}

// A counter's value: nil is 0; anything else not an integer reads as 0 too
// (the request path refuses to count on it; a read should still answer).
std::int64_t to_int(const std::string &text) {
    std::int64_t v = 0;
    return parse_int64(text, v) ? v : 0;
}

std::int64_t to_int(const Reply &r) {
    if (r.type == Reply::Type::integer) return r.integer;
    return r.type == Reply::Type::string ? to_int(r.str) : 0;
}

std::optional<std::int64_t> time_field(const Fields &f, const char *name) {
    const std::string *t = field(f, name);
    if (t == nullptr || t->empty()) return std::nullopt;
    return to_int(*t);
}

std::string opt_time(const std::optional<std::int64_t> &t) { return t ? std::to_string(*t) : ""; }

// The counters of one scope that usage reads, in this order: spend d, m,
// life; requests d, m; tokens d, m; rpm; tpm.
std::vector<std::string> usage_keys(const std::string &org, Scope scope, const std::string &id, const Periods &p) {
    std::vector<std::string> out;
    for (Window w : {Window::daily, Window::monthly, Window::lifetime})
        out.push_back(keys::counter(org, keys::Measure::spend, scope, id, window_suffix(p, w)));
    for (Window w : {Window::daily, Window::monthly})
        out.push_back(keys::counter(org, keys::Measure::requests, scope, id, window_suffix(p, w)));
    for (Window w : {Window::daily, Window::monthly})
        out.push_back(keys::counter(org, keys::Measure::tokens, scope, id, window_suffix(p, w)));
    out.push_back(keys::rate(org, scope, id, "rpm", p.minute));
    out.push_back(keys::rate(org, scope, id, "tpm", p.minute));
    return out;
}

UsageView usage_of(Scope scope, const std::string &id, const std::string &org, const Limits &limits,
                   std::optional<Nanos> monthly_cap, const std::vector<Reply> &values, const Periods &p) {
    UsageView u;
    u.scope = scope;
    u.id = id;
    u.org = org;
    const Window windows[] = {Window::daily, Window::monthly, Window::lifetime};
    for (int i = 0; i < 3; ++i) {
        WindowUsage w;
        w.window = windows[i];
        w.period = i == 0 ? p.day : i == 1 ? p.month : "";
        w.reset_at = window_reset(p, windows[i]);
        w.spent = to_int(values[static_cast<std::size_t>(i)]);
        w.cap = limits.cost_cap(windows[i]);
        if (i == 1 && monthly_cap) w.cap = monthly_cap;
        if (i < 2) {
            w.requests = to_int(values[static_cast<std::size_t>(3 + i)]);
            w.requests_cap = limits.request_cap(windows[i]);
            w.tokens = to_int(values[static_cast<std::size_t>(5 + i)]);
            w.tokens_cap = limits.token_cap(windows[i]);
        }
        u.windows.push_back(w);
    }
    u.rpm = RateUsage{to_int(values[7]), limits.rpm, p.minute_reset};
    u.tpm = RateUsage{to_int(values[8]), limits.tpm, p.minute_reset};
    return u;
}

// A JSON string of any bytes (ids may hold quotes).
std::string json_quoted(const std::string &text) {
    std::string out;
    append_json_string(out, text);
    return out;
}

Nanos remaining(Nanos cap, Nanos spent) {
    if (spent <= 0) return cap;
    return cap > spent ? cap - spent : 0;
}

}  // namespace

const Key *file_key_by_id(const Policy &policy, const std::string &id) { return policy.find_key_by_id(id); }

KeyView key_view(const Key *file_key, const std::string &id, const std::string &org, const Fields &record) {
    KeyView v;
    v.id = id;
    v.org = org;
    if (file_key != nullptr) {
        v.project = file_key->project;
        v.limits = file_key->limits;
        v.expires_at = file_key->expires_at;
        v.revoked = file_key->revoked;
        v.from_file = true;
    }
    if (const std::string *project = field(record, "project")) v.project = *project;
    if (const std::string *name = field(record, "name")) v.name = *name;
    if (const std::string *limits = field(record, "limits")) {
        std::string ignored;
        if (std::optional<Limits> parsed = parse_limits(*limits, ignored)) v.limits = *parsed;
    }
    if (field(record, "expires_at") != nullptr) v.expires_at = time_field(record, "expires_at");
    if (const std::string *revoked = field(record, "revoked")) v.revoked = v.revoked || *revoked == "1";
    v.created_at = time_field(record, "created_at");
    return v;
}

std::optional<ProjectView> project_view(const Policy &policy, const std::string &id, const std::string &org,
                                        const Fields &record) {
    ProjectView v;
    v.id = id;
    v.org = org;
    auto file = policy.projects.find(id);
    if (file != policy.projects.end()) {
        v.org = file->second.org;
        v.limits = file->second.limits;
        v.from_file = true;
    } else if (record.empty()) {
        return std::nullopt;
    }
    if (const std::string *limits = field(record, "limits")) {
        std::string ignored;
        if (std::optional<Limits> parsed = parse_limits(*limits, ignored)) v.limits = *parsed;
    }
    return v;
}

std::optional<OrgView> org_view(const Policy &policy, const std::string &id, const Fields &record, Nanos cleared) {
    OrgView v;
    v.id = id;
    v.cleared = cleared;
    auto file = policy.orgs.find(id);
    if (file != policy.orgs.end()) {
        v.plan = file->second.plan;
        v.created_at = file->second.created_at;
        v.prepaid = file->second.prepaid;
        v.low_balance_usd = file->second.low_balance_usd;
        v.limits = file->second.limits;
        v.from_file = true;
    } else if (record.empty()) {
        return std::nullopt;
    }
    if (const std::string *plan = field(record, "plan")) v.plan = *plan;
    if (field(record, "created_at") != nullptr) v.created_at = time_field(record, "created_at");
    if (const std::string *prepaid = field(record, "prepaid")) v.prepaid = *prepaid == "1";
    if (field(record, "low_balance") != nullptr) v.low_balance_usd = time_field(record, "low_balance");
    if (const std::string *limits = field(record, "limits")) {
        std::string ignored;
        if (std::optional<Limits> parsed = parse_limits(*limits, ignored)) v.limits = *parsed;
    }
    return v;
}

Operation::Operation(const Policy &policy, Route route, std::string body, std::int64_t now_ms,
                     std::string self_sha256)
    : policy_(policy), route_(std::move(route)), body_(std::move(body)), now_ms_(now_ms), now_(now_ms / 1000),
      self_sha256_(std::move(self_sha256)) {}

std::optional<Command> Operation::then(Command command, Step step) {
    step_ = std::move(step);
    return command;
}

std::optional<Command> Operation::finish(int status, std::string body) {
    step_ = nullptr;
    response_.status = status;
    response_.body = std::move(body);
    return std::nullopt;
}

std::optional<Command> Operation::fail(const ApiError &error) {
    response_.allow = error.allow;
    return finish(error.status, render_error(error));
}

std::optional<Command> Operation::start() {
    try {
        return dispatch();
    } catch (const std::bad_alloc &) {
        throw;
    } catch (const std::exception &e) {
        return fail(invalid_request(e.what()));
    }
}

std::optional<Command> Operation::next(const Reply &reply) {
    if (!step_) return fail(unavailable());
    if (reply.type == Reply::Type::error) return fail(unavailable());
    Step step = std::move(step_);
    step_ = nullptr;
    try {
        return step(reply);
    } catch (const std::bad_alloc &) {
        throw;
    } catch (const std::exception &e) {
        return fail(invalid_request(e.what()));
    }
}

std::optional<Command> Operation::dispatch() {
    const std::string &id = route_.id;
    switch (route_.call) {
    case Call::key_create: return key_create();
    case Call::keys_list: return keys_list();
    case Call::key_get: return key_get(id);
    case Call::key_revoke:
    case Call::key_limits_put:
    case Call::key_limits_delete: return key_change(id);
    case Call::key_rotate: return key_rotate(id);
    case Call::key_usage: return key_usage(id, false);
    case Call::key_budgets: return key_usage(id, true);
    case Call::self_get:
    case Call::self_usage:
    case Call::self_budgets: return self_call();
    case Call::project_put:
    case Call::project_get:
    case Call::project_usage:
    case Call::project_limits_put:
    case Call::project_limits_delete: return project_call();
    case Call::org_put:
    case Call::org_get:
    case Call::org_usage:
    case Call::org_limits_put:
    case Call::org_limits_delete: return org_call();
    case Call::customer_usage:
    case Call::customer_limits_put:
    case Call::customer_limits_delete: return customer_call();
    case Call::balance_get: return balance_get();
    case Call::topup: return topup();
    case Call::cleared_put: return cleared_put();
    case Call::events_get: return events_get();
    }
    return fail(not_found("no such call"));
}

// The org of key `id`: the file's, or the API's index.
std::optional<Command> Operation::with_key(
    const std::string &id, std::function<std::optional<Command>(const std::string &org, const Key *file_key)> k) {
    if (const Key *file_key = file_key_by_id(policy_, id)) return k(policy_.project_of(*file_key).org, file_key);
    return then(eval(scripts::get(), {keys::key_id(id)}, {}), [this, id, k](const Reply &r) -> std::optional<Command> {
        if (r.type != Reply::Type::string || !valid_id(r.str)) return fail(not_found("no key `" + id + "`"));
        return k(r.str, nullptr);
    });
}

// The org of project `id`: the file's, or the API's index.
std::optional<Command> Operation::with_project_org(const std::string &id,
                                                   std::function<std::optional<Command>(const std::string &org)> k) {
    auto file = policy_.projects.find(id);
    if (file != policy_.projects.end()) return k(file->second.org);
    return then(eval(scripts::get(), {keys::project_index(id)}, {}),
                [this, id, k](const Reply &r) -> std::optional<Command> {
                    if (r.type != Reply::Type::string || !valid_id(r.str))
                        return fail(not_found("no project `" + id + "`"));
                    return k(r.str);
                });
}

// Org `id` exists: in the file, or as a record.
std::optional<Command> Operation::with_org(const std::string &id, std::function<std::optional<Command>()> k) {
    if (policy_.orgs.count(id) != 0) return k();
    return then(eval(scripts::hgetall(), {keys::org_record(id)}, {}),
                [this, id, k](const Reply &r) -> std::optional<Command> {
                    if (r.type != Reply::Type::array || r.elements.empty())
                        return fail(not_found("no org `" + id + "`"));
                    return k();
                });
}

// The org's records for a key as the request path reads them
// (org_records_command), its own record first for the project it names.
std::optional<Command> Operation::with_records(const std::string &org, const std::string &key_id,
                                               const std::string &file_project, RecordsStep k) {
    return then(eval(scripts::hgetall(), {keys::key_record(org, key_id)}, {}),
                [this, org, key_id, file_project, k](const Reply &r) -> std::optional<Command> {
                    Fields key;
                    if (!fields_of(r, key)) return fail(unavailable());
                    const std::string *named = field(key, "project");
                    const std::string project = named != nullptr ? *named : file_project;
                    return then(org_records_command(org, key_id, project, ""),
                                [this, project, k](const Reply &r2) -> std::optional<Command> {
                                    OrgRecords records;
                                    if (!parse_org_records(r2, records)) return fail(unavailable());
                                    return k(records, project);
                                });
                });
}

// A key's identity as a request of it would see it now (no customer).
std::optional<Command> Operation::with_identity(const std::string &org, const std::string &key_id,
                                                const std::string &file_project, const Key *file_key,
                                                std::function<std::optional<Command>(const Identity &)> k) {
    return with_records(org, key_id, file_project,
                        [this, org, key_id, file_key, k](const OrgRecords &records,
                                                         const std::string &project) -> std::optional<Command> {
                            const std::string *sha = field(records.key, "sha256");
                            const std::string presented =
                                sha != nullptr ? *sha : file_key != nullptr ? file_key->sha256 : "";
                            std::optional<KeyLookup> lookup;
                            if (file_key == nullptr) lookup = KeyLookup{key_id, org, project};
                            Resolution found =
                                resolve_identity(policy_, presented, file_key, lookup, "", records, now_ms_);
                            if (found.identity == nullptr)
                                return fail(not_found("key `" + key_id + "`: " + found.reason));
                            return k(*found.identity);
                        });
}

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
            const Periods p = periods_at(now_);
            const std::string &org = identity.org.id;
            std::vector<std::string> keys = usage_keys(org, Scope::key, identity.key.id, p);
            if (!budgets) {
                const Identity copy = identity;
                return then(eval(scripts::mget(), std::move(keys), {}),
                            [this, copy, p](const Reply &r) -> std::optional<Command> {
                                if (r.type != Reply::Type::array || r.elements.size() != 9) return fail(unavailable());
                                return finish(200, render_usage(usage_of(Scope::key, copy.key.id, copy.org.id,
                                                                         copy.key.limits, std::nullopt, r.elements, p)));
                            });
            }
            // Budgets: the key's, project's and org's spend counters, the
            // org's cleared spend (a plan ceiling), its balance and held.
            std::vector<std::string> project_keys = usage_keys(org, Scope::project, identity.project.id, p);
            std::vector<std::string> org_keys = usage_keys(org, Scope::org, org, p);
            keys.resize(3);
            keys.insert(keys.end(), project_keys.begin(), project_keys.begin() + 3);
            keys.insert(keys.end(), org_keys.begin(), org_keys.begin() + 3);
            keys.push_back(keys::cleared(org));
            keys.push_back(keys::balance(org));
            keys.push_back(keys::held(org));
            const Identity copy = identity;
            return then(eval(scripts::mget(), std::move(keys), {}), [this, copy, p](const Reply &r) -> std::optional<Command> {
                if (r.type != Reply::Type::array || r.elements.size() != 12) return fail(unavailable());
                std::vector<Layer> layers;
                const Window windows[] = {Window::daily, Window::monthly, Window::lifetime};
                Limits org_limits = policy_.org_limits(copy.org);
                if (const std::vector<CeilingRow> *rows = policy_.dynamic_ceiling(copy.org)) {
                    const std::int64_t age = copy.org.created_at ? p.now - *copy.org.created_at : 0;
                    org_limits.monthly_usd = ceiling_for(*rows, std::max<Nanos>(to_int(r.elements[9]), 0), age);
                }
                struct Of {
                    Scope scope;
                    std::string id;
                    Limits limits;
                } scopes[] = {{Scope::key, copy.key.id, copy.key.limits},
                              {Scope::project, copy.project.id, copy.project.limits},
                              {Scope::org, copy.org.id, org_limits}};
                for (int s = 0; s < 3; ++s) {
                    for (int w = 0; w < 3; ++w) {
                        const std::optional<Nanos> &cap = scopes[s].limits.cost_cap(windows[w]);
                        if (!cap) continue;
                        Layer l;
                        l.scope = scopes[s].scope;
                        l.id = scopes[s].id;
                        l.window = window_name(windows[w]);
                        l.cap = *cap;
                        l.spent = to_int(r.elements[static_cast<std::size_t>(3 * s + w)]);
                        l.remaining = remaining(l.cap, l.spent);
                        l.reset_at = window_reset(p, windows[w]);
                        layers.push_back(l);
                    }
                }
                if (copy.org.prepaid) {
                    Layer l;
                    l.scope = Scope::org;
                    l.id = copy.org.id;
                    l.window = "balance";
                    const Nanos available = to_int(r.elements[10]), held = to_int(r.elements[11]);
                    l.spent = held;
                    l.cap = saturating_add(available, std::max<Nanos>(held, 0));
                    l.remaining = std::max<Nanos>(available, 0);
                    layers.push_back(l);
                }
                return finish(200, render_budgets(copy.key.id, layers));
            });
        });
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

std::optional<Command> Operation::project_call() {
    const std::string id = route_.id;
    const Call call = route_.call;
    if (call == Call::project_put) {
        ApiError error;
        std::optional<ProjectPut> body = parse_project_put(body_, error);
        if (!body) return fail(error);
        // The file owns its projects; their limits are overridden with PUT .../limits.
        if (policy_.projects.count(id) != 0) return fail(file_owned("project", "projects", id));
        const std::string org = body->org;
        const Limits limits = body->limits;
        return with_org(org, [this, id, org, limits]() -> std::optional<Command> {
            return then(eval(scripts::project_index(), {keys::project_index(id)}, {org}),
                        [this, id, org, limits](const Reply &r) -> std::optional<Command> {
                            if (r.type != Reply::Type::string) return fail(unavailable());
                            if (!r.str.empty())
                                return fail(conflict("project `" + id + "` belongs to org `" + r.str + "`"));
                            return then(eval(scripts::apply(),
                                             {keys::project_record(org, id), keys::config(org), keys::events(org),
                                              keys::api_projects(org)},
                                             apply_args("any", id, "limits_changed",
                                                        {{"scope", "project"}, {"id", id},
                                                         {"limits", limits_json(limits)}},
                                                        {{"source", "api"}, {"limits", limits_json(limits)}}, {})),
                                        [this, id, org](const Reply &r2) -> std::optional<Command> {
                                            Fields record;
                                            bool existed = false;
                                            if (!applied(r2, record, existed)) return fail(unavailable());
                                            std::optional<ProjectView> view = project_view(policy_, id, org, record);
                                            if (!view) return fail(unavailable());
                                            change_ = "project_put " + id;
                                            return finish(existed ? 200 : 201, render_project(*view));
                                        });
                        });
        });
    }
    return with_project_org(id, [this, id, call](const std::string &org) -> std::optional<Command> {
        if (call == Call::project_get) {
            return then(eval(scripts::hgetall(), {keys::project_record(org, id)}, {}),
                        [this, id, org](const Reply &r) -> std::optional<Command> {
                            Fields record;
                            if (!fields_of(r, record)) return fail(unavailable());
                            std::optional<ProjectView> view = project_view(policy_, id, org, record);
                            if (!view) return fail(not_found("no project `" + id + "`"));
                            return finish(200, render_project(*view));
                        });
        }
        if (call == Call::project_usage) {
            const Periods p = periods_at(now_);
            return then(eval(scripts::hgetall(), {keys::project_record(org, id)}, {}),
                        [this, id, org, p](const Reply &r) -> std::optional<Command> {
                            Fields record;
                            if (!fields_of(r, record)) return fail(unavailable());
                            std::optional<ProjectView> view = project_view(policy_, id, org, record);
                            if (!view) return fail(not_found("no project `" + id + "`"));
                            const Limits limits = view->limits;
                            return then(eval(scripts::mget(), usage_keys(org, Scope::project, id, p), {}),
                                        [this, id, org, limits, p](const Reply &r2) -> std::optional<Command> {
                                            if (r2.type != Reply::Type::array || r2.elements.size() != 9)
                                                return fail(unavailable());
                                            return finish(200, render_usage(usage_of(Scope::project, id, org, limits,
                                                                                     std::nullopt, r2.elements, p)));
                                        });
                        });
        }
        std::optional<Limits> limits;
        if (call == Call::project_limits_put) {
            ApiError error;
            limits = parse_limits_put(body_, error);
            if (!limits) return fail(error);
        }
        auto file = policy_.projects.find(id);
        const bool from_file = file != policy_.projects.end();
        Pairs set;
        if (limits) set.emplace_back("limits", limits_json(*limits));
        if (limits && from_file) set.emplace_back("source", "file");
        const std::vector<std::string> del = limits ? std::vector<std::string>{} : std::vector<std::string>{"limits"};
        const std::pair<std::string, std::string> guard =
            limits ? std::pair<std::string, std::string>{} : std::pair<std::string, std::string>{"limits", ""};
        const std::string in_force = limits_json(limits ? *limits : from_file ? file->second.limits : Limits{});
        return then(eval(scripts::apply(), {keys::project_record(org, id), keys::config(org), keys::events(org)},
                         apply_args(from_file ? "any" : "exists", "", "limits_changed",
                                    {{"scope", "project"}, {"id", id}, {"limits", in_force}}, set, del, guard)),
                    [this, id, org](const Reply &r) -> std::optional<Command> {
                        Fields record;
                        bool existed = false, changed = false;
                        if (!applied(r, record, existed, &changed)) return fail(not_found("no project `" + id + "`"));
                        std::optional<ProjectView> view = project_view(policy_, id, org, record);
                        if (!view) return fail(not_found("no project `" + id + "`"));
                        if (changed) change_ = std::string(call_name(route_.call)) + " " + id;
                        return finish(200, render_project(*view));
                    });
    });
}

std::optional<Command> Operation::org_call() {
    const std::string id = route_.id;
    const Call call = route_.call;
    const bool from_file = policy_.orgs.count(id) != 0;
    auto answer_org = [this, id](int status, const Fields &record) -> std::optional<Command> {
        return then(eval(scripts::get(), {keys::cleared(id)}, {}),
                    [this, id, status, record](const Reply &r) -> std::optional<Command> {
                        std::optional<OrgView> view = org_view(policy_, id, record, to_int(r));
                        if (!view) return fail(not_found("no org `" + id + "`"));
                        return finish(status, render_org(*view));
                    });
    };
    if (call == Call::org_get) {
        return then(eval(scripts::hgetall(), {keys::org_record(id)}, {}), [this, answer_org](const Reply &r) {
            Fields record;
            if (!fields_of(r, record)) return fail(unavailable());
            return answer_org(200, record);
        });
    }
    if (call == Call::org_usage) {
        const Periods p = periods_at(now_);
        return then(eval(scripts::hgetall(), {keys::org_record(id)}, {}), [this, id, p](const Reply &r) -> std::optional<Command> {
            Fields record;
            if (!fields_of(r, record)) return fail(unavailable());
            std::optional<OrgView> view = org_view(policy_, id, record, 0);
            if (!view) return fail(not_found("no org `" + id + "`"));
            Org org;
            org.id = id;
            org.plan = view->plan;
            org.created_at = view->created_at;
            org.limits = view->limits;
            std::vector<std::string> keys = usage_keys(id, Scope::org, id, p);
            keys.push_back(keys::cleared(id));
            return then(eval(scripts::mget(), std::move(keys), {}), [this, id, org, p](const Reply &r2) -> std::optional<Command> {
                if (r2.type != Reply::Type::array || r2.elements.size() != 10) return fail(unavailable());
                std::optional<Nanos> monthly;
                if (const std::vector<CeilingRow> *rows = policy_.dynamic_ceiling(org)) {
                    const std::int64_t age = org.created_at ? p.now - *org.created_at : 0;
                    monthly = ceiling_for(*rows, std::max<Nanos>(to_int(r2.elements[9]), 0), age);
                }
                return finish(200, render_usage(usage_of(Scope::org, id, id, policy_.org_limits(org), monthly,
                                                         r2.elements, p)));
            });
        });
    }
    Pairs set;
    std::vector<std::string> del;
    std::pair<std::string, std::string> guard;
    std::string limits_text;
    if (call == Call::org_put) {
        // The file owns its orgs (a partial PUT would reset what it left
        // out: the balance, the plan); their limits are overridden with PUT .../limits.
        if (from_file) return fail(file_owned("org", "orgs", id));
        ApiError error;
        std::optional<OrgPut> body = parse_org_put(body_, policy_, error);
        if (!body) return fail(error);
        limits_text = limits_json(body->limits);
        set = {{"source", "api"}, {"plan", body->plan},
               {"created_at", opt_time(body->created_at)}, {"prepaid", body->prepaid ? "1" : "0"},
               {"low_balance", body->low_balance_usd ? std::to_string(*body->low_balance_usd) : ""},
               {"limits", limits_text}};
    } else if (call == Call::org_limits_put) {
        ApiError error;
        std::optional<Limits> limits = parse_limits_put(body_, error);
        if (!limits) return fail(error);
        limits_text = limits_json(*limits);
        set = {{"limits", limits_text}};
        if (from_file) set.emplace_back("source", "file");
    } else {
        del = {"limits"};
        guard = {"limits", ""};
        // The limits now in force: the file's (an API org: none).
        limits_text = limits_json(from_file ? policy_.orgs.at(id).limits : Limits{});
    }
    return then(eval(scripts::apply(), {keys::org_record(id), keys::config(id), keys::events(id)},
                     apply_args(call == Call::org_put || from_file ? "any" : "exists", "", "limits_changed",
                                {{"scope", "org"}, {"id", id}, {"limits", limits_text}}, set, del, guard)),
                [this, id, call, from_file, answer_org](const Reply &r) -> std::optional<Command> {
                    Fields record;
                    bool existed = false, changed = false;
                    if (!applied(r, record, existed, &changed)) return fail(not_found("no org `" + id + "`"));
                    if (changed) change_ = std::string(call_name(call)) + " " + id;
                    const int status = call == Call::org_put && !existed ? 201 : 200;
                    if (from_file) return answer_org(status, record);
                    // Known to every node's sweeper, which the file does not tell.
                    return then(eval(scripts::add_org(), {keys::api_orgs()}, {id}),
                                [answer_org, status, record](const Reply &) { return answer_org(status, record); });
                });
}

std::optional<Command> Operation::customer_call() {
    const std::string org = route_.id, customer = route_.customer;
    const Call call = route_.call;
    return with_org(org, [this, org, customer, call]() -> std::optional<Command> {
        if (call == Call::customer_usage) {
            const Periods p = periods_at(now_);
            return then(eval(scripts::hgetall(), {keys::customer_record(org, customer)}, {}),
                        [this, org, customer, p](const Reply &r) -> std::optional<Command> {
                            Fields record;
                            if (!fields_of(r, record)) return fail(unavailable());
                            Limits limits = policy_.customers.limits_for(customer);
                            if (const std::string *text = field(record, "limits")) {
                                std::string ignored;
                                if (std::optional<Limits> parsed = parse_limits(*text, ignored))
                                    limits = parsed->or_else(policy_.customers.default_limits);
                            }
                            return then(eval(scripts::mget(), usage_keys(org, Scope::customer, customer, p), {}),
                                        [this, org, customer, limits, p](const Reply &r2) -> std::optional<Command> {
                                            if (r2.type != Reply::Type::array || r2.elements.size() != 9)
                                                return fail(unavailable());
                                            return finish(200, render_usage(usage_of(Scope::customer, customer, org,
                                                                                     limits, std::nullopt,
                                                                                     r2.elements, p)));
                                        });
                        });
        }
        std::optional<Limits> limits;
        if (call == Call::customer_limits_put) {
            ApiError error;
            limits = parse_limits_put(body_, error);
            if (!limits) return fail(error);
        }
        Pairs set;
        if (limits) set.emplace_back("limits", limits_json(*limits));
        const std::vector<std::string> del = limits ? std::vector<std::string>{} : std::vector<std::string>{"limits"};
        const std::pair<std::string, std::string> guard =
            limits ? std::pair<std::string, std::string>{} : std::pair<std::string, std::string>{"limits", ""};
        // What was put, else the limits now in force (the file's for this customer).
        const std::string in_force = limits_json(limits ? *limits : policy_.customers.limits_for(customer));
        return then(eval(scripts::apply(), {keys::customer_record(org, customer), keys::config(org), keys::events(org)},
                         apply_args("any", "", "limits_changed",
                                    {{"scope", "customer"}, {"id", customer}, {"org", org}, {"limits", in_force}},
                                    set, del, guard)),
                    [this, org, customer](const Reply &r) -> std::optional<Command> {
                        Fields record;
                        bool existed = false, changed = false;
                        if (!applied(r, record, existed, &changed)) return fail(unavailable());
                        Limits effective = policy_.customers.limits_for(customer);
                        if (const std::string *text = field(record, "limits")) {
                            std::string ignored;
                            if (std::optional<Limits> parsed = parse_limits(*text, ignored))
                                effective = parsed->or_else(policy_.customers.default_limits);
                        }
                        if (changed) change_ = std::string(call_name(route_.call)) + " " + org + "/" + customer;
                        return finish(200, "{\"org\":" + json_quoted(org) + ",\"customer\":" +
                                               json_quoted(customer) + ",\"limits\":" + limits_json(effective) + "}");
                    });
    });
}

std::optional<Command> Operation::balance_get() {
    const std::string org = route_.id;
    return with_org(org, [this, org]() -> std::optional<Command> {
        return then(eval(scripts::mget(), {keys::balance(org), keys::held(org)}, {}),
                    [this, org](const Reply &r) -> std::optional<Command> {
                        if (r.type != Reply::Type::array || r.elements.size() != 2) return fail(unavailable());
                        return then(eval(scripts::hgetall(), {keys::org_record(org)}, {}),
                                    [this, org, drawn = to_int(r.elements[0]),
                                     held = to_int(r.elements[1])](const Reply &r2) -> std::optional<Command> {
                                        Fields record;
                                        if (!fields_of(r2, record)) return fail(unavailable());
                                        std::optional<OrgView> view = org_view(policy_, org, record, 0);
                                        BalanceView b;
                                        b.org = org;
                                        // Redis's balance has the reservations drawn: settled = it + held.
                                        const Nanos h = std::max<Nanos>(held, 0);
                                        b.balance = saturating_add(drawn, h);
                                        b.reserved = h;
                                        if (view) b.low_balance = view->low_balance_usd;
                                        return finish(200, render_balance(b));
                                    });
                    });
    });
}

std::optional<Command> Operation::topup() {
    ApiError error;
    std::optional<Topup> body = parse_topup(body_, error);
    if (!body) return fail(error);
    const std::string org = route_.id;
    const Topup t = *body;
    return with_org(org, [this, org, t]() -> std::optional<Command> {
        return then(eval(scripts::topup(),
                         {keys::topup(org, sha256_hex(t.idempotency_key)), keys::balance(org), keys::events(org),
                          keys::held(org)},
                         {std::to_string(t.amount), t.idempotency_key}),
                    [this, org, t](const Reply &r) -> std::optional<Command> {
                        if (r.type != Reply::Type::array || r.elements.size() != 2
                            || r.elements[0].type != Reply::Type::integer
                            || r.elements[1].type != Reply::Type::string)
                            return fail(unavailable());
                        // Sending it again cannot help: 400, never 503 (SPEC section 7).
                        if (r.elements[0].integer == -1)
                            return fail(invalid_request(
                                r.elements[1].str.find("overflow") != std::string::npos
                                    ? "`amount_usd` would take the balance of org `" + org +
                                          "` past the largest amount it can hold (9223372036.854775807)"
                                    : "the balance of org `" + org + "` is not a number: " + r.elements[1].str));
                        // "AMOUNT DRAWN_BALANCE HELD" (a top-up made before HELD was kept: 0)
                        const std::string &answer = r.elements[1].str;
                        const std::size_t space = answer.find(' ');
                        const std::size_t second = space == std::string::npos ? space : answer.find(' ', space + 1);
                        const std::string amount = answer.substr(0, space);
                        const std::string drawn =
                            space == std::string::npos ? "" : answer.substr(space + 1, second - space - 1);
                        const std::string held = second == std::string::npos ? "0" : answer.substr(second + 1);
                        const Nanos settled = saturating_add(to_int(drawn), std::max<Nanos>(to_int(held), 0));
                        const bool applied = r.elements[0].integer == 1;
                        if (!applied && to_int(amount) != t.amount)
                            return fail(conflict("idempotency_key `" + t.idempotency_key +
                                                 "` was used for another amount"));
                        if (applied) change_ = "topup " + org;
                        return finish(200, render_topup(org, t, settled, applied));
                    });
    });
}

std::optional<Command> Operation::cleared_put() {
    ApiError error;
    std::optional<Nanos> cleared = parse_cleared(body_, error);
    if (!cleared) return fail(error);
    const std::string org = route_.id;
    const Nanos value = *cleared;
    return with_org(org, [this, org, value]() -> std::optional<Command> {
        return then(eval(scripts::cleared(), {keys::cleared(org), keys::events(org)}, {std::to_string(value)}),
                    [this, org](const Reply &) -> std::optional<Command> {
                        change_ = "cleared_changed " + org;
                        return then(eval(scripts::hgetall(), {keys::org_record(org)}, {}),
                                    [this, org](const Reply &r) -> std::optional<Command> {
                                        Fields record;
                                        if (!fields_of(r, record)) return fail(unavailable());
                                        return then(eval(scripts::get(), {keys::cleared(org)}, {}),
                                                    [this, org, record](const Reply &r2) -> std::optional<Command> {
                                                        std::optional<OrgView> view =
                                                            org_view(policy_, org, record, to_int(r2));
                                                        if (!view) return fail(not_found("no org `" + org + "`"));
                                                        return finish(200, render_org(*view));
                                                    });
                                    });
                    });
    });
}

std::optional<Command> Operation::events_get() {
    const std::string org = route_.id;
    const std::string after = route_.query.count("after") ? route_.query.at("after") : "";
    const std::string count = route_.query.count("count") ? route_.query.at("count") : "100";
    return with_org(org, [this, org, after, count]() -> std::optional<Command> {
        // Nothing can follow the largest id (and Redis refuses to start past it).
        if (after == kLastStreamId) return finish(200, render_events({}, after));
        return then(eval(scripts::events(), {keys::events(org)}, {after.empty() ? "-" : "(" + after, count}),
                    [this, after](const Reply &r) -> std::optional<Command> {
                        if (r.type != Reply::Type::array) return fail(unavailable());
                        std::vector<Event> events;
                        for (const Reply &entry : r.elements) {
                            if (entry.type != Reply::Type::array || entry.elements.size() != 2
                                || entry.elements[0].type != Reply::Type::string)
                                return fail(unavailable());
                            Event e;
                            e.id = entry.elements[0].str;
                            if (!fields_of(entry.elements[1], e.fields)) return fail(unavailable());
                            events.push_back(std::move(e));
                        }
                        return finish(200, render_events(events, after));
                    });
    });
}

}  // namespace spendcap::admin
