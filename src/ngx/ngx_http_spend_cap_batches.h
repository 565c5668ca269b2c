// What reservation and settlement batches share: the batches waiting, one
// per key, leave together at the end of the event loop iteration that
// started the first of them (a posted event), or at once when one is full.
// Nothing waits for a batch to fill.
#pragma once

#include <exception>
#include <map>
#include <utility>

#include "ngx.h"

namespace spendcap_ngx {

template <typename Key, typename Batch>
class IterationBatches {
public:
    using Send = void (*)(Batch batch);

    // `what` names the work in a log line ("reserving", "settling").
    IterationBatches(Send send, const char *what) : send_(send), what_(what) {}

    // The batch waiting for `key` (a new, empty one if none); it leaves at
    // the end of this iteration.
    Batch &waiting(const Key &key) {
        if (flush_.handler == nullptr) {
            flush_.handler = on_flush;
            flush_.data = this;
        }
        if (!flush_.posted) {
            flush_.log = ngx_cycle->log;
            ngx_post_event(&flush_, &ngx_posted_events);
        }
        return waiting_[key];
    }

    // Sends the batch of `key` now (it is full, or must go first).
    void send_now(const Key &key) {
        auto at = waiting_.find(key);
        if (at == waiting_.end()) {
            return;
        }
        Batch batch = std::move(at->second);
        waiting_.erase(at);
        send_(std::move(batch));
    }

    // Sends every waiting batch.
    void flush_all() {
        std::map<Key, Batch> batches;
        batches.swap(waiting_);
        for (auto &entry : batches) {
            send_(std::move(entry.second));
        }
    }

    // exit_process: nothing is left waiting.
    void stop() {
        if (flush_.posted) {
            ngx_delete_posted_event(&flush_);
        }
        flush_all();
    }

private:
    static void on_flush(ngx_event_t *ev) {
        auto *self = static_cast<IterationBatches *>(ev->data);
        try {
            self->flush_all();
        } catch (const std::exception &e) {
            ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0, "spend_cap: %s: %s", self->what_, e.what());
        }
    }

    Send send_;
    const char *what_;
    std::map<Key, Batch> waiting_;
    ngx_event_t flush_{};
};

}  // namespace spendcap_ngx
