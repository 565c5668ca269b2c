// The preaccess phase: who calls (identify), what the request may cost at
// most (its body, read here), and the reservation of that worst case in
// Redis, in one round trip (reserve); the answer of a refusal.
#include "ngx_http_spend_cap_ctx.h"
#include "http/assessment.h"
#include "ngx_http_spend_cap_answer.h"
#include "ngx_http_spend_cap_identity.h"
#include "base/digest.h"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <unordered_set>
#include <vector>

#include "base/periods.h"

namespace spendcap_ngx {

// Sends a refusal in the API's envelope; the caller finalizes with the result.
static ngx_int_t send_error(ngx_http_request_t *r, const ErrorReply &e) {
    ExtraHeaders headers;
    if (e.retry_after > 0) {
        headers.emplace_back("Retry-After", std::to_string(e.retry_after));
    }
    return send_json(r, e.status, e.body, headers);
}

static ngx_int_t answer(ngx_http_request_t *r, RequestCtx *ctx, ErrorReply reply) {
    ctx->stage = Stage::decided;
    ngx_http_finalize_request(r, send_error(r, reply));
    return NGX_DONE;
}

// Sends the answer a decision left in ctx->error.
static ngx_int_t answer_decided(ngx_http_request_t *r, RequestCtx *ctx) {
    ErrorReply e = std::move(*ctx->error);
    ctx->error.reset();
    return answer(r, ctx, std::move(e));
}

static ngx_int_t answer(ngx_http_request_t *r, RequestCtx *ctx, ErrorCode code,
                 const std::string &message) {
    ctx->outcome = callers_error(code) ? Outcome::reject : Outcome::error;
    return answer(r, ctx, render_error(ctx->surface, code, message));
}

static std::optional<std::string_view> view_of(const ngx_table_elt_t *h) {
    if (h == nullptr) {
        return std::nullopt;
    }
    return std::string_view(reinterpret_cast<const char *>(h->value.data), h->value.len);
}

static const ngx_table_elt_t *find_header(ngx_http_request_t *r, const char *name, std::size_t len) {
    ngx_list_part_t *part = &r->headers_in.headers.part;
    auto *h = static_cast<ngx_table_elt_t *>(part->elts);
    for (ngx_uint_t i = 0;; i++) {
        if (i >= part->nelts) {
            if (part->next == nullptr) {
                return nullptr;
            }
            part = part->next;
            h = static_cast<ngx_table_elt_t *>(part->elts);
            i = 0;
        }
        if (h[i].key.len == len && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0) {
            return &h[i];
        }
    }
}

// The caller's secret: spend_cap_key if configured, else (the core decides)
// Authorization's bearer token or x-api-key.
static std::string caller_secret(ngx_http_request_t *r, const LocConf *lcf) {
    if (lcf->key != nullptr) {
        ngx_str_t v;
        if (ngx_http_complex_value(r, lcf->key, &v) != NGX_OK) {
            return {};
        }
        return to_string(v);
    }
    return caller_key(view_of(r->headers_in.authorization), view_of(find_header(r, "x-api-key", 9)));
}

// The customer (spend_cap_customer), checked: it names Redis keys and
// usually comes from the client, so it never reaches into another's layout.
static bool read_customer(ngx_http_request_t *r, RequestCtx *ctx, const LocConf *lcf, ngx_int_t &rc) {
    if (lcf->customer == nullptr) {
        return true;
    }
    ngx_str_t v;
    if (ngx_http_complex_value(r, lcf->customer, &v) != NGX_OK) {
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return false;
    }
    ctx->customer = to_string(v);
    if (!ctx->customer.empty() && !valid_id(ctx->customer)) {
        ctx->customer.clear();
        rc = answer(r, ctx, ErrorCode::invalid_request, std::string("invalid customer id: it ") + kIdRule);
        return false;
    }
    return true;
}

// Step 1: who is calling. Returns NGX_DECLINED to go on, NGX_AGAIN while
// Redis is asked, else an answer.
static ngx_int_t identify(ngx_http_request_t *r, RequestCtx *ctx, const LocConf *lcf) {
    std::string secret = caller_secret(r, lcf);
    if (secret.empty()) {
        return answer(r, ctx, ErrorCode::invalid_api_key, "missing api key");
    }
    ngx_int_t rc = NGX_OK;
    if (!read_customer(r, ctx, lcf, rc)) {
        return rc;
    }
    ctx->sha256 = sha256_hex(secret);
    switch (resolve_caller(ctx)) {
    case Resolve::ready:
        return NGX_DECLINED;
    case Resolve::waiting:
        return wait_for_identity(r, ctx, Stage::identified);
    case Resolve::refused:
        break;
    }
    return answer_decided(r, ctx);
}


static void on_redis_failure(RequestCtx *ctx, const char *why) {
    auto *lcf = static_cast<LocConf *>(ngx_http_get_module_loc_conf(ctx->r, ngx_http_spend_cap_module));
    if (lcf->fail_mode == fail_open) {
        ngx_log_error(NGX_LOG_WARN, ctx->r->connection->log, 0,
                      "spend_cap: redis %s, letting the request through (fail_mode open)", why);
        ctx->outcome = Outcome::fail_open;
        return;
    }
    ngx_log_error(NGX_LOG_ERR, ctx->r->connection->log, 0,
                  "spend_cap: redis %s, refusing the request (fail_mode closed)", why);
    ctx->outcome = Outcome::error;
    ctx->error = render_error(ctx->surface, ErrorCode::spend_cap_unavailable, "");
}

static void on_reserve_reply(void *data, RedisStatus status, const std::vector<long long> *ints, const char *error,
                      bool not_done) {
    auto *ctx = static_cast<RequestCtx *>(data);
    ctx->stage = Stage::decided;
    try {
        const Ledger &ledger = *ctx->ledger;
        if (ints != nullptr) {
            ctx->decided = decode_reserve_reply(ledger, *ints);
        }
        // (allowed includes a dry run's would-be block: it reserved too)
        status_count_reserve(ctx, ints != nullptr && ctx->decided.kind == ReserveOutcome::Kind::allowed);
        if (ints != nullptr && ctx->decided.kind == ReserveOutcome::Kind::stale) {
            // The org's records changed since its caps were read here: Redis
            // did nothing. Read them again and reserve again (twice at most:
            // a change a second is already far more than an API makes).
            identities.org_changed(ledger.org);
            ctx->reserve_sent = false;
            ctx->ticket.sent = false;
            ctx->ticket.batch_id.clear();
            if (++ctx->stale_reserves <= 2) {
                ctx->identity.reset();
                ctx->key = nullptr;
                ctx->stage = Stage::body_read;
                resume_phases(ctx->r);
                return;
            }
            ctx->decided = ReserveOutcome{};
            ctx->decided.error = "the org's records kept changing";
        }
        const ReserveOutcome &decided = ctx->decided;
        if (ints == nullptr || decided.kind == ReserveOutcome::Kind::error) {
            if (status == RedisStatus::reply) {
                // An error reply: the script changed nothing (it checks
                // before it writes, and its writes are all or nothing).
                ctx->reserve_not_done = not_done;
                ngx_log_error(NGX_LOG_ERR, ctx->r->connection->log, 0, "spend_cap: reserving request %s: %s",
                              ctx->request_id.c_str(), ints != nullptr ? decided.error.c_str() : error);
            }
            on_redis_failure(ctx, status == RedisStatus::timeout       ? "timed out"
                                  : status == RedisStatus::unavailable ? "is unavailable"
                                                                       : "gave a bad reply");
        } else if (decided.refused_by) {
            CapRef cap = cap_ref(ledger, *decided.refused_by, ngx_time());
            ctx->blocked_by = blocked_by_label(cap);
            ErrorReply refusal = render_error(ctx->surface, error_code_for(cap.limit), "", cap);
            if (decided.kind == ReserveOutcome::Kind::blocked) {
                status_count_block(cap);
                ctx->outcome = Outcome::block;
                ctx->error = std::move(refusal);
            } else {
                // Dry run: counted as allowed; say what would have happened.
                ctx->reserve_answered = true;
                ctx->outcome = Outcome::dry_run_block;
                ngx_log_error(NGX_LOG_WARN, ctx->r->connection->log, 0,
                              "spend_cap: dry run: request %s would have been blocked by %s (%d %s)",
                              ctx->request_id.c_str(), ctx->blocked_by.c_str(), refusal.status,
                              error_code_name(error_code_for(cap.limit)));
            }
        } else {
            ctx->reserve_answered = true;
            ctx->outcome = Outcome::allow;
        }
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_ERR, ctx->r->connection->log, 0, "spend_cap: %s", e.what());
        on_redis_failure(ctx, "reply could not be handled");
    }
    resume_phases(ctx->r);
}

