#include "ngx_http_spend_cap_answer.h"

#include "ngx_http_spend_cap_ctx.h"  // add_header

namespace spendcap_ngx {

ngx_int_t send_json(ngx_http_request_t *r, int status, std::string_view body, const ExtraHeaders &headers) {
    return send_body(r, status, "application/json", body, headers);
}

ngx_int_t send_body(ngx_http_request_t *r, int status, std::string_view content_type, std::string_view body,
                    const ExtraHeaders &headers) {
    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    u_char *type = static_cast<u_char *>(ngx_pnalloc(r->pool, content_type.size()));
    if (type == nullptr && !content_type.empty()) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    if (!content_type.empty()) {
        ngx_memcpy(type, content_type.data(), content_type.size());
    }
    r->headers_out.status = status;
    r->headers_out.content_type.data = type;
    r->headers_out.content_type.len = content_type.size();
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = nullptr;
    r->headers_out.content_length_n = static_cast<off_t>(body.size());
    for (const auto &[name, value] : headers) {
        if (add_header(r, name, value) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }
    ngx_int_t rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }
    ngx_buf_t *b = ngx_create_temp_buf(r->pool, body.size());
    if (b == nullptr) {
        return NGX_ERROR;
    }
    b->last = ngx_cpymem(b->pos, body.data(), body.size());
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;
    ngx_chain_t out{b, nullptr};
    return ngx_http_output_filter(r, &out);
}

}  // namespace spendcap_ngx
