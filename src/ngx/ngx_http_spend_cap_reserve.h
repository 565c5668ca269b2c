// Reservations go to Redis in batches: the requests of one org that are
// ready in the same event loop iteration become one script call, decided one
// after the other inside it, each with its own answer. Nothing waits for a
// batch to fill: it leaves at the end of the iteration that started it.
#pragma once

#include <string>
#include <vector>

#include "ngx.h"
#include "ngx_http_spend_cap_redis.h"
#include "accounting/reservation.h"

namespace spendcap_ngx {

// The answer for one request. `ints`: its part of the reply (for
// decode_reserve_reply), nullptr when there is none; `error`: why not (a
// Redis error reply or a malformed reply); `not_done`: Redis answered with
// an error, so the script changed nothing.
using ReserveDone = void (*)(void *data, RedisStatus status, const std::vector<long long> *ints,
                             const char *error, bool not_done);

// One request's place in a batch; lives in the request's context.
struct ReserveTicket {
    void *batch = nullptr;   // the batch it waits in; nullptr once answered or taken out
    std::size_t index = 0;   // its place there
    bool sent = false;       // its batch went to Redis (which may have reserved it)
    std::string batch_id;    // that batch's id, once sent
    ReserveDone done = nullptr;
    void *data = nullptr;
};

// Queues a reservation. `done` is called once, on the event loop, after
// this call returns (the batch leaves at the end of the iteration).
// Returns false (nothing queued) when there is no Redis connection.
// `timeout`: spend_cap_timeout; `ttl`: spend_cap_reservation_ttl.
bool reserve_later(ReserveTicket &ticket, spendcap::ReserveItem item, ngx_msec_t timeout, ngx_msec_t ttl,
                   ReserveDone done, void *data);

// Sends every batch still waiting (exit_process, before the client stops).
void reserve_flush_all();

// The request is gone. If its batch has not left, it is taken out (nothing
// is reserved for it); if it has, its answer is ignored. Safe to repeat.
void reserve_cancel(ReserveTicket &ticket);

}  // namespace spendcap_ngx