// The body the upstream gets instead of the client's (already read in full).
static ngx_int_t replace_request_body(ngx_http_request_t *r, const std::string &body) {
    ngx_buf_t *b = ngx_create_temp_buf(r->pool, body.size());
    ngx_chain_t *cl = ngx_alloc_chain_link(r->pool);
    if (b == nullptr || cl == nullptr || r->request_body == nullptr) {
        return NGX_ERROR;
    }
    b->last = ngx_cpymem(b->pos, body.data(), body.size());
    b->last_buf = 1;
    b->last_in_chain = 1;
    cl->buf = b;
    cl->next = nullptr;
    r->request_body->bufs = cl;
    r->headers_in.content_length_n = body.size();
    if (r->headers_in.content_length != nullptr) {
        r->headers_in.content_length->value = pool_str(r->pool, std::to_string(body.size()));
    }
    return NGX_OK;
}

// What the upstream gets instead of the client's body, when anything is to
// be added: an OpenAI stream reports usage only if asked (ask, so that it
// settles at its real cost rather than at the reservation), and a request
// without an output bound is given the one its reservation assumed (so that
// the provider cannot bill more output than was reserved).
// `sent_bytes`: the length of the body the upstream gets (what bounds its input).
static ngx_int_t edit_body(ngx_http_request_t *r, RequestCtx *ctx, const RequestInfo &info, std::size_t &sent_bytes) {
    auto *lcf = static_cast<LocConf *>(ngx_http_get_module_loc_conf(r, ngx_http_spend_cap_module));
    std::optional<std::string> edited;
    if (lcf->stream_usage == stream_usage_inject && ctx->surface == Surface::openai && info.stream
        && !info.include_usage && stream_usage_is_optional(to_string(r->uri))) {
        edited = with_stream_usage(ctx->body);
    }
    const std::string_view field = output_bound_field(ctx->endpoint);
    if (!info.max_output_tokens && !field.empty()) {
        const std::int64_t bound = output_bound(*ctx->price, *ctx->policy, std::nullopt);
        if (std::optional<std::string> bounded = with_output_bound(edited ? *edited : ctx->body, field, bound)) {
            edited = std::move(bounded);
        }
    }
    sent_bytes = edited ? edited->size() : ctx->body.size();
    return edited ? replace_request_body(r, *edited) : NGX_OK;
}

