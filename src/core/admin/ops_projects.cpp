// The management API's project calls: put, read, usage, and the limits'
// put and delete (an override over a file project's).
#include "admin/ops.h"

#include <algorithm>
#include <utility>

#include "admin/body.h"
#include "admin/ops_support.h"
#include "admin/render.h"
#include "json/writer.h"
#include "policy/limits_json.h"
#include "redis/keys.h"
#include "redis/script.h"

namespace spendcap::admin {

// project_put needs no org first (it names one); the others find the
// project's org, so an unknown project is 404 before its body is read.
std::optional<Command> Operation::project_call() {
    const std::string id = route_.id;
    const Call call = route_.call;
    if (call == Call::project_put) return project_put(id);
    return with_project_org(id, [this, id, call](const std::string &org) -> std::optional<Command> {
        if (call == Call::project_get) return project_get(id, org);
        if (call == Call::project_usage) return project_usage(id, org);
        return project_limits(id, org);
    });
}

std::optional<Command> Operation::project_put(const std::string &id) {
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

std::optional<Command> Operation::project_get(const std::string &id, const std::string &org) {
    return then(eval(scripts::hgetall(), {keys::project_record(org, id)}, {}),
                [this, id, org](const Reply &r) -> std::optional<Command> {
                    Fields record;
                    if (!fields_of(r, record)) return fail(unavailable());
                    std::optional<ProjectView> view = project_view(policy_, id, org, record);
                    if (!view) return fail(not_found("no project `" + id + "`"));
                    return finish(200, render_project(*view));
                });
}

std::optional<Command> Operation::project_usage(const std::string &id, const std::string &org) {
  return with_org_periods(org, [this, id, org](const Periods &p) -> std::optional<Command> {
    return then(eval(scripts::hgetall(), {keys::project_record(org, id)}, {}),
                [this, id, org, p](const Reply &r) -> std::optional<Command> {
                    Fields record;
                    if (!fields_of(r, record)) return fail(unavailable());
                    std::optional<ProjectView> view = project_view(policy_, id, org, record);
                    if (!view) return fail(not_found("no project `" + id + "`"));
                    const Limits limits = view->limits;
                    return then(eval(scripts::mget(), usage_keys(org, Scope::project, id, p, limits), {}),
                                [this, id, org, limits, p](const Reply &r2) -> std::optional<Command> {
                                    if (r2.type != Reply::Type::array || r2.elements.size() != usage_key_count(limits))
                                        return fail(unavailable());
                                    return finish(200, render_usage(usage_of(Scope::project, id, org, limits,
                                                                             std::nullopt, r2.elements, p)));
                                });
                });
  });
}

// Put or delete the project's limits: a file project's override, an API project's own.
std::optional<Command> Operation::project_limits(const std::string &id, const std::string &org) {
    std::optional<Limits> limits;
    if (route_.call == Call::project_limits_put) {
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
}

// GET /projects?org=O: the API's projects of the org (its set) and the
// file's, each once, by id, as project_get shows them.
std::optional<Command> Operation::projects_list() {
    const std::string org = route_.query.count("org") ? route_.query.at("org") : "";
    return with_org(org, [this, org]() -> std::optional<Command> {
        return then(eval(scripts::members(), {keys::api_projects(org)}, {}),
                    [this, org](const Reply &members) -> std::optional<Command> {
            if (!members.is_array()) return fail(unavailable());
            std::vector<std::string> ids;
            for (const auto &entry : policy_.projects)
                if (entry.second.org == org) ids.push_back(entry.first);
            for (const Reply &m : members.elements) {
                if (!m.is_string()) return fail(unavailable());
                // a file project of another org cannot be this org's
                if (valid_id(m.str) && policy_.projects.count(m.str) == 0) ids.push_back(m.str);
            }
            std::sort(ids.begin(), ids.end());
            ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
            if (ids.empty()) return finish(200, R"({"projects":[]})");
            std::vector<std::string> records;
            records.reserve(ids.size());
            for (const std::string &id : ids) records.push_back(keys::project_record(org, id));
            return then(eval(scripts::hgetall_each(), std::move(records), {}),
                        [this, org, ids](const Reply &r) -> std::optional<Command> {
                if (r.type != Reply::Type::array || r.elements.size() != ids.size()) return fail(unavailable());
                std::vector<std::string> objects;
                for (std::size_t i = 0; i < ids.size(); ++i) {
                    Fields record;
                    if (!fields_of(r.elements[i], record)) return fail(unavailable());
                    // an API project whose record is gone is no project
                    if (std::optional<ProjectView> view = project_view(policy_, ids[i], org, record))
                        objects.push_back(render_project(*view));
                }
                return finish(200, json::ObjectWriter().raw("projects", json::json_array(objects)).done());
            });
        });
    });
}

}  // namespace spendcap::admin
