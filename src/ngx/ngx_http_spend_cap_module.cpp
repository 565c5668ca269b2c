// spend-cap: hard spend caps for LLM APIs, enforced in NGINX.
//
// The NGINX glue only: configuration, the preaccess handler that reserves the
// worst case in Redis, the filters that read usage from the response, and the
// log handler that settles. Pricing, policy, envelopes and Redis scripts live
// in the plain C++ core (src/core).

#include "ngx.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include <hiredis/hiredis.h>

#include "envelope.h"
#include "ledger.h"
#include "money.h"
#include "periods.h"
#include "policy.h"
#include "request.h"
#include "reservation.h"
#include "settlement.h"
#include "usage.h"
#include "ngx_http_spend_cap_redis.h"
#include "ngx_http_spend_cap_reserve.h"
#include "ngx_http_spend_cap_settle.h"
#include "ngx_http_spend_cap_sweep.h"

extern ngx_module_t ngx_http_spend_cap_module;

namespace {

using namespace spendcap;
using namespace spendcap_ngx;

constexpr ngx_uint_t surface_auto = 0, surface_openai = 1, surface_anthropic = 2;
constexpr ngx_uint_t fail_closed = 0, fail_open = 1;
constexpr ngx_uint_t stream_usage_off = 0, stream_usage_inject = 1;

// C++ state of the http block, owned by the configuration pool.
struct MainState {
    std::shared_ptr<const Policy> policy;
    RedisEndpoint redis;
};

struct MainConf {
    MainState *state;
    ngx_flag_t redis_set;
    ngx_int_t request_id_index;
    ngx_msec_t reservation_ttl;
};

struct LocConf {
    ngx_flag_t enable;
    ngx_uint_t surface;
    ngx_http_complex_value_t *key;
    ngx_http_complex_value_t *customer;
    ngx_flag_t dry_run;
    ngx_msec_t timeout;
    ngx_uint_t fail_mode;
    ngx_uint_t stream_usage;
};

enum class Outcome { none, allow, block, dry_run_block, fail_open, error };

const char *outcome_name(Outcome o) {
    switch (o) {
    case Outcome::allow: return "allow";
    case Outcome::block: return "block";
    case Outcome::dry_run_block: return "dry_run_block";
    case Outcome::fail_open: return "fail_open";
    case Outcome::error: return "error";
    case Outcome::none: break;
    }
    return "";
}

enum class Stage { identify, reading_body, body_read, waiting_redis, decided };

// Per-request state; lives in the request pool, destroyed by a pool cleanup.
struct RequestCtx {
    ngx_http_request_t *r = nullptr;
    Stage stage = Stage::identify;
    Outcome outcome = Outcome::none;
    Surface surface = Surface::openai;
    std::shared_ptr<const Policy> policy;  // keeps the pointers below alive across reloads
    const Key *key = nullptr;
    std::string customer;                  // "" = no customer scope
    std::string body;                      // the request body, copied as it arrives
    bool body_seen = false;                // our request body filter ran
    const ModelPrice *price = nullptr;
    Estimate estimate;
    Amounts reserved;                      // the estimate as the counters take it
    std::shared_ptr<const Ledger> ledger;  // every counter, taken at one moment (shared, cached)
    std::string request_id;
    ReserveTicket ticket;                  // its reservation's place in a batch
    bool reserve_sent = false;
    bool reserve_answered = false;         // Redis reserved it (allowed, or a dry run)
    bool reserve_not_done = false;         // Redis answered it with an error: it changed nothing
    std::optional<ErrorReply> error;       // answer to send when decided
    std::string blocked_by;                // "key:monthly"
    ReserveOutcome decided;                // what Redis said
    // response side
    std::optional<UsageScanner> scanner;
    bool response_unreadable = false;
    // settlement
    bool settled = false;
    Nanos cost = 0;
    Usage usage;                           // settled tokens (the estimate's when from the reservation)
    const char *settled_from = "";

