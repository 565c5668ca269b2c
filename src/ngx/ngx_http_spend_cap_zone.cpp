#include "ngx_http_spend_cap_zone.h"

#include <new>

#include "ngx_http_spend_cap_shared_backlog.h"  // its bounds

extern ngx_module_t ngx_http_spend_cap_module;

namespace spendcap_ngx {
namespace {

// What the slab allocator lays out in the zone: the pool's header, the
// counters, and the backlog's entries (slab sizes round an entry up to a
// power of two, so twice its bytes), plus room for the pages' bookkeeping.
constexpr std::size_t kSlack = 1 << 20;

struct ZoneHead {
    spendcap::StatusCounters *counters;
    SharedBacklogHead backlog;
};

struct ZoneConf {
    std::size_t orgs;
};

ZoneHead *attached;
ngx_slab_pool_t *attached_pool;

ngx_int_t init_zone(ngx_shm_zone_t *zone, void *data) {
    auto *conf = static_cast<ZoneConf *>(zone->data);
    if (data != nullptr) {  // a reload kept the zone (same name and size): keep its figures
        auto *head = static_cast<ZoneHead *>(data);
        if (spendcap::StatusCounters::existing(head->counters, conf->orgs) != nullptr) {
            zone->data = head;
            return NGX_OK;
        }
    }
    auto *pool = reinterpret_cast<ngx_slab_pool_t *>(zone->shm.addr);
    if (zone->shm.exists) {  // (Windows only)
        zone->data = pool->data;
        return NGX_OK;
    }
    auto *head = static_cast<ZoneHead *>(ngx_slab_calloc(pool, sizeof(ZoneHead)));
    void *memory = ngx_slab_alloc(pool, spendcap::StatusCounters::bytes(conf->orgs));
    if (head == nullptr || memory == nullptr) {
        return NGX_ERROR;
    }
    head->counters = spendcap::StatusCounters::create(memory, conf->orgs);
    new (&head->backlog) SharedBacklogHead();
    ngx_queue_init(&head->backlog.writes);
    pool->data = head;
    pool->log_nomem = 0;  // a full backlog says so itself, once a second
    zone->data = head;
    static const char kContext[] = " in spend_cap zone";
    pool->log_ctx = static_cast<u_char *>(ngx_slab_alloc(pool, sizeof(kContext)));
    if (pool->log_ctx != nullptr) {
        ngx_memcpy(pool->log_ctx, kContext, sizeof(kContext));
    }
    return NGX_OK;
}

}  // namespace

ngx_shm_zone_t *zone_add(ngx_conf_t *cf, std::size_t orgs) {
    // The size names the org count too, so that a reload changing
    // spend_cap_status_orgs gets a new zone rather than a layout it cannot read.
    const std::size_t size = spendcap::StatusCounters::bytes(orgs) + orgs * sizeof(std::uint64_t)
                             + 2 * kSharedBacklogBytes + kSlack;
    ngx_str_t name = ngx_string("spend_cap");
    ngx_shm_zone_t *zone = ngx_shared_memory_add(cf, &name, size, &ngx_http_spend_cap_module);
    if (zone == nullptr) {
        return nullptr;
    }
    auto *conf = static_cast<ZoneConf *>(ngx_pcalloc(cf->pool, sizeof(ZoneConf)));
    if (conf == nullptr) {
        return nullptr;
    }
    conf->orgs = orgs;
    zone->init = init_zone;
    zone->data = conf;
    return zone;
}

void zone_attach(ngx_shm_zone_t *zone) {
    const bool made = zone != nullptr && zone->shm.addr != nullptr;
    attached = made ? static_cast<ZoneHead *>(zone->data) : nullptr;
    attached_pool = made ? reinterpret_cast<ngx_slab_pool_t *>(zone->shm.addr) : nullptr;
}

spendcap::StatusCounters *status_counters() { return attached != nullptr ? attached->counters : nullptr; }

ngx_slab_pool_t *zone_pool() { return attached_pool; }

SharedBacklogHead *zone_backlog() { return attached != nullptr ? &attached->backlog : nullptr; }

}  // namespace spendcap_ngx
