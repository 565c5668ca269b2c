// The per-request state's life, and small helpers the glue's files share.
#include "ngx_http_spend_cap_ctx.h"

#include <cstring>

namespace spendcap_ngx {

// This worker's ledgers: a key's counters are named once per minute.
LedgerCache ledgers;
IdentityCache identities;

ngx_http_output_header_filter_pt next_header_filter;
ngx_http_output_body_filter_pt next_body_filter;
ngx_http_request_body_filter_pt next_request_body_filter;

const char *outcome_name(Outcome o) {
    switch (o) {
    case Outcome::allow: return "allow";
    case Outcome::block: return "block";
    case Outcome::reject: return "reject";
    case Outcome::dry_run_block: return "dry_run_block";
    case Outcome::fail_open: return "fail_open";
    case Outcome::error: return "error";
    case Outcome::none: break;
    }
    return "";
}

void destroy_ctx(void *data) {
    static_cast<RequestCtx *>(data)->~RequestCtx();
}

// An internal redirect zeroes module contexts; the pool cleanup still holds
// ours (as in the realip module), so one request keeps one reservation.
RequestCtx *get_ctx(ngx_http_request_t *r) {
    auto *ctx = static_cast<RequestCtx *>(ngx_http_get_module_ctx(r, ngx_http_spend_cap_module));
    if (ctx != nullptr || r != r->main) {
        return ctx;
    }
    for (ngx_pool_cleanup_t *cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == destroy_ctx) {
            ctx = static_cast<RequestCtx *>(cln->data);
            ngx_http_set_ctx(r, ctx, ngx_http_spend_cap_module);
            return ctx;
        }
    }
    return nullptr;
}

std::string to_string(const ngx_str_t &s) {
    return std::string(reinterpret_cast<const char *>(s.data), s.len);
}

ngx_str_t pool_str(ngx_pool_t *pool, const std::string &s) {
    ngx_str_t out{0, nullptr};
    auto *p = static_cast<u_char *>(ngx_pnalloc(pool, s.size() ? s.size() : 1));
    if (p != nullptr) {
        ngx_memcpy(p, s.data(), s.size());
        out.len = s.size();
        out.data = p;
    }
    return out;
}

ngx_int_t add_header(ngx_http_request_t *r, const char *name, const std::string &value) {
    ngx_table_elt_t *h = static_cast<ngx_table_elt_t *>(ngx_list_push(&r->headers_out.headers));
    if (h == nullptr) {
        return NGX_ERROR;
    }
    h->hash = 1;
    h->key.len = std::strlen(name);
    h->key.data = (u_char *) name;
    h->value = pool_str(r->pool, value);
#if defined(nginx_version) && nginx_version >= 1023000
    h->next = nullptr;
#endif
    return h->value.data ? NGX_OK : NGX_ERROR;
}

std::int64_t unix_ms() {
    const ngx_time_t *tp = ngx_timeofday();
    return static_cast<std::int64_t>(tp->sec) * 1000 + static_cast<std::int64_t>(tp->msec);
}

bool passed(const RequestCtx *ctx) {
    return ctx->outcome == Outcome::allow || ctx->outcome == Outcome::dry_run_block
           || ctx->outcome == Outcome::fail_open;
}

void resume_phases(ngx_http_request_t *r) {
    // Run on the request's own connection, not inside the Redis event.
    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_core_run_phases;
    ngx_post_event(r->connection->write, &ngx_posted_events);
}

}  // namespace spendcap_ngx
