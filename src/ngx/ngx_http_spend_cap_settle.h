// Settlements go to Redis in batches: those of one org that end in the same
// event loop iteration become one script call, which writes each counter
// once, however many requests it settles. Nothing waits for a batch to fill:
// it leaves at the end of the iteration that started it.
#pragma once

#include <string>

#include "ngx.h"
#include "accounting/reservation.h"

namespace spendcap_ngx {

// Log lines name each request of a batch by its id, org, key and amounts.
void settle_later(spendcap::SettleItem item);

// Hands every pending batch to the Redis client (exit_process, before the
// client stops, so that nothing is left behind unlogged).
void settle_flush_all();

}  // namespace spendcap_ngx
