// What the glue's files share: the module's configuration, the per-request
// state, and the handlers each file gives the module (ngx_http_spend_cap_module.cpp
// wires them in).
#pragma once

#include "ngx.h"

#include <memory>
#include <optional>
#include <string>

#include "http/envelope.h"
#include "accounting/cap.h"
#include "accounting/ledger.h"
#include "base/money.h"
#include "policy/policy.h"
#include "identity/records.h"
#include "request/request.h"
#include "accounting/reservation.h"
#include "usage/usage.h"
#include "ngx_http_spend_cap_redis.h"
#include "ngx_http_spend_cap_reserve.h"

extern ngx_module_t ngx_http_spend_cap_module;

namespace spendcap::dashboard {
class Dashboard;
}

namespace spendcap_ngx {

using namespace spendcap;

constexpr ngx_uint_t surface_auto = 0, surface_openai = 1, surface_anthropic = 2;
constexpr ngx_uint_t fail_closed = 0, fail_open = 1;
constexpr ngx_uint_t stream_usage_off = 0, stream_usage_inject = 1;

// C++ state of the http block, owned by the configuration pool.
struct MainState {
    std::shared_ptr<const Policy> policy;
    RedisSettings redis;  // spend_cap_redis (one seed) or spend_cap_redis_cluster
};

struct MainConf {
    MainState *state;
    ngx_flag_t redis_set;
    ngx_int_t redis_replicas;
    ngx_int_t request_id_index;
    ngx_msec_t reservation_ttl;
    ngx_int_t status_orgs;     // spend_cap_status_orgs
    ngx_flag_t status_used;    // a location has spend_cap_status
    ngx_shm_zone_t *zone;      // the node's shared zone (ngx_http_spend_cap_zone.h)
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
    ngx_str_t admin_token;     // spend_cap_admin's token (len 0: not the API); never logged
    const spendcap::dashboard::Dashboard *dashboard;  // spend_cap_dashboard's page and files (null: not one)
};

enum class Outcome { none, allow, block, reject, dry_run_block, fail_open, error };

// $spend_cap_decision's value.
const char *outcome_name(Outcome o);

// identify -> [identifying: reading the key's records -> identified] ->
// reading_body -> body_read -> [identifying again, after a stale reserve,
// -> body_read] -> waiting_redis -> decided
enum class Stage { identify, identifying, identified, reading_body, body_read, waiting_redis, decided };

// Per-request state; lives in the request pool, destroyed by a pool cleanup.
struct RequestCtx {
    ngx_http_request_t *r = nullptr;
    Stage stage = Stage::identify;
    Outcome outcome = Outcome::none;
    Surface surface = Surface::openai;
    Endpoint endpoint = Endpoint::unsupported;  // by method and path; only metered ones reserve
    std::shared_ptr<const Policy> policy;  // keeps the pointers below alive across reloads
    const Key *key = nullptr;              // identity->key, once known
    std::shared_ptr<const Identity> identity;  // the key with the org's records over the file
    std::string sha256;                    // of the caller's secret
    std::optional<KeyLookup> lookup;       // sc:key:SHA256, for a key the file does not hold
    RedisOp *identity_op = nullptr;        // a read of records in flight
    Stage after_identity = Stage::reading_body;  // where a read of records resumes
    int stale_reserves = 0;                // reserves that found the records changed
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
    std::uint64_t reserve_started_us = 0;  // when its reserve was queued (spend_cap_redis_seconds)
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
        redis_forget(identity_op);  // late replies must not touch this freed request
        reserve_cancel(ticket);
    }
};

// This worker's ledgers: a key's counters are named once per minute.
extern LedgerCache ledgers;
// This worker's identities, org config versions and lookups of secrets.
extern IdentityCache identities;

extern ngx_http_output_header_filter_pt next_header_filter;
extern ngx_http_output_body_filter_pt next_body_filter;
extern ngx_http_request_body_filter_pt next_request_body_filter;

// The request's state; an internal redirect zeroes module contexts, this
// finds ours again (see ngx_http_spend_cap_ctx.cpp).
RequestCtx *get_ctx(ngx_http_request_t *r);
void destroy_ctx(void *data);
// Allowed, allowed in a dry run, or let through failing open: it reached the provider.
bool passed(const RequestCtx *ctx);

std::string to_string(const ngx_str_t &s);
// The cached wall clock in unix milliseconds (ngx_time() is its seconds).
std::int64_t unix_ms();
ngx_str_t pool_str(ngx_pool_t *pool, const std::string &s);
ngx_int_t add_header(ngx_http_request_t *r, const char *name, const std::string &value);
// Runs the phases again from the request's own connection (after a wait on
// Redis), not inside the Redis event that ended the wait.
void resume_phases(ngx_http_request_t *r);

// ngx_http_spend_cap_access.cpp: identify, estimate, reserve (preaccess phase)
ngx_int_t preaccess_handler(ngx_http_request_t *r);
ngx_int_t request_body_filter(ngx_http_request_t *r, ngx_chain_t *in);
// ngx_http_spend_cap_filters.cpp: x-spend-* headers and the usage reader
ngx_int_t header_filter(ngx_http_request_t *r);
ngx_int_t body_filter(ngx_http_request_t *r, ngx_chain_t *in);
// ngx_http_spend_cap_log.cpp: settlement (log phase)
ngx_int_t log_handler(ngx_http_request_t *r);
// ngx_http_spend_cap_admin.cpp: the management API (spend_cap_admin)
char *set_admin(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
// ngx_http_spend_cap_dashboard.cpp: the dashboard's page and files (spend_cap_dashboard)
char *set_dashboard(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
// ngx_http_spend_cap_status.cpp: spend_cap_status, and what it counts
char *set_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
std::uint64_t monotonic_micros();
void status_count_request(const RequestCtx *ctx);   // its decision (log phase)
void status_count_settled(const RequestCtx *ctx);   // its cost and tokens
void status_count_block(const CapRef &cap);
// A refusal that is no counter's (allowed_models).
void status_count_block(Scope scope, const char *limit);
void status_count_reserve(const RequestCtx *ctx, bool reserved);  // its reserve answered
// ngx_http_spend_cap_variables.cpp: $spend_cap_*
ngx_int_t add_variables(ngx_conf_t *cf);

}  // namespace spendcap_ngx
