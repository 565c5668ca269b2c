#include "ngx_http_spend_cap_settle.h"

#include <exception>
#include <memory>
#include <utility>
#include <vector>

#include "ngx_http_spend_cap_batches.h"
#include "ngx_http_spend_cap_redis.h"

namespace spendcap_ngx {
namespace {

// A batch's script call stays short: Redis runs nothing else meanwhile.
constexpr std::size_t kMaxBatch = 64;

struct Batch {
    std::vector<spendcap::SettleItem> items;
};


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

void send(Batch batch) {
    std::vector<std::string> command;
    try {
        command = spendcap::settle_batch_command(batch.items);
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0, "spend_cap: %s could not be settled: %s",
                      describe(batch.items).c_str(), e.what());
        return;
    }
    if (command.empty()) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0, "spend_cap: %s could not be settled",
                      describe(batch.items).c_str());
        return;
    }
    MustLand what;
    what.script = &spendcap::scripts::settle();
    what.settlements = static_cast<unsigned>(batch.items.size());
    what.summary = std::to_string(batch.items.size()) + " settlements of org " + batch.items.front().ledger->org
                   + " (requests " + batch.items.front().request_id
                   + (batch.items.size() > 1 ? " to " + batch.items.back().request_id : std::string()) + ")";
    what.says_sent_before = true;
    auto items = std::make_shared<const std::vector<spendcap::SettleItem>>(std::move(batch.items));
    what.describe = [items] { return describe(*items); };
    redis_eval_reliably(std::move(command), std::move(what));
}

// Settlements wait per org.
IterationBatches<std::string, Batch> batches(send, "settling");

}  // namespace

void settle_later(spendcap::SettleItem item) {
    // One bad item must not take a whole batch with it.
    if (item.ledger == nullptr || item.ledger->counters.empty() || item.request_id.empty()) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0, "spend_cap: a settlement of request %s could not be made",
                      item.request_id.c_str());
        return;
    }
    const std::string &org = item.ledger->org;
    Batch &batch = batches.waiting(org);
    batch.items.push_back(std::move(item));
    if (batch.items.size() >= kMaxBatch) {
        batches.send_now(org);
    }
}

void settle_flush_all() {
    batches.stop();
}

}  // namespace spendcap_ngx