// Steps 2-4 once the body is in: parse, estimate, reserve. NGX_AGAIN while
// Redis decides; NGX_OK when decided at once (no connection); else answered.
static ngx_int_t reserve(ngx_http_request_t *r, RequestCtx *ctx) {
    auto *mcf = static_cast<MainConf *>(ngx_http_get_module_main_conf(r, ngx_http_spend_cap_module));
    auto *lcf = static_cast<LocConf *>(ngx_http_get_module_loc_conf(r, ngx_http_spend_cap_module));

    if (ctx->identity == nullptr) {
        // Read again after a stale reserve.
        switch (resolve_caller(ctx)) {
        case Resolve::ready:
            break;
        case Resolve::waiting:
            return wait_for_identity(r, ctx, Stage::body_read);
        case Resolve::refused:
            return answer_decided(r, ctx);
        }
    }

    const BodyAssessment assessed =
        assess_body(*ctx->policy, ctx->body, view_of(find_header(r, "anthropic-beta", 14)).value_or(""));
    if (assessed.refusal) {
        return answer(r, ctx, *assessed.refusal, assessed.message);
    }
    ctx->price = assessed.price;
    std::size_t sent_bytes = 0;
    if (edit_body(r, ctx, assessed.info, sent_bytes) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    ctx->estimate = estimate_of(assessed, *ctx->policy, static_cast<std::int64_t>(sent_bytes));
    ctx->reserved = Amounts{ctx->estimate.cost, ctx->estimate.tokens(), 1};
    ctx->ledger = ledgers.get(*ctx->policy, *ctx->identity, ngx_time(), assessed.info.model);
    if (ctx->ledger->model_refused_by) {
        // allowed_models (SPEC section 2b): refused before anything is reserved
        const Scope scope = *ctx->ledger->model_refused_by;
        ctx->blocked_by = std::string(scope_name(scope)) + ":allowed_models";
        ErrorReply refusal = render_error(ctx->surface, ErrorCode::model_not_allowed,
                                          model_not_allowed_message(assessed.info.model, scope));
        if (lcf->dry_run == 0) {
            status_count_block(scope, "allowed_models");
            ctx->outcome = Outcome::block;
            return answer(r, ctx, std::move(refusal));
        }
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "spend_cap: dry run: request would have been refused by %s (403 model_not_allowed)",
                      ctx->blocked_by.c_str());
    }

    ngx_http_variable_value_t *id = ngx_http_get_indexed_variable(r, mcf->request_id_index);
    if (id == nullptr || id->not_found) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    ctx->request_id.assign(reinterpret_cast<const char *>(id->data), id->len);
    if (ctx->ledger->counters.empty() || scripts::reserve().sha1.empty()) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;  // never reserve nothing: that would lift every cap
    }

    // Waiting first: the answer may come before reserve_later returns (a
    // batch that fills up and cannot be sent).
    ctx->stage = Stage::waiting_redis;
    // Notice a client that goes away while we wait (as limit_req does), its
    // read event armed.
    r->read_event_handler = ngx_http_test_reading;
    r->write_event_handler = ngx_http_request_empty_handler;
    if (ngx_handle_read_event(r->connection->read, 0) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    ctx->reserve_started_us = monotonic_micros();
    if (!reserve_later(ctx->ticket, ReserveItem{ctx->ledger, ctx->reserved, ctx->request_id, lcf->dry_run != 0},
                       lcf->timeout, mcf->reservation_ttl, on_reserve_reply, ctx)) {
        r->read_event_handler = ngx_http_block_reading;
        r->write_event_handler = ngx_http_core_run_phases;
        on_redis_failure(ctx, "is not connected");
        ctx->stage = Stage::decided;
        return NGX_OK;
    }
    ctx->reserve_sent = true;  // queued; known to have left only at the log phase
    return NGX_AGAIN;
}

