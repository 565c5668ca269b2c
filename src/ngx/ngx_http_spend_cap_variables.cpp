// The $spend_cap_* variables.
#include "ngx_http_spend_cap_ctx.h"

#include <cstring>
#include <exception>

namespace spendcap_ngx {

// --- variables ---

enum VariableField {
    var_key_id, var_project, var_org, var_customer, var_decision, var_blocked_by, var_reserved_usd,
    var_cost_usd, var_settled_from, var_input_tokens, var_output_tokens,
};

static ngx_int_t get_variable_unsafe(ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data) {
    RequestCtx *ctx = get_ctx(r->main);
    std::string value;
    bool found = ctx != nullptr;
    if (found) {
        switch (data) {
        case var_key_id: found = ctx->key; if (found) value = ctx->key->id; break;
        case var_project: found = ctx->key; if (found) value = ctx->key->project; break;
        case var_org: found = ctx->identity != nullptr; if (found) value = ctx->identity->org.id; break;
        case var_customer: found = !ctx->customer.empty(); value = ctx->customer; break;
        case var_decision: found = ctx->outcome != Outcome::none; value = outcome_name(ctx->outcome); break;
        case var_blocked_by: found = !ctx->blocked_by.empty(); value = ctx->blocked_by; break;
        case var_reserved_usd: found = ctx->reserve_sent; value = format_usd(ctx->estimate.cost); break;
        case var_cost_usd: found = ctx->settled && passed(ctx); value = format_usd(ctx->cost); break;
        case var_settled_from: found = ctx->settled && passed(ctx); value = ctx->settled_from; break;
        case var_input_tokens:
            found = ctx->settled && passed(ctx);
            value = std::to_string(ctx->usage.input_total());
            break;
        case var_output_tokens:
            found = ctx->settled && passed(ctx);
            value = std::to_string(ctx->usage.output);
            break;
        }
    }
    if (!found) {
        v->not_found = 1;
        return NGX_OK;
    }
    ngx_str_t s = pool_str(r->pool, value);
    if (s.data == nullptr) {
        return NGX_ERROR;
    }
    v->data = s.data;
    v->len = s.len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;
    return NGX_OK;
}

static ngx_int_t get_variable(ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data) {
    try {
        return get_variable_unsafe(r, v, data);
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0, "spend_cap: variable: %s", e.what());
        return NGX_ERROR;
    }
}

struct VariableDef {
    const char *name;
    VariableField field;
};

const VariableDef variables[] = {
    {"spend_cap_key_id", var_key_id},
    {"spend_cap_project", var_project},
    {"spend_cap_org", var_org},
    {"spend_cap_customer", var_customer},
    {"spend_cap_decision", var_decision},
    {"spend_cap_blocked_by", var_blocked_by},
    {"spend_cap_reserved_usd", var_reserved_usd},
    {"spend_cap_cost_usd", var_cost_usd},
    {"spend_cap_settled_from", var_settled_from},
    {"spend_cap_input_tokens", var_input_tokens},
    {"spend_cap_output_tokens", var_output_tokens},
};

ngx_int_t add_variables(ngx_conf_t *cf) {
    for (const auto &def : variables) {
        ngx_str_t name{std::strlen(def.name), (u_char *) def.name};
        ngx_http_variable_t *var = ngx_http_add_variable(cf, &name, NGX_HTTP_VAR_NOCACHEABLE);
        if (var == nullptr) {
            return NGX_ERROR;
        }
        var->get_handler = get_variable;
        var->data = def.field;
    }
    return NGX_OK;
}

}  // namespace spendcap_ngx