    ~RequestCtx() {
        reserve_cancel(ticket);  // a late reply must not touch this freed request
    }
};

// This worker's ledgers: a key's counters are named once per minute.
LedgerCache ledgers;

ngx_http_output_header_filter_pt next_header_filter;
ngx_http_output_body_filter_pt next_body_filter;
ngx_http_request_body_filter_pt next_request_body_filter;

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

// Sends a JSON error answer; the caller finalizes with the result.
ngx_int_t send_error(ngx_http_request_t *r, const ErrorReply &e) {
    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    r->headers_out.status = e.status;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = nullptr;
    r->headers_out.content_length_n = e.body.size();
    if (e.retry_after > 0 && add_header(r, "Retry-After", std::to_string(e.retry_after)) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_int_t rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }
    ngx_buf_t *b = ngx_create_temp_buf(r->pool, e.body.size());
    if (b == nullptr) {
        return NGX_ERROR;
    }
    b->last = ngx_cpymem(b->pos, e.body.data(), e.body.size());
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;
    ngx_chain_t out{b, nullptr};
    return ngx_http_output_filter(r, &out);
}

ngx_int_t answer(ngx_http_request_t *r, RequestCtx *ctx, ErrorReply reply) {
    ctx->stage = Stage::decided;
    ngx_http_finalize_request(r, send_error(r, reply));
    return NGX_DONE;
}

ngx_int_t answer(ngx_http_request_t *r, RequestCtx *ctx, ErrorCode code,
                 const std::string &message) {
    ctx->outcome = Outcome::error;
    return answer(r, ctx, render_error(ctx->surface, code, message));
}

std::optional<std::string_view> view_of(const ngx_table_elt_t *h) {
    if (h == nullptr) {
        return std::nullopt;
    }
    return std::string_view(reinterpret_cast<const char *>(h->value.data), h->value.len);
}

const ngx_table_elt_t *find_header(ngx_http_request_t *r, const char *name, std::size_t len) {
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
std::string caller_secret(ngx_http_request_t *r, const LocConf *lcf) {
    if (lcf->key != nullptr) {
        ngx_str_t v;
        if (ngx_http_complex_value(r, lcf->key, &v) != NGX_OK) {
            return {};
        }
        return to_string(v);
    }
    return caller_key(view_of(r->headers_in.authorization), view_of(find_header(r, "x-api-key", 9)));
}

// Appends key_expired to the org's events; Redis keeps it to once per key and
// expiry, this worker to one command per key however often it knocks.
void report_key_expired(RequestCtx *ctx) {
    static std::unordered_set<std::string> reported;
    const std::string &org = ctx->policy->org_of(*ctx->key).id;
    if (!reported.insert(org + ":" + ctx->key->id + ":" + std::to_string(*ctx->key->expires_at)).second) {
        return;
    }
    std::vector<std::string> command = key_expired_command(org, *ctx->key, ngx_time());
    if (!command.empty()) {
        std::string what = "key_expired event of key " + ctx->key->id;
        redis_eval_reliably(std::move(command), &key_expired_script(), [what] { return what; });
    }
}

// Step 1: who is calling. Returns NGX_DECLINED to go on, else an answer.
ngx_int_t identify(ngx_http_request_t *r, RequestCtx *ctx, const LocConf *lcf) {
    std::string secret = caller_secret(r, lcf);
    if (secret.empty()) {
        return answer(r, ctx, ErrorCode::invalid_api_key, "missing api key");
    }
    ctx->key = ctx->policy->find_key(sha256_hex(secret));
    if (ctx->key == nullptr) {
        return answer(r, ctx, ErrorCode::invalid_api_key, "invalid api key");
    }
    if (ctx->key->revoked) {
        return answer(r, ctx, ErrorCode::api_key_revoked, "");
    }
    if (ctx->key->expires_at && *ctx->key->expires_at <= ngx_time()) {
        report_key_expired(ctx);
        return answer(r, ctx, ErrorCode::api_key_expired, "");
    }
    return NGX_DECLINED;
}

void resume_phases(ngx_http_request_t *r) {
    // Run on the request's own connection, not inside the Redis event.
    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_core_run_phases;
    ngx_post_event(r->connection->write, &ngx_posted_events);
}

void on_redis_failure(RequestCtx *ctx, const char *why) {
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

void on_reserve_reply(void *data, RedisStatus status, const std::vector<long long> *ints, const char *error,
                      bool not_done) {
    auto *ctx = static_cast<RequestCtx *>(data);
    ctx->stage = Stage::decided;
    try {
        const Ledger &ledger = *ctx->ledger;
        if (ints != nullptr) {
            ctx->decided = decode_reserve_reply(ledger, *ints);
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
ngx_int_t replace_request_body(ngx_http_request_t *r, const std::string &body) {
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

// An OpenAI stream reports usage only if asked: ask, so that it settles at
// its real cost rather than at the reservation.
ngx_int_t inject_stream_usage(ngx_http_request_t *r, RequestCtx *ctx, const RequestInfo &info) {
    auto *lcf = static_cast<LocConf *>(ngx_http_get_module_loc_conf(r, ngx_http_spend_cap_module));
    if (lcf->stream_usage != stream_usage_inject || ctx->surface != Surface::openai || !info.stream
        || info.include_usage || !stream_usage_is_optional(to_string(r->uri))) {
        return NGX_OK;
    }
    std::optional<std::string> body = with_stream_usage(ctx->body);
    return body ? replace_request_body(r, *body) : NGX_OK;
}

// Steps 2-4 once the body is in: parse, estimate, reserve. NGX_AGAIN while
// Redis decides; NGX_OK when decided at once (no connection); else answered.
ngx_int_t reserve(ngx_http_request_t *r, RequestCtx *ctx) {
    auto *mcf = static_cast<MainConf *>(ngx_http_get_module_main_conf(r, ngx_http_spend_cap_module));
    auto *lcf = static_cast<LocConf *>(ngx_http_get_module_loc_conf(r, ngx_http_spend_cap_module));

    if (lcf->customer != nullptr) {
        ngx_str_t v;
        if (ngx_http_complex_value(r, lcf->customer, &v) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
        ctx->customer = to_string(v);
        // It names Redis keys and usually comes from the client: never let it
        // reach into another key's layout.
        if (!ctx->customer.empty() && !valid_id(ctx->customer)) {
            ctx->customer.clear();
            return answer(r, ctx, ErrorCode::invalid_request,
                          "invalid customer id: 1 to 128 characters without ':', '{', '}', spaces "
                          "or control characters");
        }
    }

    RequestParse parsed = parse_request_body(ctx->body);
    if (!parsed.ok) {
        return answer(r, ctx, ErrorCode::invalid_request, parsed.error);
    }
    ctx->price = ctx->policy->price_for(parsed.info.model);
    if (ctx->price == nullptr) {
        return answer(r, ctx, ErrorCode::model_not_priced,
                      "model `" + parsed.info.model + "` is not priced");
    }
    std::string too_much = bounds_error(parsed.info, *ctx->price);
    if (!too_much.empty()) {
        return answer(r, ctx, ErrorCode::invalid_request, too_much);
    }
    if (inject_stream_usage(r, ctx, parsed.info) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    ctx->estimate = estimate_worst_case(*ctx->price, *ctx->policy,
                                        static_cast<std::int64_t>(ctx->body.size()),
                                        parsed.info.max_output_tokens, parsed.info.choices);
    ctx->reserved = Amounts{ctx->estimate.cost, ctx->estimate.tokens(), 1};
    ctx->ledger = ledgers.get(*ctx->policy, *ctx->key, ctx->customer, ngx_time());

    ngx_http_variable_value_t *id = ngx_http_get_indexed_variable(r, mcf->request_id_index);
    if (id == nullptr || id->not_found) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    ctx->request_id.assign(reinterpret_cast<const char *>(id->data), id->len);
    if (ctx->ledger->counters.empty() || reserve_script_sha1().empty()) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;  // never reserve nothing: that would lift every cap
    }

    // Waiting first: the answer may come before reserve_later returns (a
    // batch that fills up and cannot be sent).
    ctx->stage = Stage::waiting_redis;
    // Notice a client that goes away while we wait (as limit_req does).
    r->read_event_handler = ngx_http_test_reading;
    r->write_event_handler = ngx_http_request_empty_handler;
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

ngx_int_t decided(ngx_http_request_t *r, RequestCtx *ctx) {
    if (ctx->error) {
        ErrorReply e = *ctx->error;
        ctx->error.reset();
        return answer(r, ctx, e);
    }
    return NGX_DECLINED;  // allowed: on to the next handler
}

void body_read(ngx_http_request_t *r) {
    RequestCtx *ctx = get_ctx(r);
    ctx->stage = Stage::body_read;
    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);
}

ngx_int_t preaccess_handler_unsafe(ngx_http_request_t *r) {
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
        ngx_int_t rc = identify(r, ctx, lcf);
        if (rc != NGX_DECLINED) {
            return rc;
        }
        if (r->headers_in.content_length_n > 0) {
            ctx->body.reserve(static_cast<std::size_t>(r->headers_in.content_length_n));
        }
        ctx->stage = Stage::reading_body;
        rc = ngx_http_read_client_request_body(r, body_read);
        if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
            return rc;
        }
        ngx_http_finalize_request(r, NGX_DONE);
        return NGX_DONE;
    }

    switch (ctx->stage) {
    case Stage::identify:
    case Stage::reading_body:
    case Stage::waiting_redis:
        return NGX_AGAIN;
    case Stage::body_read: {
        if (!ctx->body_seen && r->request_body != nullptr) {
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

bool passed(const RequestCtx *ctx) {
    return ctx->outcome == Outcome::allow || ctx->outcome == Outcome::dry_run_block
           || ctx->outcome == Outcome::fail_open;
}

ngx_int_t header_filter(ngx_http_request_t *r) {
    RequestCtx *ctx = get_ctx(r);
    if (ctx == nullptr || r != r->main || !passed(ctx) || ctx->scanner) {
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

// What the request really cost (SPEC section 3 step 7), decided once.
void settle_cost(ngx_http_request_t *r, RequestCtx *ctx) {
    if (ctx->settled) {
        return;
    }
    ctx->settled = true;
    if (!passed(ctx)) {
        return;  // refused here: nothing reached the provider
    }
    if (ctx->scanner && ctx->scanner->state() == UsageScanner::State::reading) {
        ctx->scanner->finish();  // the response ended early
    }
    ResponseSeen seen;
    seen.read = ctx->scanner.has_value();
    seen.unreadable = ctx->response_unreadable;
    if (ctx->scanner) {
        seen.state = ctx->scanner->state();
        seen.usage = ctx->scanner->usage();
        seen.error = ctx->scanner->error();
    }
    ngx_http_upstream_t *u = r->upstream;
    seen.status = (u != nullptr) ? u->headers_in.status_n : r->headers_out.status;
    seen.request_sent = u != nullptr && u->request_sent;

    Settlement settled = settle_at(seen, ctx->estimate, *ctx->price);
    ctx->cost = settled.cost;
    ctx->usage = settled.usage;
    ctx->settled_from = settled.from;
    if (!settled.warning.empty()) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0, "spend_cap: settling request %s at its reservation: %s",
                      ctx->request_id.c_str(), settled.warning.c_str());
    }
}

ngx_int_t log_handler(ngx_http_request_t *r) {
    RequestCtx *ctx = get_ctx(r);
    if (ctx == nullptr || r != r->main) {
        return NGX_OK;
    }
    try {
        if (ctx->reserve_sent) {
            reserve_cancel(ctx->ticket);  // the client left while Redis was deciding
            ctx->reserve_sent = ctx->ticket.sent;  // its batch had not left: never reserved
        }
        settle_cost(r, ctx);
        const bool reached_provider = passed(ctx);
        const SettlePlan plan = plan_settlement(SettleFacts{
            ctx->reserve_sent, ctx->outcome == Outcome::fail_open, ctx->outcome == Outcome::block,
            ctx->reserve_not_done, reached_provider, ctx->ledger != nullptr});
        if (!plan.settle) {
            return NGX_OK;
        }
        // Also after a timeout: a refused request settles at nothing, which
        // gives back a reservation Redis may still have made (commands on one
        // connection run in order; a late one finds the settlement and does
        // nothing). Every counter then ends as if the request never came.
        Amounts real{ctx->cost, ctx->usage.total(), reached_provider ? 1 : 0};
        settle_later(SettleItem{ctx->ledger, ctx->reserved, real, ctx->request_id, ctx->decided.ceiling_cap,
                                plan.in_batch ? ctx->ticket.batch_id : std::string(), ctx->reserve_answered});
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0, "spend_cap: settlement failed: %s", e.what());
    }
    return NGX_OK;
}

// --- variables ---

enum VariableField {
    var_key_id, var_project, var_org, var_customer, var_decision, var_blocked_by, var_reserved_usd,
    var_cost_usd, var_settled_from, var_input_tokens, var_output_tokens,
};

ngx_int_t get_variable_unsafe(ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data) {
    RequestCtx *ctx = get_ctx(r->main);
    std::string value;
    bool found = ctx != nullptr;
    if (found) {
        switch (data) {
        case var_key_id: found = ctx->key; if (found) value = ctx->key->id; break;
        case var_project: found = ctx->key; if (found) value = ctx->key->project; break;
        case var_org: found = ctx->key; if (found) value = ctx->policy->org_of(*ctx->key).id; break;
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

ngx_int_t get_variable(ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data) {
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

// --- configuration ---

void *create_main_conf(ngx_conf_t *cf) {
    auto *mcf = static_cast<MainConf *>(ngx_pcalloc(cf->pool, sizeof(MainConf)));
    if (mcf == nullptr) {
        return nullptr;
    }
    ngx_pool_cleanup_t *cln = ngx_pool_cleanup_add(cf->pool, sizeof(MainState));
    if (cln == nullptr) {
        return nullptr;
    }
    try {
        mcf->state = new (cln->data) MainState();
        cln->handler = [](void *p) { static_cast<MainState *>(p)->~MainState(); };
        mcf->state->redis.host = "127.0.0.1";
        mcf->state->redis.display = "127.0.0.1:6379";
    } catch (const std::exception &) {
        return nullptr;
    }
    mcf->request_id_index = NGX_ERROR;
    mcf->reservation_ttl = NGX_CONF_UNSET_MSEC;
    return mcf;
}

char *init_main_conf(ngx_conf_t *cf, void *conf) {
    auto *mcf = static_cast<MainConf *>(conf);
    ngx_conf_init_msec_value(mcf->reservation_ttl, kDefaultReservationTtlMs);
    if (mcf->reservation_ttl < 1000 || mcf->reservation_ttl > (ngx_msec_t) kMaxReservationTtlMs) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"spend_cap_reservation_ttl\" must be between 1s and 12h");
        return (char *) NGX_CONF_ERROR;
    }
    return NGX_CONF_OK;
}

void *create_loc_conf(ngx_conf_t *cf) {
    auto *conf = static_cast<LocConf *>(ngx_pcalloc(cf->pool, sizeof(LocConf)));
    if (conf == nullptr) {
        return nullptr;
    }
    conf->enable = NGX_CONF_UNSET;
    conf->surface = NGX_CONF_UNSET_UINT;
    conf->key = (ngx_http_complex_value_t *) NGX_CONF_UNSET_PTR;
    conf->customer = (ngx_http_complex_value_t *) NGX_CONF_UNSET_PTR;
    conf->dry_run = NGX_CONF_UNSET;
    conf->timeout = NGX_CONF_UNSET_MSEC;
    conf->fail_mode = NGX_CONF_UNSET_UINT;
    conf->stream_usage = NGX_CONF_UNSET_UINT;
    return conf;
}

char *merge_loc_conf(ngx_conf_t *cf, void *parent, void *child) {
    auto *prev = static_cast<LocConf *>(parent);
    auto *conf = static_cast<LocConf *>(child);
    ngx_conf_merge_value(conf->enable, prev->enable, 0);
    ngx_conf_merge_uint_value(conf->surface, prev->surface, surface_auto);
    ngx_conf_merge_ptr_value(conf->key, prev->key, nullptr);
    ngx_conf_merge_ptr_value(conf->customer, prev->customer, nullptr);
    ngx_conf_merge_value(conf->dry_run, prev->dry_run, 0);
    ngx_conf_merge_msec_value(conf->timeout, prev->timeout, 100);
    ngx_conf_merge_uint_value(conf->fail_mode, prev->fail_mode, fail_closed);
    ngx_conf_merge_uint_value(conf->stream_usage, prev->stream_usage, stream_usage_inject);

    if (conf->enable) {
        auto *mcf = static_cast<MainConf *>(ngx_http_conf_get_module_main_conf(cf, ngx_http_spend_cap_module));
        if (!mcf->state->policy) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"spend_cap on\" needs a \"spend_cap_policy\"");
            return (char *) NGX_CONF_ERROR;
        }
    }
    return NGX_CONF_OK;
}

char *set_policy(ngx_conf_t *cf, ngx_command_t *, void *conf) {
    auto *mcf = static_cast<MainConf *>(conf);
    if (mcf->state->policy) {
        return (char *) "is duplicate";
    }
    ngx_str_t *value = static_cast<ngx_str_t *>(cf->args->elts);
    ngx_str_t path = value[1];
    if (ngx_conf_full_name(cf->cycle, &path, 1) != NGX_OK) {
        return (char *) NGX_CONF_ERROR;
    }
    try {
        mcf->state->policy = load_policy_file(to_string(path));
    } catch (const PolicyError &e) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "spend_cap_policy: %s", e.what());
        return (char *) NGX_CONF_ERROR;
    } catch (const std::exception &e) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "spend_cap_policy: %V: %s", &path, e.what());
        return (char *) NGX_CONF_ERROR;
    }
    return NGX_CONF_OK;
}

// spend_cap_redis host:port|unix:/path [password=P] [db=N]; host names are
// resolved here, at configuration time, never by a worker.
char *set_redis_unsafe(ngx_conf_t *cf, void *conf) {
    auto *mcf = static_cast<MainConf *>(conf);
    if (mcf->redis_set) {
        return (char *) "is duplicate";
    }
    mcf->redis_set = 1;
    ngx_str_t *value = static_cast<ngx_str_t *>(cf->args->elts);
    RedisEndpoint ep;
    ep.display = to_string(value[1]);

    for (ngx_uint_t i = 2; i < cf->args->nelts; i++) {
        std::string arg = to_string(value[i]);
        if (arg.rfind("password=", 0) == 0) {
            ep.password = arg.substr(9);
        } else if (arg.rfind("db=", 0) == 0) {
            ngx_int_t db = ngx_atoi(value[i].data + 3, value[i].len - 3);
            if (db == NGX_ERROR) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid redis db \"%V\"", &value[i]);
                return (char *) NGX_CONF_ERROR;
            }
            ep.db = static_cast<int>(db);
        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid parameter \"%V\"", &value[i]);
            return (char *) NGX_CONF_ERROR;
        }
    }

    if (ngx_strncmp(value[1].data, "unix:", 5) == 0) {
        ep.unix_path = ep.display.substr(5);
    } else {
        ngx_url_t u;
        ngx_memzero(&u, sizeof(ngx_url_t));
        u.url = value[1];
        u.default_port = 6379;
        if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "spend_cap_redis: %s \"%V\"",
                               u.err ? u.err : "cannot resolve", &u.url);
            return (char *) NGX_CONF_ERROR;
        }
        u_char text[NGX_SOCKADDR_STRLEN];
        size_t len = ngx_sock_ntop(u.addrs[0].sockaddr, u.addrs[0].socklen, text,
                                   NGX_SOCKADDR_STRLEN, 0);
        ep.host.assign(reinterpret_cast<const char *>(text), len);
        ep.port = ngx_inet_get_port(u.addrs[0].sockaddr);
    }
    mcf->state->redis = ep;
    return NGX_CONF_OK;
}

