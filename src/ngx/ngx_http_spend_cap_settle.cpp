#include "ngx_http_spend_cap_settle.h"

#include <exception>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "ngx_http_spend_cap_redis.h"

namespace spendcap_ngx {
namespace {

// A batch's script call stays short: Redis runs nothing else meanwhile.
constexpr std::size_t kMaxBatch = 64;

struct Batch {
    std::vector<spendcap::SettleItem> items;
};

struct Pending {
    std::map<std::string, Batch> by_org;
    ngx_event_t flush{};
};

Pending *pending;

// "settlement of request R (org O, key K, reserved X USD, cost Y USD); ..."
// Only a log line needs it, so it is written only then.
std::string describe(const std::vector<spendcap::SettleItem> &items) {
    std::string out;
    for (const spendcap::SettleItem &item : items) {
        if (!out.empty()) {
            out += "; ";
        }
        out += "settlement of request " + item.request_id + " (org " + item.ledger->org + ", key "
               + item.ledger->key_id + ", reserved " + spendcap::format_usd(item.estimate.cost) + " USD, cost "
               + spendcap::format_usd(item.real.cost) + " USD)";
    }
    return out;
}

void send(Batch &batch) {
    std::vector<std::string> command = spendcap::settle_batch_command(batch.items);
    if (command.empty()) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0, "spend_cap: %s could not be settled",
                      describe(batch.items).c_str());
        return;
    }
    auto items = std::make_shared<const std::vector<spendcap::SettleItem>>(std::move(batch.items));
    redis_eval_reliably(std::move(command), &spendcap::settle_script(), [items] { return describe(*items); });
}

void flush_all() {
    std::map<std::string, Batch> batches;
    batches.swap(pending->by_org);
    for (auto &entry : batches) {
        send(entry.second);
    }
}

void on_flush(ngx_event_t *) {
    try {
        flush_all();
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0, "spend_cap: settling: %s", e.what());
    }
}

}  // namespace

void settle_later(spendcap::SettleItem item) {
    // One bad item must not take a whole batch with it.
    if (item.ledger == nullptr || item.ledger->counters.empty() || item.request_id.empty()) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0, "spend_cap: a settlement of request %s could not be made",
                      item.request_id.c_str());
        return;
    }
    if (pending == nullptr) {
        pending = new Pending;
        pending->flush.handler = on_flush;
        pending->flush.log = ngx_cycle->log;
        pending->flush.data = pending;
    }
    Batch &batch = pending->by_org[item.ledger->org];
    batch.items.push_back(std::move(item));
    if (batch.items.size() >= kMaxBatch) {
        Batch full = std::move(batch);
        pending->by_org.erase(full.items.front().ledger->org);
        send(full);
        return;
    }
    if (!pending->flush.posted) {
        ngx_post_event(&pending->flush, &ngx_posted_events);
    }
}

void settle_flush_all() {
    if (pending == nullptr) {
        return;
    }
    if (pending->flush.posted) {
        ngx_delete_posted_event(&pending->flush);
    }
    flush_all();
    delete pending;
    pending = nullptr;
}

}  // namespace spendcap_ngx
