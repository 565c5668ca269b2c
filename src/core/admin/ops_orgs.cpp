// The management API's org calls: put, read, usage and limits, the org's
// customers, its prepaid balance and top-ups, its cleared spend and events.
#include "admin/ops.h"

#include <algorithm>
#include <memory>
#include <utility>

#include "admin/body.h"
#include "admin/ops_support.h"
#include "admin/render.h"
#include "base/digest.h"
#include "json/writer.h"
#include "policy/limits_json.h"
#include "redis/keys.h"
#include "redis/script.h"

namespace spendcap::admin {

namespace {

constexpr const char *kLastStreamId = "18446744073709551615-18446744073709551615";

}  // namespace

// org_get and org_usage read; org_put and the limits' put and delete change
// the org's record, then answer the org as org_get would.
std::optional<Command> Operation::org_call() {
    const std::string id = route_.id;
    if (route_.call == Call::org_get) {
        return then(eval(scripts::hgetall(), {keys::org_record(id)}, {}), [this, id](const Reply &r) {
            Fields record;
            if (!fields_of(r, record)) return fail(unavailable());
            return org_answer(id, 200, record);
        });
    }
    if (route_.call == Call::org_usage) return org_usage(id);
    return org_change(id);
}

// The org as its record and the file say, with its cleared spend.
std::optional<Command> Operation::org_answer(const std::string &id, int status, const Fields &record) {
    return then(eval(scripts::get(), {keys::cleared(id)}, {}),
                [this, id, status, record](const Reply &r) -> std::optional<Command> {
                    std::optional<OrgView> view = org_view(policy_, id, record, to_int(r));
                    if (!view) return fail(not_found("no org `" + id + "`"));
                    return finish(status, render_org(*view));
                });
}

std::optional<Command> Operation::org_usage(const std::string &id) {
    return then(eval(scripts::hgetall(), {keys::org_record(id)}, {}),
                [this, id](const Reply &r) -> std::optional<Command> {
        Fields record;
        if (!fields_of(r, record)) return fail(unavailable());
        std::optional<OrgView> view = org_view(policy_, id, record, 0);
        if (!view) return fail(not_found("no org `" + id + "`"));
        Org org;
        org.id = id;
        org.plan = view->plan;
        org.created_at = view->created_at;
        org.limits = view->limits;
        const Periods p = periods_in_zone(view->timezone, now_);
        std::vector<std::string> keys = usage_keys(id, Scope::org, id, p, policy_.org_limits(org));
        const std::size_t count = keys.size();
        keys.push_back(keys::cleared(id));
        return then(eval(scripts::mget(), std::move(keys), {}),
                    [this, id, org, p, count](const Reply &r2) -> std::optional<Command> {
            if (r2.type != Reply::Type::array || r2.elements.size() != count + 1) return fail(unavailable());
            std::optional<Nanos> monthly;
            if (const std::vector<CeilingRow> *rows = policy_.dynamic_ceiling(org)) {
                const std::int64_t age = org.created_at ? p.now - *org.created_at : 0;
                monthly = ceiling_for(*rows, std::max<Nanos>(to_int(r2.elements[count]), 0), age);
            }
            return finish(200, render_usage(usage_of(Scope::org, id, id, policy_.org_limits(org), monthly,
                                                     r2.elements, p)));
        });
    });
}

// org_put, or the limits' put or delete: one apply of the org's record.
std::optional<Command> Operation::org_change(const std::string &id) {
    const Call call = route_.call;
    const bool from_file = policy_.orgs.count(id) != 0;
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
               {"timezone", body->timezone}, {"limits", limits_text}};
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
                [this, id, call, from_file](const Reply &r) -> std::optional<Command> {
                    Fields record;
                    bool existed = false, changed = false;
                    if (!applied(r, record, existed, &changed)) return fail(not_found("no org `" + id + "`"));
                    if (changed) change_ = std::string(call_name(call)) + " " + id;
                    const int status = call == Call::org_put && !existed ? 201 : 200;
                    if (from_file) return org_answer(id, status, record);
                    // Known to every node's sweeper, which the file does not tell.
                    return then(eval(scripts::add_org(), {keys::api_orgs()}, {id}),
                                [this, id, status, record](const Reply &) { return org_answer(id, status, record); });
                });
}

