// The log phase: what the request really cost, decided once, and its
// settlement queued (ngx_http_spend_cap_settle.h) exactly once.
#include "ngx_http_spend_cap_ctx.h"

#include <exception>

#include "accounting/settlement.h"
#include "ngx_http_spend_cap_settle.h"

namespace spendcap_ngx {

// What the request really cost (SPEC section 3 step 7), decided once.
static void settle_cost(ngx_http_request_t *r, RequestCtx *ctx) {
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
    status_count_request(ctx);
    if (!is_metered(ctx->endpoint)) {
        return NGX_OK;  // (a free request: counted in Redis nowhere)
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
        if (reached_provider) {
            status_count_settled(ctx);
        }
        Amounts real{ctx->cost, ctx->usage.total(), reached_provider ? 1 : 0};
        settle_later(SettleItem{ctx->ledger, ctx->reserved, real, ctx->request_id, ctx->decided.ceiling_cap,
                                plan.in_batch ? ctx->ticket.batch_id : std::string(), ctx->reserve_answered});
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0, "spend_cap: settlement failed: %s", e.what());
    }
    return NGX_OK;
}

}  // namespace spendcap_ngx
