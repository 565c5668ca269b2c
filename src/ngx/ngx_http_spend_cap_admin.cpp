// The management API (SPEC section 7) as a content handler: the token file
// at configuration time, then per request the body, the bearer check, and
// the core's Operation (admin/ops.h) driven over the worker's async Redis
// connection. Routing, validation and the answers are the core's.
#include "ngx_http_spend_cap_ctx.h"
#include "ngx_http_spend_cap_answer.h"
#include "base/digest.h"

#include <hiredis/hiredis.h>
#include <sys/stat.h>

#include <exception>
#include <fstream>
#include <memory>
#include <new>

#include "admin/api.h"
#include "admin/ops.h"
#include "admin/render.h"
#include "admin/route.h"
#include "admin/secret.h"

namespace spendcap_ngx {

namespace {

// One API request's state; lives in the request pool, destroyed by a cleanup.
struct AdminCtx {
    ngx_http_request_t *r = nullptr;
    std::shared_ptr<const Policy> policy;  // the operation points into it
    std::unique_ptr<admin::Operation> operation;
    RedisOp *op = nullptr;                 // the command in flight
    ngx_msec_t timeout = 0;

    ~AdminCtx() {
        redis_forget(op);  // a late reply must not touch this freed request
    }
};

// The answer (JSON unless `content_type` says otherwise), with Allow for a
// 405 and Retry-After for a 503.
ngx_int_t send_answer(ngx_http_request_t *r, int status, const std::string &body, const std::string &allow,
                      const std::string &content_type = "application/json") {
    ExtraHeaders headers;
    if (!allow.empty()) {
        headers.emplace_back("Allow", allow);
    }
    if (status == 503) {
        headers.emplace_back("Retry-After", "1");
    }
    return send_body(r, status, content_type, body, headers);
}

ngx_int_t send_error(ngx_http_request_t *r, const admin::ApiError &e) {
    return send_answer(r, e.status, admin::render_error(e), e.allow);
}

void finish(AdminCtx *ctx) {
    const admin::Response &response = ctx->operation->response();
    if (!ctx->operation->change().empty()) {
        ngx_log_error(NGX_LOG_NOTICE, ctx->r->connection->log, 0, "spend_cap: admin: %s",
                      ctx->operation->change().c_str());
    }
    ngx_http_finalize_request(ctx->r, send_answer(ctx->r, response.status, response.body, response.allow,
                                                     response.content_type));
}

void run(AdminCtx *ctx, std::optional<spendcap::Command> command);

void on_reply(void *data, RedisStatus status, const redisReply *reply) {
    auto *ctx = static_cast<AdminCtx *>(data);
    ctx->op = nullptr;
    try {
        if (status != RedisStatus::reply || reply == nullptr) {
            ngx_log_error(NGX_LOG_ERR, ctx->r->connection->log, 0, "spend_cap: admin: redis %s",
                          status == RedisStatus::timeout ? "timed out" : "is unavailable");
            ngx_http_finalize_request(ctx->r, send_error(ctx->r, admin::unavailable()));
            return;
        }
        if (reply->type == REDIS_REPLY_ERROR) {
            ngx_log_error(NGX_LOG_ERR, ctx->r->connection->log, 0, "spend_cap: admin: redis: %s", reply->str);
        }
        run(ctx, ctx->operation->next(to_reply(reply)));
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_ERR, ctx->r->connection->log, 0, "spend_cap: admin: %s", e.what());
        ngx_http_finalize_request(ctx->r, NGX_HTTP_INTERNAL_SERVER_ERROR);
    }
}

// Sends the next command, or the answer when there is none.
void run(AdminCtx *ctx, std::optional<spendcap::Command> command) {
    if (!command) {
        finish(ctx);
        return;
    }
    ctx->op = redis_eval(std::move(command->argv), command->script, ctx->timeout, on_reply, ctx);
    if (ctx->op == nullptr) {
        ngx_http_finalize_request(ctx->r, send_error(ctx->r, admin::unavailable()));
    }
}

std::string_view header_value(const ngx_table_elt_t *h) {
    return h == nullptr ? std::string_view() : std::string_view(reinterpret_cast<const char *>(h->value.data), h->value.len);
}

// The bearer token of Authorization ("" none).
std::string bearer(ngx_http_request_t *r) {
    std::string_view v = header_value(r->headers_in.authorization);
    if (v.size() < 7 || ngx_strncasecmp((u_char *) v.data(), (u_char *) "bearer ", 7) != 0) {
        return {};
    }
    v.remove_prefix(7);
    while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
    while (!v.empty() && v.back() == ' ') v.remove_suffix(1);
    return std::string(v);
}

void destroy(void *data) { static_cast<AdminCtx *>(data)->~AdminCtx(); }

void body_read(ngx_http_request_t *r) {
    try {
        auto *lcf = static_cast<LocConf *>(ngx_http_get_module_loc_conf(r, ngx_http_spend_cap_module));
        auto *clcf = static_cast<ngx_http_core_loc_conf_t *>(ngx_http_get_module_loc_conf(r, ngx_http_core_module));
        auto *mcf = static_cast<MainConf *>(ngx_http_get_module_main_conf(r, ngx_http_spend_cap_module));

        std::string body;
        if (r->request_body != nullptr) {
            for (ngx_chain_t *cl = r->request_body->bufs; cl; cl = cl->next) {
                if (ngx_buf_size(cl->buf) == 0) {
                    continue;  // the end of an empty body
                }
                if (!ngx_buf_in_memory(cl->buf)) {
                    // Spooled: reading it back would block; the limit says why.
                    admin::ApiError e{413, "payload_too_large", "a request body is at most 64 KiB", ""};
                    ngx_http_finalize_request(r, send_error(r, e));
                    return;
                }
                body.append(reinterpret_cast<const char *>(cl->buf->pos), cl->buf->last - cl->buf->pos);
            }
        }
        if (body.size() > admin::kMaxBodyBytes) {
            ngx_http_finalize_request(r, send_error(r, {413, "payload_too_large", "a request body is at most 64 KiB", ""}));
            return;
        }

        // The path below the location's prefix.
        std::string_view uri(reinterpret_cast<const char *>(r->uri.data), r->uri.len);
        std::string_view prefix(reinterpret_cast<const char *>(clcf->name.data), clcf->name.len);
        std::string_view path = uri.substr(0, prefix.size()) == prefix ? uri.substr(prefix.size()) : uri;
        std::string_view method(reinterpret_cast<const char *>(r->method_name.data), r->method_name.len);
        std::string_view args(reinterpret_cast<const char *>(r->args.data), r->args.len);
        admin::Routed routed = admin::route(method, path, args);

        // Who calls: the key's own secret for the self-service calls, the
        // admin token for every other; nothing is told to a caller without
        // either (not even which paths exist).
        const std::string token = bearer(r);
        const bool self = routed.route && admin::is_self_call(routed.route->call);
        const std::string_view expected(reinterpret_cast<const char *>(lcf->admin_token.data), lcf->admin_token.len);
        if (!self && (token.empty() || !admin::token_matches(expected, token))) {
            ngx_http_finalize_request(r, send_error(r, admin::unauthorized()));
            return;
        }
        if (!routed.route) {
            ngx_http_finalize_request(r, send_error(r, routed.error));
            return;
        }
        if (self && token.empty()) {
            ngx_http_finalize_request(r, send_error(r, admin::unauthorized()));
            return;
        }

        ngx_pool_cleanup_t *cln = ngx_pool_cleanup_add(r->pool, sizeof(AdminCtx));
        if (cln == nullptr) {
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }
        auto *ctx = new (cln->data) AdminCtx();
        cln->handler = destroy;
        ctx->r = r;
        ctx->policy = mcf->state->policy;
        ctx->timeout = lcf->timeout;
        ctx->operation = std::make_unique<admin::Operation>(*ctx->policy, *routed.route, std::move(body), unix_ms(),
                                                            self ? sha256_hex(token) : std::string());
        run(ctx, ctx->operation->start());
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0, "spend_cap: admin: %s", e.what());
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
    }
}

