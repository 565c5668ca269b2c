#include "ngx_http_spend_cap_identity.h"

#include <hiredis/hiredis.h>

#include <exception>
#include <unordered_set>
#include <vector>

#include "identity/validity.h"

namespace spendcap_ngx {
namespace {

// Appends key_expired to the org's events; Redis keeps it to once per key and
// expiry, this worker to one command per key however often it knocks.
void report_key_expired(RequestCtx *ctx) {
    static std::unordered_set<std::string> reported;
    const std::string &org = ctx->identity->org.id;
    if (reported.size() > 100000) {
        reported.clear();  // bounded; Redis still tells each expiry once
    }
    if (!reported.insert(org + ":" + ctx->key->id + ":" + std::to_string(*ctx->key->expires_at)).second) {
        return;
    }
    std::vector<std::string> command = key_expired_command(org, *ctx->key, ngx_time());
    if (!command.empty()) {
        MustLand what;
        what.script = &scripts::key_expired();
        what.summary = "key_expired event of key " + ctx->key->id;
        what.describe = [summary = what.summary] { return summary; };
        redis_eval_reliably(std::move(command), std::move(what));
    }
}

Resolve refuse(RequestCtx *ctx, ErrorCode code, const char *message) {
    ctx->outcome = callers_error(code) ? Outcome::reject : Outcome::error;
    ctx->error = render_error(ctx->surface, code, message);
    return Resolve::refused;
}

Resolve take(RequestCtx *ctx, std::shared_ptr<const Identity> identity) {
    const KeyStanding standing = key_standing(*identity, unix_ms());
    ctx->identity = std::move(identity);
    ctx->key = &ctx->identity->key;
    switch (standing) {
    case KeyStanding::valid:
        return Resolve::ready;
    case KeyStanding::grace_over:
        // A rotated secret whose grace has ended (no change of records says so).
        identities.remember_unknown(ctx->sha256, static_cast<std::int64_t>(ngx_current_msec));
        ctx->identity.reset();
        ctx->key = nullptr;
        return refuse(ctx, ErrorCode::invalid_api_key, "invalid api key");
    case KeyStanding::revoked:
        return refuse(ctx, ErrorCode::api_key_revoked, "");
    case KeyStanding::expired:
        report_key_expired(ctx);
        return refuse(ctx, ErrorCode::api_key_expired, "");
    }
    return refuse(ctx, ErrorCode::invalid_api_key, "invalid api key");
}

Resolve take(RequestCtx *ctx, const Resolution &found) {
    if (found.problem == IdentityProblem::unknown || found.identity == nullptr) {
        // A rotated-away secret, a key whose record is gone: asked again in a second at most.
        identities.remember_unknown(ctx->sha256, static_cast<std::int64_t>(ngx_current_msec));
        ngx_log_error(NGX_LOG_INFO, ctx->r->connection->log, 0, "spend_cap: invalid api key: %s",
                      found.reason.c_str());
        return refuse(ctx, ErrorCode::invalid_api_key, "invalid api key");
    }
    identities.store(ctx->sha256, found.identity);
    return take(ctx, found.identity);
}

// Redis did not answer a read of records. A file key failing open goes on
// as the file has it (its reservation fails open too); else 503.
Resolve read_failed(RequestCtx *ctx, RedisStatus status, const Key *file_key) {
    auto *lcf = static_cast<LocConf *>(ngx_http_get_module_loc_conf(ctx->r, ngx_http_spend_cap_module));
    const char *why = status == RedisStatus::timeout ? "timed out" : status == RedisStatus::unavailable
                                                                         ? "is unavailable"
                                                                         : "gave a bad reply";
    if (file_key != nullptr && lcf->fail_mode == fail_open) {
        ngx_log_error(NGX_LOG_WARN, ctx->r->connection->log, 0,
                      "spend_cap: redis %s reading key records, using the policy file's (fail_mode open)", why);
        return take(ctx, resolve_file_identity(*ctx->policy, *file_key, ctx->customer).identity);
    }
    ngx_log_error(NGX_LOG_ERR, ctx->r->connection->log, 0,
                  "spend_cap: redis %s reading key records, refusing the request", why);
    ctx->outcome = Outcome::error;
    ctx->error = render_error(ctx->surface, ErrorCode::spend_cap_unavailable, "");
    return Resolve::refused;
}

void identity_known(RequestCtx *ctx, Resolve result) {
    if (result != Resolve::waiting) {
        ctx->stage = ctx->after_identity;
        resume_phases(ctx->r);
    }
}

void on_records(void *data, RedisStatus status, const redisReply *reply) {
    auto *ctx = static_cast<RequestCtx *>(data);
    ctx->identity_op = nullptr;
    Resolve result = Resolve::refused;
    try {
        const Key *file_key = ctx->policy->find_key(ctx->sha256);
        OrgRecords records;
        if (status != RedisStatus::reply || !parse_org_records(to_reply(reply), records)) {
            result = read_failed(ctx, status == RedisStatus::reply ? RedisStatus::reply : status, file_key);
        } else {
            const std::string org = file_key != nullptr ? ctx->policy->project_of(*file_key).org : ctx->lookup->org;
            identities.set_org_version(org, records.version);
            result = take(ctx, resolve_identity(*ctx->policy, ctx->sha256, file_key, ctx->lookup, ctx->customer,
                                                records, unix_ms()));
        }
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_ERR, ctx->r->connection->log, 0, "spend_cap: %s", e.what());
        ctx->outcome = Outcome::error;
        ctx->error = render_error(ctx->surface, ErrorCode::spend_cap_unavailable, "");
    }
    identity_known(ctx, result);
}

Resolve read_records(RequestCtx *ctx, const std::string &org, const std::string &key_id,
                            const std::string &project, const Key *file_key) {
    auto *lcf = static_cast<LocConf *>(ngx_http_get_module_loc_conf(ctx->r, ngx_http_spend_cap_module));
    Command read = org_records_command(org, key_id, project, ctx->customer);
    ctx->identity_op = redis_eval(std::move(read.argv), read.script, lcf->timeout, on_records, ctx);
    return ctx->identity_op != nullptr ? Resolve::waiting : read_failed(ctx, RedisStatus::unavailable, file_key);
}

void on_lookup(void *data, RedisStatus status, const redisReply *reply) {
    auto *ctx = static_cast<RequestCtx *>(data);
    ctx->identity_op = nullptr;
    Resolve result = Resolve::refused;
    try {
        Fields fields;
        if (status != RedisStatus::reply || !fields_of(to_reply(reply), fields)) {
            result = read_failed(ctx, status, nullptr);
        } else if (std::optional<KeyLookup> lookup = parse_key_lookup(fields)) {
            identities.remember_lookup(ctx->sha256, *lookup);
            ctx->lookup = lookup;
            result = read_records(ctx, lookup->org, lookup->id, lookup->project, nullptr);
        } else {
            identities.remember_unknown(ctx->sha256, static_cast<std::int64_t>(ngx_current_msec));
            result = refuse(ctx, ErrorCode::invalid_api_key, "invalid api key");
        }
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_ERR, ctx->r->connection->log, 0, "spend_cap: %s", e.what());
        ctx->outcome = Outcome::error;
        ctx->error = render_error(ctx->surface, ErrorCode::spend_cap_unavailable, "");
    }
    identity_known(ctx, result);
}

}  // namespace