std::optional<Command> Operation::customer_call() {
    const std::string org = route_.id, customer = route_.customer;
    const Call call = route_.call;
    return with_org(org, [this, org, customer, call]() -> std::optional<Command> {
        if (call == Call::customer_usage) {
          return with_org_periods(org, [this, org, customer](const Periods &p) -> std::optional<Command> {
            return then(eval(scripts::hgetall(), {keys::customer_record(org, customer)}, {}),
                        [this, org, customer, p](const Reply &r) -> std::optional<Command> {
                            Fields record;
                            if (!fields_of(r, record)) return fail(unavailable());
                            const Limits limits = customer_limits(policy_, customer, record);
                            return then(eval(scripts::mget(), usage_keys(org, Scope::customer, customer, p, limits), {}),
                                        [this, org, customer, limits, p](const Reply &r2) -> std::optional<Command> {
                                            if (r2.type != Reply::Type::array
                                                || r2.elements.size() != usage_key_count(limits))
                                                return fail(unavailable());
                                            return finish(200, render_usage(usage_of(Scope::customer, customer, org,
                                                                                     limits, std::nullopt,
                                                                                     r2.elements, p)));
                                        });
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
                        const Limits effective = customer_limits(policy_, customer, record);
                        if (changed) change_ = std::string(call_name(route_.call)) + " " + org + "/" + customer;
                        return finish(200, json::ObjectWriter()
                                               .string("org", org)
                                               .string("customer", customer)
                                               .raw("limits", limits_json(effective))
                                               .done());
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

// GET /orgs: the file's orgs and the API's (sc:orgs), each once, by id;
// then each org read as org_get reads it (its record and cleared spend, in
// its own slot: one command per org).
struct Operation::OrgsList {
    std::vector<std::string> ids;
    std::size_t next = 0;
    std::vector<std::string> objects;  // ORG of each id read so far (none for an org gone)
};

std::optional<Command> Operation::orgs_list() {
    return then(eval(scripts::members(), {keys::api_orgs()}, {}), [this](const Reply &members) -> std::optional<Command> {
        if (!members.is_array()) return fail(unavailable());
        auto list = std::make_shared<OrgsList>();
        for (const auto &entry : policy_.orgs) list->ids.push_back(entry.first);
        for (const Reply &m : members.elements) {
            if (!m.is_string()) return fail(unavailable());
            if (valid_id(m.str)) list->ids.push_back(m.str);
        }
        std::sort(list->ids.begin(), list->ids.end());
        list->ids.erase(std::unique(list->ids.begin(), list->ids.end()), list->ids.end());
        if (list->ids.size() > kMaxListedOrgs) list->ids.resize(kMaxListedOrgs);
        list->objects.reserve(list->ids.size());
        return orgs_read(std::move(list));
    });
}

std::optional<Command> Operation::orgs_read(std::shared_ptr<OrgsList> list) {
    if (list->next == list->ids.size())
        return finish(200, json::ObjectWriter().raw("orgs", json::json_array(list->objects)).done());
    const std::string id = list->ids[list->next++];
    return then(eval(scripts::org_read(), {keys::org_record(id), keys::cleared(id)}, {}),
                [this, id, list](const Reply &r) -> std::optional<Command> {
                    Fields record;
                    if (r.type != Reply::Type::array || r.elements.size() != 2 || !fields_of(r.elements[0], record))
                        return fail(unavailable());
                    // An API org whose record is gone (a FLUSHALL) is no org.
                    if (std::optional<OrgView> view = org_view(policy_, id, record, to_int(r.elements[1])))
                        list->objects.push_back(render_org(*view));
                    return orgs_read(list);
                });
}

std::optional<Command> Operation::events_get() {
    const std::string org = route_.id;
    const std::string after = route_.query.count("after") ? route_.query.at("after") : "";
    const std::string count = route_.query.count("count") ? route_.query.at("count") : "100";
    const std::string latest = route_.query.count("latest") ? route_.query.at("latest") : "";
    return with_org(org, [this, org, after, count, latest]() -> std::optional<Command> {
        // Nothing can follow the largest id (and Redis refuses to start past it).
        if (after == kLastStreamId) return finish(200, render_events({}, after));
        std::vector<std::string> args{after.empty() ? "-" : "(" + after, count};
        if (!latest.empty()) args = {"-", latest, "latest"};
        return then(eval(scripts::events(), {keys::events(org)}, args),
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
