// spend-cap: hard spend caps for LLM APIs, enforced in NGINX.
//
// The module itself: its directives and configuration, and the wiring of the
// handlers the other files of the glue provide (access: the preaccess
// handler that reserves the worst case in Redis; filters: the response's
// usage; log: settlement; variables). Pricing, policy, envelopes and Redis
// scripts live in the plain C++ core (src/core).

#include "base/zones.h"
#include "ngx_http_spend_cap_ctx.h"

#include <cstring>
#include <exception>
#include <new>

#include "ngx_http_spend_cap_settle.h"
#include "ngx_http_spend_cap_sweep.h"
#include "ngx_http_spend_cap_zone.h"

namespace {

using namespace spendcap;
using namespace spendcap_ngx;

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
        RedisEndpoint local;
        local.host = "127.0.0.1";
        local.display = "127.0.0.1:6379";
        mcf->state->redis.seeds.push_back(local);
    } catch (const std::exception &) {
        return nullptr;
    }
    mcf->request_id_index = NGX_ERROR;
    mcf->reservation_ttl = NGX_CONF_UNSET_MSEC;
    mcf->redis_replicas = NGX_CONF_UNSET;
    mcf->status_orgs = NGX_CONF_UNSET;
    return mcf;
}

char *init_main_conf(ngx_conf_t *cf, void *conf) {
    auto *mcf = static_cast<MainConf *>(conf);
    ngx_conf_init_msec_value(mcf->reservation_ttl, kDefaultReservationTtlMs);
    ngx_conf_init_value(mcf->redis_replicas, 0);
    if (mcf->redis_replicas < 0 || mcf->redis_replicas > 16) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"spend_cap_redis_replicas\" must be between 0 and 16");
        return (char *) NGX_CONF_ERROR;
    }
    mcf->state->redis.replicas = static_cast<int>(mcf->redis_replicas);
    if (mcf->reservation_ttl < 1000 || mcf->reservation_ttl > (ngx_msec_t) kMaxReservationTtlMs) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"spend_cap_reservation_ttl\" must be between 1s and 12h");
        return (char *) NGX_CONF_ERROR;
    }
    ngx_conf_init_value(mcf->status_orgs, static_cast<ngx_int_t>(kDefaultStatusOrgs));
    if (mcf->status_orgs < 0 || mcf->status_orgs > static_cast<ngx_int_t>(kMaxStatusOrgs)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"spend_cap_status_orgs\" must be between 0 and %uz",
                           kMaxStatusOrgs);
        return (char *) NGX_CONF_ERROR;
    }
    if (mcf->state->policy || mcf->status_used) {
        mcf->zone = zone_add(cf, static_cast<std::size_t>(mcf->status_orgs));
        if (mcf->zone == nullptr) {
            return (char *) NGX_CONF_ERROR;
        }
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
    if (conf->admin_token.len != 0 || conf->dashboard != nullptr) {
        // The API and the dashboard answer themselves: an http-level
        // `spend_cap on` must not make them ask their callers for an API key
        // to reserve against.
        conf->enable = 0;
    }
    ngx_conf_merge_uint_value(conf->surface, prev->surface, surface_auto);
    ngx_conf_merge_ptr_value(conf->key, prev->key, nullptr);
    ngx_conf_merge_ptr_value(conf->customer, prev->customer, nullptr);
    ngx_conf_merge_value(conf->dry_run, prev->dry_run, 0);
    ngx_conf_merge_msec_value(conf->timeout, prev->timeout, 100);
    ngx_conf_merge_uint_value(conf->fail_mode, prev->fail_mode, fail_closed);
    ngx_conf_merge_uint_value(conf->stream_usage, prev->stream_usage, stream_usage_inject);

    if (conf->enable || conf->admin_token.len != 0) {
        auto *mcf = static_cast<MainConf *>(ngx_http_conf_get_module_main_conf(cf, ngx_http_spend_cap_module));
        if (!mcf->state->policy) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, conf->enable ? "\"spend_cap on\" needs a \"spend_cap_policy\""
                                                                  : "\"spend_cap_admin\" needs a \"spend_cap_policy\"");
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

// One Redis address: host:port (a name is resolved here, at configuration
// time, never by a worker; with NGINX's `resolver` set, a worker resolves it
// again, without blocking, at each connect) or unix:/path.
bool parse_endpoint(ngx_conf_t *cf, const char *directive, ngx_str_t value, RedisEndpoint &ep) {
    ep.display = to_string(value);
    if (ngx_strncmp(value.data, "unix:", 5) == 0) {
        ep.unix_path = ep.display.substr(5);
        return true;
    }
    ngx_url_t u;
    ngx_memzero(&u, sizeof(ngx_url_t));
    u.url = value;
    u.default_port = 6379;
    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s: %s \"%V\"", directive, u.err ? u.err : "cannot resolve",
                           &u.url);
        return false;
    }
    u_char text[NGX_SOCKADDR_STRLEN];
    size_t len = ngx_sock_ntop(u.addrs[0].sockaddr, u.addrs[0].socklen, text, NGX_SOCKADDR_STRLEN, 0);
    ep.host.assign(reinterpret_cast<const char *>(text), len);
    ep.port = ngx_inet_get_port(u.addrs[0].sockaddr);
    if (ngx_inet_addr(u.host.data, u.host.len) == INADDR_NONE && !(u.host.len > 0 && u.host.data[0] == '[')) {
        ep.hostname = to_string(u.host);
    }
    return true;
}

