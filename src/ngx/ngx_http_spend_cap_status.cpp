// spend_cap_status: the Prometheus text of this NGINX instance (SPEC section
// 9), summed over its workers from the node's shared zone
// (ngx_http_spend_cap_zone.h), and the counting the other files do into it.
#include "ngx_http_spend_cap_ctx.h"

#include <ctime>
#include <exception>

#include "accounting/cap.h"
#include "http/metrics.h"
#include "http/status_counters.h"
#include "ngx_http_spend_cap_zone.h"

namespace spendcap_ngx {
namespace {

const std::string &org_of(const RequestCtx *ctx) {
    static const std::string none;
    return ctx->identity != nullptr ? ctx->identity->org.id : none;
}

ngx_int_t status_handler(ngx_http_request_t *r) {
    if (!(r->method & (NGX_HTTP_GET | NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }
    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    StatusCounters *counters = status_counters();
    if (counters == nullptr) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }
    std::string text;
    try {
        text = render_metrics(counters->view(redis_up(), kModuleVersion, NGINX_VERSION));
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0, "spend_cap_status: %s", e.what());
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    static const ngx_str_t type = ngx_string("text/plain; version=0.0.4; charset=utf-8");
    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_type = type;
    r->headers_out.content_type_len = type.len;
    r->headers_out.content_length_n = static_cast<off_t>(text.size());
    if (add_header(r, "Cache-Control", "no-store") != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    ngx_int_t rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }
    ngx_buf_t *b = ngx_create_temp_buf(r->pool, text.size() > 0 ? text.size() : 1);
    if (b == nullptr) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    b->last = ngx_cpymem(b->pos, text.data(), text.size());
    b->last_buf = 1;
    b->last_in_chain = 1;
    ngx_chain_t out{b, nullptr};
    return ngx_http_output_filter(r, &out);
}

ngx_int_t status_handler_safe(ngx_http_request_t *r) {
    try {
        return status_handler(r);
    } catch (const std::exception &) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
}

}  // namespace

char *set_status(ngx_conf_t *cf, ngx_command_t *, void *) {
    auto *clcf = static_cast<ngx_http_core_loc_conf_t *>(ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module));
    clcf->handler = status_handler_safe;
    auto *mcf = static_cast<MainConf *>(ngx_http_conf_get_module_main_conf(cf, ngx_http_spend_cap_module));
    mcf->status_used = 1;
    return NGX_CONF_OK;
}

std::uint64_t monotonic_micros() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000000u + static_cast<std::uint64_t>(ts.tv_nsec) / 1000u;
}

void status_count_request(const RequestCtx *ctx) {
    StatusCounters *counters = status_counters();
    if (counters == nullptr || ctx->outcome == Outcome::none) {
        return;
    }
    counters->count_request(org_of(ctx), decision_slot(outcome_name(ctx->outcome)));
}

void status_count_settled(const RequestCtx *ctx) {
    if (StatusCounters *counters = status_counters()) {
        counters->count_settled(org_of(ctx), static_cast<std::uint64_t>(ctx->cost),
                                static_cast<std::uint64_t>(ctx->usage.input_total()),
                                static_cast<std::uint64_t>(ctx->usage.output), settled_from_slot(ctx->settled_from));
    }
}

void status_count_block(const CapRef &cap) {
    if (StatusCounters *counters = status_counters()) {
        counters->count_block(scope_name(cap.scope), limit_label(cap));
    }
}

void status_count_block(Scope scope, const char *limit) {
    if (StatusCounters *counters = status_counters()) {
        counters->count_block(scope_name(scope), limit);
    }
}

void status_count_reserve(const RequestCtx *ctx, bool reserved) {
    StatusCounters *counters = status_counters();
    if (counters == nullptr) {
        return;
    }
    const std::uint64_t now = monotonic_micros();
    counters->observe_reserve(now > ctx->reserve_started_us ? now - ctx->reserve_started_us : 0);
    if (reserved) {
        counters->count_reserved(static_cast<std::uint64_t>(ctx->reserved.cost));
    }
}

}  // namespace spendcap_ngx