char *set_redis(ngx_conf_t *cf, ngx_command_t *, void *conf) {
    try {
        return set_redis_unsafe(cf, conf);
    } catch (const std::exception &e) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "spend_cap_redis: %s", e.what());
        return (char *) NGX_CONF_ERROR;
    }
}

ngx_conf_enum_t surfaces[] = {
    {ngx_string("auto"), surface_auto},
    {ngx_string("openai"), surface_openai},
    {ngx_string("anthropic"), surface_anthropic},
    {ngx_null_string, 0},
};

ngx_conf_enum_t stream_usage_modes[] = {
    {ngx_string("off"), stream_usage_off},
    {ngx_string("inject"), stream_usage_inject},
    {ngx_null_string, 0},
};

ngx_conf_enum_t fail_modes[] = {
    {ngx_string("closed"), fail_closed},
    {ngx_string("open"), fail_open},
    {ngx_null_string, 0},
};

const ngx_uint_t loc_contexts = NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF;

ngx_command_t commands[] = {
    {ngx_string("spend_cap_redis"), NGX_HTTP_MAIN_CONF | NGX_CONF_1MORE, set_redis,
     NGX_HTTP_MAIN_CONF_OFFSET, 0, nullptr},
    {ngx_string("spend_cap_policy"), NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1, set_policy,
     NGX_HTTP_MAIN_CONF_OFFSET, 0, nullptr},
    {ngx_string("spend_cap_reservation_ttl"), NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1, ngx_conf_set_msec_slot,
     NGX_HTTP_MAIN_CONF_OFFSET, offsetof(MainConf, reservation_ttl), nullptr},
    {ngx_string("spend_cap"), loc_contexts | NGX_CONF_FLAG, ngx_conf_set_flag_slot,
     NGX_HTTP_LOC_CONF_OFFSET, offsetof(LocConf, enable), nullptr},
    {ngx_string("spend_cap_surface"), loc_contexts | NGX_CONF_TAKE1, ngx_conf_set_enum_slot,
     NGX_HTTP_LOC_CONF_OFFSET, offsetof(LocConf, surface), surfaces},
    {ngx_string("spend_cap_key"), loc_contexts | NGX_CONF_TAKE1, ngx_http_set_complex_value_slot,
     NGX_HTTP_LOC_CONF_OFFSET, offsetof(LocConf, key), nullptr},
    {ngx_string("spend_cap_customer"), loc_contexts | NGX_CONF_TAKE1, ngx_http_set_complex_value_slot,
     NGX_HTTP_LOC_CONF_OFFSET, offsetof(LocConf, customer), nullptr},
    {ngx_string("spend_cap_dry_run"), loc_contexts | NGX_CONF_FLAG, ngx_conf_set_flag_slot,
     NGX_HTTP_LOC_CONF_OFFSET, offsetof(LocConf, dry_run), nullptr},
    {ngx_string("spend_cap_timeout"), loc_contexts | NGX_CONF_TAKE1, ngx_conf_set_msec_slot,
     NGX_HTTP_LOC_CONF_OFFSET, offsetof(LocConf, timeout), nullptr},
    {ngx_string("spend_cap_fail_mode"), loc_contexts | NGX_CONF_TAKE1, ngx_conf_set_enum_slot,
     NGX_HTTP_LOC_CONF_OFFSET, offsetof(LocConf, fail_mode), fail_modes},
    {ngx_string("spend_cap_stream_usage"), loc_contexts | NGX_CONF_TAKE1, ngx_conf_set_enum_slot,
     NGX_HTTP_LOC_CONF_OFFSET, offsetof(LocConf, stream_usage), stream_usage_modes},
    ngx_null_command,
};

