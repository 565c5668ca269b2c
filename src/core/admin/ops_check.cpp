// POST /keys/ID/check and /keys/self/check (SPEC section 2b, "would this
// pass?"): the access phase's decision for an LLM request body now, by the
// access phase's own code (http/assessment, the ledger, the reserve script
// in its deciding-only mode), reserving and counting nothing.
#include <atomic>

#include "accounting/reservation.h"
#include "admin/ops.h"
#include "admin/ops_support.h"
#include "http/assessment.h"
#include "http/envelope.h"
#include "json/object_reader.h"

namespace spendcap::admin {

namespace {

// A refusal as the access phase would send it, answered 200.
CheckView refused(ErrorCode code, std::string message, std::optional<Scope> scope = std::nullopt) {
    CheckView v;
    v.allowed = false;
    v.status = error_status(code);
    v.code = error_code_name(code);
    v.message = std::move(message);
    v.scope = scope;
    return v;
}

// The id a ledger's counter belongs to: its label's ("SCOPE ID WINDOW ..."),
// else the key's or the org's.
std::string counter_id(const Ledger &ledger, const Counter &c) {
    if (!c.label.empty()) {
        const std::size_t first = c.label.find(' ');
        const std::size_t second = c.label.find(' ', first + 1);
        if (first != std::string::npos && second != std::string::npos)
            return c.label.substr(first + 1, second - first - 1);
    }
    return c.scope == Scope::key ? ledger.key_id : ledger.org;
}

// The budget an allowed request leaves with the least remaining (the one
// x-spend-scope names), as a LAYER.
std::optional<Layer> binding_layer(const Ledger &ledger, const ReserveOutcome &outcome) {
    if (!outcome.tightest_index || *outcome.tightest_index >= ledger.counters.size()) return std::nullopt;
    const Counter &c = ledger.counters[*outcome.tightest_index];
    Layer l;
    l.scope = c.scope;
    l.id = counter_id(ledger, c);
    const bool balance = c.kind == CounterKind::balance || c.kind == CounterKind::held;
    l.window = balance ? "balance" : window_name(c.window);
    l.cap = outcome.tightest_cap;
    l.remaining = outcome.tightest_remaining;
    l.spent = std::max<Nanos>(saturating_sub(l.cap, l.remaining), 0);
    l.reset_at = balance ? 0 : window_reset(ledger.periods, c.window);
    l.model = c.model;
    return l;
}

std::string check_id() {
    static std::atomic<std::uint64_t> next{0};
    return "check:" + std::to_string(++next);
}

}  // namespace

std::optional<Command> Operation::key_check(const std::string &id) {
    // The body is the LLM request; "customer" stands for the customer header.
    std::string customer;
    {
        json::Body body;
        std::string error;
        std::optional<std::string> named;
        if (json::load_object(body_, body, error)) {
            json::ObjectReader reader(body, error);
            if (reader.string("customer", named) && named) customer = *named;
        }
    }
    if (!customer.empty() && !valid_id(customer))
        return finish(200, render_check(refused(ErrorCode::invalid_request, "`customer` " + std::string(kIdRule))));
    auto assessed = std::make_shared<const BodyAssessment>(assess_body(policy_, body_, ""));
    if (assessed->refusal) return finish(200, render_check(refused(*assessed->refusal, assessed->message)));

    return with_key(id, [this, id, customer, assessed](const std::string &org,
                                                       const Key *file_key) -> std::optional<Command> {
        return with_records(
            org, id, file_key != nullptr ? file_key->project : "",
            [this, id, org, customer, assessed, file_key](const OrgRecords &records,
                                                           const std::string &project) -> std::optional<Command> {
                const std::string *sha = field(records.key, "sha256");
                const std::string presented = sha != nullptr ? *sha : file_key != nullptr ? file_key->sha256 : "";
                std::optional<KeyLookup> lookup;
                if (file_key == nullptr) lookup = KeyLookup{id, org, project};
                Resolution found = resolve_identity(policy_, presented, file_key, lookup, customer, records, now_ms_);
                if (found.identity == nullptr) return fail(not_found("key `" + id + "`: " + found.reason));
                if (found.problem == IdentityProblem::revoked)
                    return finish(200, render_check(refused(ErrorCode::api_key_revoked, "")));
                if (found.problem == IdentityProblem::expired)
                    return finish(200, render_check(refused(ErrorCode::api_key_expired, "")));
                const Identity &identity = *found.identity;
                auto ledger = std::make_shared<const Ledger>(ledger_for(
                    policy_, identity, periods_in_zone(identity.org.timezone, now_), assessed->info.model));
                const Estimate estimate = estimate_of(*assessed, policy_, static_cast<std::int64_t>(body_.size()));
                CheckView base;
                base.estimate = estimate.cost;
                base.estimate_tokens = estimate.tokens();
                if (ledger->model_refused_by) {
                    CheckView v = refused(ErrorCode::model_not_allowed,
                                          model_not_allowed_message(assessed->info.model, *ledger->model_refused_by),
                                          ledger->model_refused_by);
                    v.estimate = base.estimate;
                    v.estimate_tokens = base.estimate_tokens;
                    return finish(200, render_check(v));
                }
                Command command{check_command(*ledger, Amounts{estimate.cost, estimate.tokens(), 1}, check_id()),
                                &scripts::reserve().text};
                if (command.argv.empty()) return fail(unavailable());
                return then(std::move(command), [this, ledger, base](const Reply &r) -> std::optional<Command> {
                    const std::optional<std::vector<long long>> flat = r.integers();
                    if (!flat) return fail(unavailable());
                    const ReserveReplyParts parts = split_reserve_reply(*flat, 1);
                    if (parts.malformed || parts.stale || parts.given_up || parts.due || parts.parts.size() != 1)
                        return fail(unavailable());
                    const ReserveOutcome outcome = decode_reserve_reply(*ledger, parts.parts[0]);
                    CheckView v = base;
                    if (outcome.kind == ReserveOutcome::Kind::allowed) {
                        v.allowed = true;
                        v.binding = binding_layer(*ledger, outcome);
                        return finish(200, render_check(v));
                    }
                    if (outcome.kind != ReserveOutcome::Kind::blocked || !outcome.refused_by) return fail(unavailable());
                    const CapRef cap = cap_ref(*ledger, *outcome.refused_by, now_);
                    const ErrorCode code = error_code_for(cap.limit);
                    v.allowed = false;
                    v.status = error_status(code);
                    v.code = error_code_name(code);
                    v.scope = cap.scope;
                    v.window = cap.limit == LimitKind::balance                              ? ""
                               : cap.limit == LimitKind::rpm || cap.limit == LimitKind::tpm ? "minute"
                                                                                            : window_name(cap.window);
                    v.model = cap.model;
                    v.message = cap_message(cap);
                    return finish(200, render_check(v));
                });
            },
            customer);
    });
}

}  // namespace spendcap::admin