static ngx_int_t decided(ngx_http_request_t *r, RequestCtx *ctx) {
    if (ctx->error) {
        return answer_decided(r, ctx);
    }
    return NGX_DECLINED;  // allowed: on to the next handler
}

static void body_read(ngx_http_request_t *r) {
    RequestCtx *ctx = get_ctx(r);
    ctx->stage = Stage::body_read;
    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);
}

static ngx_int_t start_reading_body(ngx_http_request_t *r, RequestCtx *ctx);

// The path the upstream gets: the client's own unless it was rewritten
// (proxy_pass without a URI passes it on as it came).
static std::string sent_path(ngx_http_request_t *r) {
    if (!r->valid_unparsed_uri) {
        return to_string(r->uri);
    }
    std::string raw = to_string(r->unparsed_uri);
    return raw.substr(0, raw.find('?'));
}

// The caller is known: a metered endpoint's body is read next; a free one
// goes on, counted nowhere; anything else is refused.
static ngx_int_t identified(ngx_http_request_t *r, RequestCtx *ctx) {
    if (ctx->endpoint == Endpoint::free) {
        ctx->stage = Stage::decided;
        ctx->outcome = Outcome::allow;
        return NGX_DECLINED;
    }
    std::string refusal = endpoint_refusal(ctx->endpoint, to_string(r->method_name), to_string(r->uri), sent_path(r));
    if (!refusal.empty()) {
        return answer(r, ctx, ErrorCode::invalid_request, refusal);
    }
    return start_reading_body(r, ctx);
}