ngx_int_t postconfiguration(ngx_conf_t *cf) {
    auto *cmcf = static_cast<ngx_http_core_main_conf_t *>(
        ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module));
    auto *mcf = static_cast<MainConf *>(ngx_http_conf_get_module_main_conf(cf, ngx_http_spend_cap_module));

    // Preaccess, like limit_req: `satisfy any` cannot skip a spend cap.
    auto *h = static_cast<ngx_http_handler_pt *>(ngx_array_push(&cmcf->phases[NGX_HTTP_PREACCESS_PHASE].handlers));
    if (h == nullptr) {
        return NGX_ERROR;
    }
    *h = preaccess_handler;

    // First in the log phase, so access_log sees the settled cost.
    ngx_array_t *log_handlers = &cmcf->phases[NGX_HTTP_LOG_PHASE].handlers;
    if (ngx_array_push(log_handlers) == nullptr) {
        return NGX_ERROR;
    }
    auto *logs = static_cast<ngx_http_handler_pt *>(log_handlers->elts);
    ngx_memmove(&logs[1], &logs[0], (log_handlers->nelts - 1) * sizeof(ngx_http_handler_pt));
    logs[0] = log_handler;

    next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = header_filter;
    next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = body_filter;
    next_request_body_filter = ngx_http_top_request_body_filter;
    ngx_http_top_request_body_filter = request_body_filter;

    ngx_str_t request_id = ngx_string("request_id");
    mcf->request_id_index = ngx_http_get_variable_index(cf, &request_id);
    return mcf->request_id_index == NGX_ERROR ? NGX_ERROR : NGX_OK;
}

