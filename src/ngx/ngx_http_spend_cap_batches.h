// What reservation and settlement batches share: the batches waiting, one
// per key, leave together at the end of the event loop iteration that
// started the first of them (a posted event), or at once when one is full.
// Nothing waits for a batch to fill. The container and its hand-over rules
// are the core's (base/keyed_batches.h); this adds the posted event.
#pragma once

#include "ngx.h"
#include "base/keyed_batches.h"

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
        return batches_.waiting(key);
    }

    // Sends the batch of `key` now (it is full, or must go first).
    void send_now(const Key &key) {
        Batch batch{};
        if (batches_.take(key, batch)) {
            send_(std::move(batch));
        }
    }

    // Sends every waiting batch; one that fails to leave is logged and
    // does not keep the others.
    void flush_all() {
        batches_.send_all(send_, [this](const Key &, const char *error) {
            ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0, "spend_cap: %s: %s", what_, error);
        });
    }

    // exit_process: nothing is left waiting.
    void stop() {
        if (flush_.posted) {
            ngx_delete_posted_event(&flush_);
        }
        flush_all();
    }

private:
    static void on_flush(ngx_event_t *ev) { static_cast<IterationBatches *>(ev->data)->flush_all(); }

    Send send_;
    const char *what_;
    spendcap::KeyedBatches<Key, Batch> batches_;
    ngx_event_t flush_{};
};

}  // namespace spendcap_ngx
