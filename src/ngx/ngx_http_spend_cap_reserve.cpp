#include "ngx_http_spend_cap_reserve.h"

#include <hiredis/hiredis.h>

#include <exception>
#include <memory>
#include <tuple>
#include <utility>

#include "ngx_http_spend_cap_batches.h"
#include "ngx_http_spend_cap_sequence.h"
#include "accounting/sweep.h"

namespace spendcap_ngx {
namespace {

// A batch's script call stays short: Redis runs nothing else meanwhile.
constexpr std::size_t kMaxBatch = 64;

struct Batch {
    std::string org;
    ngx_msec_t timeout = 0;
    ngx_msec_t ttl = 0;
    std::vector<spendcap::ReserveItem> items;
    std::vector<ReserveTicket *> tickets;  // nullptr: its request is gone
    // Off once reservations past their deadline were given back for it
    // ({4}): it is then sent once more, under a batch id of its own.
    bool check_due = true;
};

// Requests of one org whose caps were read at one config version.
using BatchKey = std::tuple<std::string, std::string, ngx_msec_t, ngx_msec_t>;

// What a batch's reply says to each of its requests.
struct BatchAnswer {
    spendcap::ReserveReplyParts split;
    const char *error = nullptr;  // the batch failed as a whole
    bool error_reply = false;     // ... with an error reply from Redis
};

BatchAnswer read_answer(const Batch &batch, RedisStatus status, const redisReply *reply) {
    BatchAnswer answer;
    answer.error_reply = reply != nullptr && reply->type == REDIS_REPLY_ERROR;
    answer.error = answer.error_reply ? reply->str : nullptr;
    if (status != RedisStatus::reply || answer.error_reply) {
        return answer;
    }
    std::vector<long long> flat;
    bool integers = reply->type == REDIS_REPLY_ARRAY;
    if (integers) {
        flat.reserve(reply->elements);
        for (std::size_t k = 0; integers && k < reply->elements; ++k) {
            integers = reply->element[k]->type == REDIS_REPLY_INTEGER;
            flat.push_back(reply->element[k]->integer);
        }
    }
    if (integers) {
        answer.split = spendcap::split_reserve_reply(flat, batch.tickets.size());
    }
    if (!integers || answer.split.malformed) {
        answer.error = "reserve reply is not one part per request";
    } else if (answer.split.given_up) {
        answer.error = "reserve script found the batch already given up";
    } else if (answer.split.due) {
        answer.error = "reserve script met reservations past their deadline twice";
    } else if (answer.split.stale) {
        // Every request gets {3}: decode_reserve_reply says stale.
        answer.split.parts.assign(batch.tickets.size(), std::vector<long long>{3});
    }
    return answer;
}

// Hands the answer to every request still there, then frees the batch. No
// request is left waiting: one whose handler throws is logged, the others
// are still answered.
void answer_all(Batch *batch, RedisStatus status, const redisReply *reply) {
    const std::unique_ptr<Batch> owned(batch);
    BatchAnswer answer;
    try {
        answer = read_answer(*batch, status, reply);
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0, "spend_cap: reading a reserve reply: %s", e.what());
        status = RedisStatus::unavailable;
        answer = BatchAnswer{};
    }
    const bool answered = answer.error == nullptr && status == RedisStatus::reply;
    for (std::size_t i = 0; i < batch->tickets.size(); ++i) {
        ReserveTicket *ticket = batch->tickets[i];
        if (ticket == nullptr) {
            continue;
        }
        ticket->batch = nullptr;
        try {
            ticket->done(ticket->data, status, answered ? &answer.split.parts[i] : nullptr, answer.error,
                         answer.error_reply);
        } catch (const std::exception &e) {
            ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0, "spend_cap: answering a reservation: %s", e.what());
        }
    }
}

void send(std::unique_ptr<Batch> owned);

void on_due_given_back(void *data, bool) {
    send(std::unique_ptr<Batch>(static_cast<Batch *>(data)));
}

// {4}: a request would be refused while reservations of the org are past
// their deadline (their workers died). They are given back first, then the
// batch goes again without that check, so that they never refuse it.
bool give_back_due_first(Batch *batch, RedisStatus status, const redisReply *reply) {
    if (!batch->check_due || status != RedisStatus::reply || reply == nullptr || reply->type != REDIS_REPLY_ARRAY
        || reply->elements != 1 || reply->element[0]->type != REDIS_REPLY_INTEGER || reply->element[0]->integer != 4) {
        return false;
    }
    batch->check_due = false;
    run_sequence(std::make_unique<spendcap::ReservationSweep>(batch->org, spendcap::kDueBatchesFirst, true),
                 batch->timeout, on_due_given_back, batch);
    return true;
}