ngx_int_t admin_handler(ngx_http_request_t *r) {
    if (r->headers_in.content_length_n > static_cast<off_t>(admin::kMaxBodyBytes)) {
        ngx_int_t rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }
        return send_error(r, {413, "payload_too_large", "a request body is at most 64 KiB", ""});
    }
    ngx_int_t rc = ngx_http_read_client_request_body(r, body_read);
    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }
    return NGX_DONE;
}

}  // namespace

// spend_cap_admin TOKEN_FILE: the token is the file's first line, read now.
char *set_admin(ngx_conf_t *cf, ngx_command_t *, void *conf) {
    auto *lcf = static_cast<LocConf *>(conf);
    if (lcf->admin_token.len != 0) {
        return (char *) "is duplicate";
    }
    auto *value = static_cast<ngx_str_t *>(cf->args->elts);
    ngx_str_t file = value[1];
    if (ngx_conf_full_name(cf->cycle, &file, 1) != NGX_OK) {
        return (char *) NGX_CONF_ERROR;
    }
    const std::string path = to_string(file);
    std::string token;
    try {
        std::ifstream in(path);
        if (!in) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno, "spend_cap_admin: cannot read the token file \"%s\"",
                               path.c_str());
            return (char *) NGX_CONF_ERROR;
        }
        std::getline(in, token);
    } catch (const std::exception &) {
        return (char *) NGX_CONF_ERROR;
    }
    while (!token.empty() && (token.back() == '\r' || token.back() == ' ' || token.back() == '\t')) token.pop_back();
    while (!token.empty() && (token.front() == ' ' || token.front() == '\t')) token.erase(0, 1);
    if (token.empty()) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "spend_cap_admin: the token file \"%s\" has an empty first line",
                           path.c_str());
        return (char *) NGX_CONF_ERROR;
    }
    struct stat st;
    if (stat(path.c_str(), &st) == 0 && (st.st_mode & S_IROTH)) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "spend_cap_admin: the token file \"%s\" is readable by every user of this machine",
                           path.c_str());
    }
    lcf->admin_token = pool_str(cf->pool, token);
    if (lcf->admin_token.data == nullptr) {
        return (char *) NGX_CONF_ERROR;
    }
    auto *clcf = static_cast<ngx_http_core_loc_conf_t *>(ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module));
    clcf->handler = admin_handler;
    return NGX_CONF_OK;
}

}  // namespace spendcap_ngx