// spend_cap_redis ADDR [password=P] [db=N];
// spend_cap_redis_cluster ADDR ... [password=P];
char *set_redis_unsafe(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) {
    auto *mcf = static_cast<MainConf *>(conf);
    const bool cluster = cmd->name.len == sizeof("spend_cap_redis_cluster") - 1;
    const char *directive = cluster ? "spend_cap_redis_cluster" : "spend_cap_redis";
    if (mcf->redis_set) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s: the redis is already set (spend_cap_redis or "
                           "spend_cap_redis_cluster, once)", directive);
        return (char *) NGX_CONF_ERROR;
    }
    mcf->redis_set = 1;
    ngx_str_t *value = static_cast<ngx_str_t *>(cf->args->elts);
    std::string password;
    int db = 0;
    std::vector<ngx_str_t> addresses;
    for (ngx_uint_t i = 1; i < cf->args->nelts; i++) {
        std::string arg = to_string(value[i]);
        if (arg.rfind("password=", 0) == 0) {
            password = arg.substr(9);
        } else if (arg.rfind("db=", 0) == 0 && !cluster) {
            ngx_int_t n = ngx_atoi(value[i].data + 3, value[i].len - 3);
            if (n == NGX_ERROR) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid redis db \"%V\"", &value[i]);
                return (char *) NGX_CONF_ERROR;
            }
            db = static_cast<int>(n);
        } else if (arg.find('=') == std::string::npos && (cluster || addresses.empty())) {
            addresses.push_back(value[i]);
        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid parameter \"%V\"", &value[i]);
            return (char *) NGX_CONF_ERROR;
        }
    }
    if (addresses.empty()) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s: no address", directive);
        return (char *) NGX_CONF_ERROR;
    }
    RedisSettings &settings = mcf->state->redis;
    settings.seeds.clear();
    settings.cluster = cluster;
    for (ngx_str_t address : addresses) {
        RedisEndpoint ep;
        if (!parse_endpoint(cf, directive, address, ep)) {
            return (char *) NGX_CONF_ERROR;
        }
        if (cluster && !ep.unix_path.empty()) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s: a cluster node is host:port, not \"%V\"", directive,
                               &address);
            return (char *) NGX_CONF_ERROR;
        }
        ep.password = password;
        ep.db = db;
        settings.seeds.push_back(std::move(ep));
    }
    return NGX_CONF_OK;
}

char *set_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) {
    try {
        return set_redis_unsafe(cf, cmd, conf);
    } catch (const std::exception &e) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "spend_cap_redis: %s", e.what());
        return (char *) NGX_CONF_ERROR;
    }
}

// NGINX's resolver of the http block, when one is configured.
ngx_resolver_t *configured_resolver(ngx_cycle_t *cycle) {
    auto *ctx = reinterpret_cast<ngx_http_conf_ctx_t *>(ngx_get_conf(cycle->conf_ctx, ngx_http_module));
    if (ctx == nullptr) {
        return nullptr;
    }
    auto *clcf = static_cast<ngx_http_core_loc_conf_t *>(ctx->loc_conf[ngx_http_core_module.ctx_index]);
    if (clcf == nullptr || clcf->resolver == nullptr || clcf->resolver->connections.nelts == 0) {
        return nullptr;
    }
    return clcf->resolver;
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
    {ngx_string("spend_cap_redis_cluster"), NGX_HTTP_MAIN_CONF | NGX_CONF_1MORE, set_redis,
     NGX_HTTP_MAIN_CONF_OFFSET, 0, nullptr},
    {ngx_string("spend_cap_redis_replicas"), NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1, ngx_conf_set_num_slot,
     NGX_HTTP_MAIN_CONF_OFFSET, offsetof(MainConf, redis_replicas), nullptr},
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
    {ngx_string("spend_cap_admin"), NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1, set_admin, NGX_HTTP_LOC_CONF_OFFSET, 0,
     nullptr},
    {ngx_string("spend_cap_status"), NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS, set_status, NGX_HTTP_LOC_CONF_OFFSET, 0,
     nullptr},
    {ngx_string("spend_cap_dashboard"), NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1, set_dashboard, NGX_HTTP_LOC_CONF_OFFSET,
     0, nullptr},
    {ngx_string("spend_cap_status_orgs"), NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1, ngx_conf_set_num_slot,
     NGX_HTTP_MAIN_CONF_OFFSET, offsetof(MainConf, status_orgs), nullptr},
    ngx_null_command,
};

ngx_int_t postconfiguration(ngx_conf_t *cf) {
    auto *cmcf = static_cast<ngx_http_core_main_conf_t *>(
        ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module));
    auto *mcf = static_cast<MainConf *>(ngx_http_conf_get_module_main_conf(cf, ngx_http_spend_cap_module));

    // Every zone's rules read now, in the master: a worker that meets an
    // org's time zone later never reads a file (SPEC section 2b).
    if (!preload_time_zones()) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "spend_cap: the tz database (package tzdata) could not be read; orgs' time zones read as UTC");
    }

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
    if (mcf == nullptr) {
        return NGX_OK;
    }
    zone_attach(mcf->zone);
    if (!mcf->state->policy) {
        return NGX_OK;  // spend_cap is not configured in this http block
    }
    if (ngx_process != NGX_PROCESS_WORKER && ngx_process != NGX_PROCESS_SINGLE) {
        return NGX_OK;  // the cache manager and loader never talk to Redis
    }
    try {
        redis_start(mcf->state->redis, configured_resolver(cycle), cycle->log);
        if (ngx_worker == 0) {  // one sweeper per node; a reserve that would refuse sweeps its org too
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