void on_batch_reply(void *data, RedisStatus status, const redisReply *reply) {
    auto *batch = static_cast<Batch *>(data);
    try {
        if (give_back_due_first(batch, status, reply)) {
            return;
        }
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0, "spend_cap: giving back due reservations: %s", e.what());
        status = RedisStatus::unavailable;
        reply = nullptr;
    }
    answer_all(batch, status, reply);
}

// Sends a batch (its requests still there): their answers come through
// on_batch_reply; with no connection or no command, at once. The batch
// lives until then.
void send_or_throw(Batch *batch) {
    // Requests that left before it did are not reserved at all.
    std::size_t kept = 0;
    for (std::size_t i = 0; i < batch->tickets.size(); ++i) {
        if (batch->tickets[i] == nullptr) {
            continue;
        }
        if (kept != i) {
            batch->tickets[kept] = batch->tickets[i];
            batch->items[kept] = std::move(batch->items[i]);
        }
        batch->tickets[kept]->index = kept;
        ++kept;
    }
    batch->tickets.resize(kept);
    batch->items.resize(kept);
    if (kept == 0) {
        delete batch;
        return;
    }
    // Sent again, its id is a new one: a settlement of a request that left
    // meanwhile may have buried the first (keys::gone).
    const std::string batch_id = batch->items.front().request_id + (batch->check_due ? "" : "+1");
    std::vector<std::string> command = spendcap::reserve_batch_command(
        batch->items, batch_id, static_cast<std::int64_t>(batch->ttl), batch->check_due);
    RedisOp *op = command.empty() ? nullptr
                                  : redis_eval(std::move(command), &spendcap::scripts::reserve().text, batch->timeout,
                                               on_batch_reply, batch);
    if (op == nullptr) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0, "spend_cap: a reserve batch of org %s could not be sent%s",
                      batch->org.c_str(), command.empty() ? " (no command)" : "");
        answer_all(batch, RedisStatus::unavailable, nullptr);
        return;
    }
    for (ReserveTicket *ticket : batch->tickets) {
        ticket->sent = true;
        ticket->batch_id = batch_id;
    }
}

// A batch that cannot be sent (out of memory building its command) is
// answered as if Redis were down, never left with requests waiting on it.
void send(std::unique_ptr<Batch> owned) {
    Batch *batch = owned.release();
    try {
        send_or_throw(batch);
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0, "spend_cap: sending a reserve batch of org %s: %s",
                      batch->org.c_str(), e.what());
        answer_all(batch, RedisStatus::unavailable, nullptr);
    }
}

// Reservations wait per org and config version (and per timeout and ttl,
// which a batch has one of).
IterationBatches<BatchKey, std::unique_ptr<Batch>> batches(send, "reserving");

}  // namespace

bool reserve_later(ReserveTicket &ticket, spendcap::ReserveItem item, ngx_msec_t timeout, ngx_msec_t ttl,
                   ReserveDone done, void *data) {
    if (!redis_ready() || item.ledger == nullptr) {
        return false;
    }
    const BatchKey key{item.ledger->org, item.ledger->config_version, timeout, ttl};
    if (const std::unique_ptr<Batch> &queued = batches.waiting(key)) {
        // A request reserving again under its id (an internal redirect to
        // another spend_cap location): the batch goes first, so that each
        // id is once in a batch.
        for (const spendcap::ReserveItem &other : queued->items) {
            if (other.request_id == item.request_id) {
                batches.send_now(key);
                break;
            }
        }
    }
    std::unique_ptr<Batch> &slot = batches.waiting(key);
    if (slot == nullptr) {
        slot = std::make_unique<Batch>();
        Batch *batch = slot.get();
        batch->org = item.ledger->org;
        batch->timeout = timeout;
        batch->ttl = ttl;
        batch->items.reserve(8);
        batch->tickets.reserve(8);
    }
    Batch *batch = slot.get();
    ticket.batch = batch;
    ticket.index = batch->tickets.size();
    ticket.sent = false;
    ticket.batch_id.clear();
    ticket.done = done;
    ticket.data = data;
    batch->items.push_back(std::move(item));
    batch->tickets.push_back(&ticket);
    if (batch->tickets.size() >= kMaxBatch) {
        batches.send_now(key);
    }
    return true;
}

void reserve_cancel(ReserveTicket &ticket) {
    if (ticket.batch == nullptr) {
        return;
    }
    auto *batch = static_cast<Batch *>(ticket.batch);
    if (ticket.index < batch->tickets.size() && batch->tickets[ticket.index] == &ticket) {
        batch->tickets[ticket.index] = nullptr;
    }
    ticket.batch = nullptr;
}

void reserve_flush_all() {
    batches.stop();
}

}  // namespace spendcap_ngx
