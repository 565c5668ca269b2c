#include "ngx_http_spend_cap_sequence.h"

#include <exception>
#include <optional>
#include <utility>

#include "ngx_http_spend_cap_redis.h"

namespace spendcap_ngx {
namespace {

struct Running {
    std::unique_ptr<spendcap::Sequence> sequence;
    ngx_msec_t timeout = 0;
    SequenceDone done = nullptr;
    void *data = nullptr;
    ngx_event_t later{};  // a sequence that ends before its first reply says so on the next loop turn
    bool finished = false;
};

void end(Running *running, bool finished) {
    SequenceDone done = running->done;
    void *data = running->data;
    delete running;
    if (done != nullptr) {
        done(data, finished);
    }
}

void on_later(ngx_event_t *ev) {
    auto *running = static_cast<Running *>(ev->data);
    end(running, running->finished);
}

// Ends on the next loop turn, so that `done` never runs inside run_sequence.
void end_later(Running *running, bool finished) {
    running->finished = finished;
    running->later.handler = on_later;
    running->later.data = running;
    running->later.log = ngx_cycle->log;
    ngx_post_event(&running->later, &ngx_posted_events);
}

void on_reply(void *data, RedisStatus status, const redisReply *reply);

// Sends `command`; false when there is no connection.
bool send(Running *running, spendcap::Command command) {
    return redis_eval(std::move(command.argv), command.script, running->timeout, on_reply, running) != nullptr;
}

void on_reply(void *data, RedisStatus status, const redisReply *reply) {
    auto *running = static_cast<Running *>(data);
    if (status != RedisStatus::reply) {
        end(running, false);
        return;
    }
    std::optional<spendcap::Command> next;
    try {
        next = running->sequence->next(to_reply(reply));
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0, "spend_cap: %s", e.what());
        end(running, false);
        return;
    }
    if (!next) {
        end(running, true);
    } else if (!send(running, std::move(*next))) {
        end(running, false);
    }
}

}  // namespace

void run_sequence(std::unique_ptr<spendcap::Sequence> sequence, ngx_msec_t timeout, SequenceDone done, void *data) {
    auto *running = new Running;
    running->sequence = std::move(sequence);
    running->timeout = timeout;
    running->done = done;
    running->data = data;
    std::optional<spendcap::Command> first;
    try {
        first = running->sequence->start();
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0, "spend_cap: %s", e.what());
        end_later(running, false);
        return;
    }
    if (!first) {
        end_later(running, true);
    } else if (!send(running, std::move(*first))) {
        end_later(running, false);
    }
}

}  // namespace spendcap_ngx
