// spend_cap_dashboard API_PREFIX: the dashboard's page and files (SPEC
// section 11), from memory. The core (dashboard/) built everything this
// location serves when the configuration was read and decides each answer;
// this file only sends it.
#include "ngx_http_spend_cap_ctx.h"

#include <exception>
#include <new>
#include <optional>
#include <string_view>

#include "dashboard/prefix.h"
#include "dashboard/serve.h"

namespace spendcap_ngx {
namespace {

namespace dashboard = spendcap::dashboard;

// The header's name and value point into static storage or the location's
// Dashboard, which outlive every request of its configuration: nothing is copied.
ngx_int_t push_header(ngx_http_request_t *r, std::string_view name, std::string_view value) {
    auto *h = static_cast<ngx_table_elt_t *>(ngx_list_push(&r->headers_out.headers));
    if (h == nullptr) {
        return NGX_ERROR;
    }
    h->hash = 1;
    h->key.len = name.size();
    h->key.data = (u_char *) name.data();
    h->value.len = value.size();
    h->value.data = (u_char *) value.data();
#if defined(nginx_version) && nginx_version >= 1023000
    h->next = nullptr;
#endif
    return NGX_OK;
}

ngx_int_t send_answer(ngx_http_request_t *r, const dashboard::Answer &a) {
    r->headers_out.status = static_cast<ngx_uint_t>(a.status);
    r->headers_out.content_type.len = a.content_type.size();
    r->headers_out.content_type.data = (u_char *) a.content_type.data();
    r->headers_out.content_type_len = a.content_type.size();
    r->headers_out.content_type_lowcase = nullptr;
    if (a.status == NGX_HTTP_NOT_MODIFIED) {
        r->header_only = 1;
        r->headers_out.content_length_n = -1;
    } else {
        r->headers_out.content_length_n = static_cast<off_t>(a.body.size());
    }
    for (const dashboard::Header &header : a.headers) {
        if (push_header(r, header.name, header.value) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }
    ngx_int_t rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;  // HEAD and 304 end here
    }
    ngx_buf_t *b = static_cast<ngx_buf_t *>(ngx_calloc_buf(r->pool));
    if (b == nullptr) {
        return NGX_ERROR;
    }
    b->pos = (u_char *) a.body.data();
    b->last = b->pos + a.body.size();
    b->memory = a.body.empty() ? 0 : 1;  // read-only, never copied; an empty one is only the last_buf mark
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;
    ngx_chain_t out{b, nullptr};
    return ngx_http_output_filter(r, &out);
}

ngx_int_t dashboard_handler(ngx_http_request_t *r) {
    auto *lcf = static_cast<LocConf *>(ngx_http_get_module_loc_conf(r, ngx_http_spend_cap_module));
    if (lcf->dashboard == nullptr) {
        return NGX_HTTP_NOT_FOUND;
    }
    ngx_int_t rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }
    std::optional<std::string_view> if_none_match;
    if (r->headers_in.if_none_match != nullptr) {
        const ngx_str_t &value = r->headers_in.if_none_match->value;
        if_none_match = std::string_view(reinterpret_cast<const char *>(value.data), value.len);
    }
    const bool get_or_head = (r->method & (NGX_HTTP_GET | NGX_HTTP_HEAD)) != 0;
    const std::string_view uri(reinterpret_cast<const char *>(r->uri.data), r->uri.len);
    return send_answer(r, dashboard::answer(*lcf->dashboard, get_or_head, uri, if_none_match));
}

ngx_int_t dashboard_handler_safe(ngx_http_request_t *r) {
    try {
        return dashboard_handler(r);
    } catch (const std::exception &) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
}

}  // namespace

// The page and the ETags are built now, once per location; the Dashboard
// lives in the configuration's pool (destroyed with it by a cleanup).
char *set_dashboard(ngx_conf_t *cf, ngx_command_t *, void *conf) {
    auto *lcf = static_cast<LocConf *>(conf);
    if (lcf->dashboard != nullptr) {
        return (char *) "is duplicate";
    }
    auto *clcf = static_cast<ngx_http_core_loc_conf_t *>(ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module));
    if (clcf->handler != nullptr) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "spend_cap_dashboard: another directive already answers in this location");
        return (char *) NGX_CONF_ERROR;
    }
    const auto *value = static_cast<ngx_str_t *>(cf->args->elts);
    const std::string_view prefix(reinterpret_cast<const char *>(value[1].data), value[1].len);
    try {
        if (auto problem = dashboard::api_prefix_problem(prefix)) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "spend_cap_dashboard: \"%V\": %s", &value[1], problem->c_str());
            return (char *) NGX_CONF_ERROR;
        }
        ngx_pool_cleanup_t *cln = ngx_pool_cleanup_add(cf->pool, sizeof(dashboard::Dashboard));
        if (cln == nullptr) {
            return (char *) NGX_CONF_ERROR;
        }
        lcf->dashboard = new (cln->data) dashboard::Dashboard(prefix);
        cln->handler = [](void *p) { static_cast<dashboard::Dashboard *>(p)->~Dashboard(); };
    } catch (const std::exception &e) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "spend_cap_dashboard: %s", e.what());
        return (char *) NGX_CONF_ERROR;
    }
    clcf->handler = dashboard_handler_safe;
    return NGX_CONF_OK;
}

}  // namespace spendcap_ngx