ngx_int_t init_process(ngx_cycle_t *cycle) {
    auto *mcf = static_cast<MainConf *>(ngx_http_cycle_get_module_main_conf(cycle, ngx_http_spend_cap_module));
    if (mcf == nullptr || !mcf->state->policy) {
        return NGX_OK;  // spend_cap is not configured in this http block
    }
    if (ngx_process != NGX_PROCESS_WORKER && ngx_process != NGX_PROCESS_SINGLE) {
        return NGX_OK;  // the cache manager and loader never talk to Redis
    }
    try {
        redis_start(mcf->state->redis, cycle->log);
        if (ngx_worker == 0) {  // one sweeper per node is enough; the reserve script sweeps too
            sweep_start(mcf->state->policy, cycle->log);
        }
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0, "spend_cap: %s", e.what());
        return NGX_ERROR;
    }
    return NGX_OK;
}

void exit_process(ngx_cycle_t *) {
    sweep_stop();
    reserve_flush_all();
    settle_flush_all();
    redis_stop();
}

ngx_http_module_t module_ctx = {
    add_variables,      // preconfiguration
    postconfiguration,  // postconfiguration
    create_main_conf,   // create main configuration
    init_main_conf,     // init main configuration
    nullptr,            // create server configuration
    nullptr,            // merge server configuration
    create_loc_conf,    // create location configuration
    merge_loc_conf,     // merge location configuration
};

}  // namespace

ngx_module_t ngx_http_spend_cap_module = {
    NGX_MODULE_V1,
    &module_ctx,        // module context
    commands,           // module directives
    NGX_HTTP_MODULE,    // module type
    nullptr,            // init master
    nullptr,            // init module
    init_process,       // init process
    nullptr,            // init thread
    nullptr,            // exit thread
    exit_process,       // exit process
    nullptr,            // exit master
    NGX_MODULE_V1_PADDING,
};
