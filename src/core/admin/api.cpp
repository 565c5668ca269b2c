// The management API's shared types: a call's name and kind, the error answers.
#include "admin/api.h"

#include <utility>

namespace spendcap::admin {

const char *call_name(Call c) {
    switch (c) {
    case Call::key_create: return "key_create";
    case Call::keys_list: return "keys_list";
    case Call::key_get: return "key_get";
    case Call::key_revoke: return "key_revoke";
    case Call::key_rotate: return "key_rotate";
    case Call::key_limits_put: return "key_limits_put";
    case Call::key_limits_delete: return "key_limits_delete";
    case Call::key_usage: return "key_usage";
    case Call::key_budgets: return "key_budgets";
    case Call::self_get: return "self_get";
    case Call::self_usage: return "self_usage";
    case Call::self_budgets: return "self_budgets";
    case Call::project_put: return "project_put";
    case Call::project_get: return "project_get";
    case Call::project_usage: return "project_usage";
    case Call::project_limits_put: return "project_limits_put";
    case Call::project_limits_delete: return "project_limits_delete";
    case Call::org_put: return "org_put";
    case Call::org_get: return "org_get";
    case Call::org_usage: return "org_usage";
    case Call::org_limits_put: return "org_limits_put";
    case Call::org_limits_delete: return "org_limits_delete";
    case Call::customer_usage: return "customer_usage";
    case Call::customer_limits_put: return "customer_limits_put";
    case Call::customer_limits_delete: return "customer_limits_delete";
    case Call::balance_get: return "balance_get";
    case Call::topup: return "topup";
    case Call::cleared_put: return "cleared_put";
    case Call::events_get: return "events_get";
    case Call::orgs_list: return "orgs_list";
    case Call::projects_list: return "projects_list";
    case Call::key_usage_daily: return "key_usage_daily";
    case Call::self_usage_daily: return "self_usage_daily";
    case Call::key_check: return "key_check";
    case Call::self_check: return "self_check";
    case Call::project_usage_daily: return "project_usage_daily";
    case Call::org_usage_daily: return "org_usage_daily";
    case Call::customer_usage_daily: return "customer_usage_daily";
    }
    return "unknown";
}

bool is_self_call(Call c) {
    return c == Call::self_get || c == Call::self_usage || c == Call::self_budgets || c == Call::self_usage_daily
           || c == Call::self_check;
}

bool is_change(Call c) {
    switch (c) {
    case Call::key_create:
    case Call::key_revoke:
    case Call::key_rotate:
    case Call::key_limits_put:
    case Call::key_limits_delete:
    case Call::project_put:
    case Call::project_limits_put:
    case Call::project_limits_delete:
    case Call::org_put:
    case Call::org_limits_put:
    case Call::org_limits_delete:
    case Call::customer_limits_put:
    case Call::customer_limits_delete:
    case Call::topup:
    case Call::cleared_put: return true;
    default: return false;
    }
}

ApiError invalid_request(std::string message) { return ApiError{400, "invalid_request", std::move(message), ""}; }
ApiError unauthorized() { return ApiError{401, "unauthorized", "missing or wrong admin token", ""}; }
ApiError not_found(std::string message) { return ApiError{404, "not_found", std::move(message), ""}; }
ApiError conflict(std::string message) { return ApiError{409, "conflict", std::move(message), ""}; }
ApiError unavailable() { return ApiError{503, "unavailable", "redis is unavailable or too slow", ""}; }

}  // namespace spendcap::admin
