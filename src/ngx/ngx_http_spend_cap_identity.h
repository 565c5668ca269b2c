// Who is calling: the key a secret names, with its org's records over the
// policy file (identity/records.h), from this worker's cache when it holds
// them at the org's current version, else read from Redis (a secret the file
// does not know: its lookup sc:key:SHA256 first). Whether the key may spend
// is the core's rule (identity/validity.h).
#pragma once

#include "ngx_http_spend_cap_ctx.h"

namespace spendcap_ngx {

enum class Resolve {
    ready,    // ctx->identity and ctx->key are set
    waiting,  // Redis is asked: wait_for_identity, then the phases resume
    refused,  // the refusal is in ctx->error
};

// Resolves ctx->sha256 (and ctx->customer) into ctx->identity.
Resolve resolve_caller(RequestCtx *ctx);

// Waits for a read of records (Resolve::waiting): the phases resume at
// `after` once it is answered; a client that leaves meanwhile ends the
// request. NGX_AGAIN, or an error.
ngx_int_t wait_for_identity(ngx_http_request_t *r, RequestCtx *ctx, Stage after);

}  // namespace spendcap_ngx
