// The Operation machinery: one step per Redis reply, the call dispatched by
// route, and the lookups most calls start with (a key's, project's or org's org).
#include "admin/ops.h"

#include <exception>
#include <new>
#include <utility>

#include "admin/render.h"
#include "redis/keys.h"
#include "redis/script.h"

namespace spendcap::admin {

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
    response_.content_type = "application/json";
    return std::nullopt;
}

std::optional<Command> Operation::finish_csv(std::string body) {
    finish(200, std::move(body));
    response_.content_type = "text/csv; charset=utf-8";
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
    case Call::orgs_list: return orgs_list();
    case Call::projects_list: return projects_list();
    case Call::self_usage_daily:
    case Call::self_check: return self_call();
    case Call::key_check: return key_check(id);
    case Call::key_usage_daily:
    case Call::project_usage_daily:
    case Call::org_usage_daily:
    case Call::customer_usage_daily: return daily_call();
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

std::optional<Command> Operation::with_org_periods(const std::string &id,
                                                   std::function<std::optional<Command>(const Periods &)> k) {
    if (auto file = policy_.orgs.find(id); file != policy_.orgs.end())
        return k(periods_in_zone(file->second.timezone, now_));
    return then(eval(scripts::hgetall(), {keys::org_record(id)}, {}),
                [this, id, k](const Reply &r) -> std::optional<Command> {
                    Fields record;
                    if (!fields_of(r, record) || record.empty()) return fail(not_found("no org `" + id + "`"));
                    const std::string *zone = field(record, "timezone");
                    return k(periods_in_zone(zone != nullptr ? *zone : "", now_));
                });
}

// The org's records for a key as the request path reads them
// (org_records_command), its own record first for the project it names.
std::optional<Command> Operation::with_records(const std::string &org, const std::string &key_id,
                                               const std::string &file_project, RecordsStep k,
                                               const std::string &customer) {
    return then(eval(scripts::hgetall(), {keys::key_record(org, key_id)}, {}),
                [this, org, key_id, file_project, k, customer](const Reply &r) -> std::optional<Command> {
                    Fields key;
                    if (!fields_of(r, key)) return fail(unavailable());
                    const std::string *named = field(key, "project");
                    const std::string project = named != nullptr ? *named : file_project;
                    return then(org_records_command(org, key_id, project, customer),
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

}  // namespace spendcap::admin
