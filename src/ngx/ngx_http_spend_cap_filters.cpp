// The response side: the x-spend-* headers of an allowed request, and the
// usage reader fed with the response as it passes (the chain goes on unchanged).
#include "ngx_http_spend_cap_ctx.h"

#include <exception>

namespace spendcap_ngx {

ngx_int_t header_filter(ngx_http_request_t *r) {
    RequestCtx *ctx = get_ctx(r);
    if (ctx == nullptr || r != r->main || !passed(ctx) || !is_metered(ctx->endpoint) || ctx->scanner) {
        return next_header_filter(r);
    }
    try {
        std::optional<SpendHeaders> h;
        if (ctx->ledger != nullptr) {
            h = spend_headers(*ctx->ledger, ctx->decided);
        }
        if (h) {
            if (add_header(r, "x-spend-limit-usd", h->limit_usd) != NGX_OK
                || add_header(r, "x-spend-remaining-usd", h->remaining_usd) != NGX_OK
                || (!h->reset.empty() && add_header(r, "x-spend-reset", h->reset) != NGX_OK)
                || add_header(r, "x-spend-scope", h->scope) != NGX_OK) {
                return NGX_ERROR;
            }
        }
        ngx_table_elt_t *enc = r->headers_out.content_encoding;
        std::optional<ContentEncoding> encoding =
            content_encoding_for(enc != nullptr ? to_string(enc->value) : std::string());
        if (!encoding) {
            ctx->response_unreadable = true;  // e.g. br: no decoder here
        } else {
            ctx->scanner.emplace(ctx->surface, body_format_for(to_string(r->headers_out.content_type)),
                                 *encoding);
            r->filter_need_in_memory = 1;
        }
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0, "spend_cap: %s", e.what());
        return NGX_ERROR;
    }
    return next_header_filter(r);
}

// Reads usage as the response passes; the chain itself goes on unchanged.
ngx_int_t body_filter(ngx_http_request_t *r, ngx_chain_t *in) {
    RequestCtx *ctx = get_ctx(r);
    if (ctx != nullptr && r == r->main && ctx->scanner
        && ctx->scanner->state() == UsageScanner::State::reading) {
        try {
            for (ngx_chain_t *cl = in; cl; cl = cl->next) {
                ngx_buf_t *b = cl->buf;
                if (ngx_buf_in_memory(b)) {
                    ctx->scanner->feed(std::string_view(reinterpret_cast<const char *>(b->pos),
                                                        b->last - b->pos));
                } else if (b->in_file) {
                    ctx->response_unreadable = true;
                }
                if (b->last_buf) {
                    ctx->scanner->finish();
                    break;
                }
            }
        } catch (const std::exception &e) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0, "spend_cap: %s", e.what());
            ctx->response_unreadable = true;
        }
    }
    return next_body_filter(r, in);
}

}  // namespace spendcap_ngx