static ngx_int_t start_reading_body(ngx_http_request_t *r, RequestCtx *ctx) {
    // Content-Length is the caller's word, not memory to set aside: room for
    // at most 1 MiB up front, the rest as bytes arrive.
    constexpr off_t kPresizeLimit = 1 << 20;
    if (r->headers_in.content_length_n > 0) {
        ctx->body.reserve(static_cast<std::size_t>(std::min(r->headers_in.content_length_n, kPresizeLimit)));
    }
    ctx->stage = Stage::reading_body;
    ngx_int_t rc = ngx_http_read_client_request_body(r, body_read);
    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }
    ngx_http_finalize_request(r, NGX_DONE);
    return NGX_DONE;
}

static ngx_int_t preaccess_handler_unsafe(ngx_http_request_t *r) {
    auto *lcf = static_cast<LocConf *>(ngx_http_get_module_loc_conf(r, ngx_http_spend_cap_module));
    if (!lcf->enable || r != r->main) {
        return NGX_DECLINED;
    }
    RequestCtx *ctx = get_ctx(r);

    if (ctx == nullptr) {
        auto *mcf = static_cast<MainConf *>(ngx_http_get_module_main_conf(r, ngx_http_spend_cap_module));
        ngx_pool_cleanup_t *cln = ngx_pool_cleanup_add(r->pool, sizeof(RequestCtx));
        if (cln == nullptr) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
        ctx = new (cln->data) RequestCtx();
        cln->handler = destroy_ctx;
        ngx_http_set_ctx(r, ctx, ngx_http_spend_cap_module);
        ctx->r = r;
        ctx->policy = mcf->state->policy;
        ctx->surface = lcf->surface == surface_anthropic ? Surface::anthropic
                       : lcf->surface == surface_openai  ? Surface::openai
                                                         : surface_for_path(to_string(r->uri));
        ctx->endpoint = endpoint_for(to_string(r->method_name), to_string(r->uri));
        ngx_int_t rc = identify(r, ctx, lcf);
        return rc == NGX_DECLINED ? identified(r, ctx) : rc;
    }

    switch (ctx->stage) {
    case Stage::identify:
    case Stage::identifying:
    case Stage::reading_body:
    case Stage::waiting_redis:
        return NGX_AGAIN;
    case Stage::identified:
        if (ctx->error) {
            return answer_decided(r, ctx);
        }
        return identified(r, ctx);
    case Stage::body_read: {
        if (ctx->error) {
            // reading the records again (after a stale reserve) failed
            return answer_decided(r, ctx);
        }
        if (!ctx->body_seen && r->request_body != nullptr) {
            ctx->body_seen = true;  // taken once, whatever runs again
            // Another module read the body before us: take what is in memory;
            // a body in a file would need a blocking read.
            for (ngx_chain_t *cl = r->request_body->bufs; cl; cl = cl->next) {
                if (ngx_buf_size(cl->buf) == 0) {
                    continue;
                }
                if (!ngx_buf_in_memory(cl->buf)) {
                    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                                  "spend_cap: request body was spooled before spend_cap saw it");
                    return NGX_HTTP_INTERNAL_SERVER_ERROR;
                }
                ctx->body.append(reinterpret_cast<const char *>(cl->buf->pos),
                                 cl->buf->last - cl->buf->pos);
            }
        }
        ngx_int_t rc = reserve(r, ctx);
        return rc == NGX_OK ? decided(r, ctx) : rc;
    }
    case Stage::decided:
        return decided(r, ctx);
    }
    return NGX_DECLINED;
}

ngx_int_t preaccess_handler(ngx_http_request_t *r) {
    try {
        return preaccess_handler_unsafe(r);
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0, "spend_cap: %s", e.what());
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
}

// Copies the request body as it arrives, before NGINX may spool it to a file.
ngx_int_t request_body_filter(ngx_http_request_t *r, ngx_chain_t *in) {
    RequestCtx *ctx = get_ctx(r);
    if (ctx != nullptr && ctx->stage == Stage::reading_body) {
        ctx->body_seen = true;
        try {
            for (ngx_chain_t *cl = in; cl; cl = cl->next) {
                if (ngx_buf_in_memory(cl->buf)) {
                    ctx->body.append(reinterpret_cast<const char *>(cl->buf->pos),
                                     cl->buf->last - cl->buf->pos);
                }
            }
        } catch (const std::exception &) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }
    return next_request_body_filter(r, in);
}

}  // namespace spendcap_ngx