Resolve resolve_caller(RequestCtx *ctx) {
    if (std::shared_ptr<const Identity> cached = identities.find(ctx->sha256, ctx->customer,
                                                                 ctx->policy->generation)) {
        return take(ctx, std::move(cached));
    }
    if (identities.known_unknown(ctx->sha256, static_cast<std::int64_t>(ngx_current_msec))) {
        return refuse(ctx, ErrorCode::invalid_api_key, "invalid api key");
    }
    if (const Key *file_key = ctx->policy->find_key(ctx->sha256)) {
        const std::string &org = ctx->policy->project_of(*file_key).org;
        if (identities.org_version(org).empty()) {
            // An org never changed through the API has no records: the file
            // decides (the reserve script checks that this still holds).
            return take(ctx, resolve_file_identity(*ctx->policy, *file_key, ctx->customer));
        }
        return read_records(ctx, org, file_key->id, file_key->project, file_key);
    }
    if (!ctx->lookup) {
        ctx->lookup = identities.lookup(ctx->sha256);
    }
    if (ctx->lookup) {
        return read_records(ctx, ctx->lookup->org, ctx->lookup->id, ctx->lookup->project, nullptr);
    }
    auto *lcf = static_cast<LocConf *>(ngx_http_get_module_loc_conf(ctx->r, ngx_http_spend_cap_module));
    Command lookup = key_lookup_command(ctx->sha256);
    ctx->identity_op = redis_eval(std::move(lookup.argv), lookup.script, lcf->timeout, on_lookup, ctx);
    return ctx->identity_op != nullptr ? Resolve::waiting : read_failed(ctx, RedisStatus::unavailable, nullptr);
}


// Waits for a read of records: the phases resume at ctx->after_identity.
ngx_int_t wait_for_identity(ngx_http_request_t *r, RequestCtx *ctx, Stage after) {
    ctx->stage = Stage::identifying;
    ctx->after_identity = after;
    r->read_event_handler = ngx_http_test_reading;
    r->write_event_handler = ngx_http_request_empty_handler;
    // Notice a client that leaves meanwhile: its read event must be armed
    // (the header was read; nothing watches the socket now).
    if (ngx_handle_read_event(r->connection->read, 0) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    return NGX_AGAIN;
}


}  // namespace spendcap_ngx
