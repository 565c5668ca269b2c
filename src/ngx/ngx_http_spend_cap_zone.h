// The node's shared memory zone "spend_cap": the figures of spend_cap_status
// (the core's StatusCounters, counted by every worker) and the backlog of
// writes that must land (ngx_http_spend_cap_shared_backlog.h). Sized from
// spend_cap_status_orgs and the backlog's bounds; NGINX keeps a zone of the
// same name and size across `nginx -s reload`, so its totals never go back.
#pragma once

#include <cstddef>

#include "ngx.h"
#include "http/status_counters.h"

namespace spendcap_ngx {

// The backlog's part of the zone, guarded by the slab pool's mutex (which
// NGINX's master frees if a worker dies holding it).
struct SharedBacklogHead {
    ngx_queue_t writes;        // SharedWrite, oldest first
    std::size_t entries = 0;
    std::size_t bytes = 0;     // what the entries asked of the slab
};

// Declared while reading the configuration (the http block's end).
ngx_shm_zone_t *zone_add(ngx_conf_t *cf, std::size_t orgs);

// Called at init_process with the cycle's zone: this worker's view of it.
void zone_attach(ngx_shm_zone_t *zone);

// nullptr until attached (and in `nginx -t`).
spendcap::StatusCounters *status_counters();
ngx_slab_pool_t *zone_pool();
SharedBacklogHead *zone_backlog();

}  // namespace spendcap_ngx
