// Work waiting per key to leave together (reservation and settlement
// batches, one per org): the container and its hand-over rules, without the
// event loop (the glue posts the event that calls send_all).
#pragma once

#include <exception>
#include <map>
#include <utility>

namespace spendcap {

template <typename Key, typename Batch>
class KeyedBatches {
public:
    // The batch waiting for `key` (a new, empty one if none).
    Batch &waiting(const Key &key) { return waiting_[key]; }

    const Batch *find(const Key &key) const {
        auto at = waiting_.find(key);
        return at == waiting_.end() ? nullptr : &at->second;
    }

    bool empty() const { return waiting_.empty(); }

    // Moves the batch of `key` out into `out`; false if none waits.
    bool take(const Key &key, Batch &out) {
        auto at = waiting_.find(key);
        if (at == waiting_.end()) {
            return false;
        }
        out = std::move(at->second);
        waiting_.erase(at);
        return true;
    }

    // Hands every waiting batch to send(Batch&&), each exactly once. A send
    // that throws is reported to failed(key, what) and the others still
    // leave: none is dropped while its requests still point at it. Batches
    // started by a send (a request answered at once reserving again) wait
    // for the next call.
    template <typename Send, typename Failed>
    void send_all(Send &&send, Failed &&failed) {
        std::map<Key, Batch> leaving;
        leaving.swap(waiting_);
        for (auto &entry : leaving) {
            try {
                send(std::move(entry.second));
            } catch (const std::exception &e) {
                failed(entry.first, e.what());
            } catch (...) {
                failed(entry.first, "unknown exception");
            }
        }
    }

private:
    std::map<Key, Batch> waiting_;
};

}  // namespace spendcap
