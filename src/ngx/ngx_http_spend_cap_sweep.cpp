#include "ngx_http_spend_cap_sweep.h"

#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "ngx_http_spend_cap_redis.h"
#include "ngx_http_spend_cap_sequence.h"
#include "accounting/sweep.h"
#include "identity/records.h"

#include <hiredis/hiredis.h>

namespace spendcap_ngx {
namespace {

constexpr ngx_msec_t kSweepEvery = 1000;
constexpr std::size_t kOrgsPerTick = 32;
constexpr std::int64_t kReleasesPerOrg = 64;
constexpr ngx_msec_t kSweepTimeout = 1000;

struct Sweeper {
    std::vector<std::string> orgs;
    std::size_t next = 0;
    ngx_event_t timer{};
    ngx_log_t *log = nullptr;
};

Sweeper *sweeper;

constexpr int kApiOrgsPerTick = 8;

void sweep_org(const std::string &org) {
    run_sequence(std::make_unique<spendcap::ReservationSweep>(org, kReleasesPerOrg), kSweepTimeout, nullptr, nullptr);
}

// Orgs the API created are not in the file: a random few of them each tick.
void on_api_orgs(void *, RedisStatus status, const redisReply *reply) {
    if (status != RedisStatus::reply || reply == nullptr || reply->type != REDIS_REPLY_ARRAY) {
        return;
    }
    try {
        for (std::size_t i = 0; i < reply->elements; ++i) {
            const redisReply *e = reply->element[i];
            if (e->type == REDIS_REPLY_STRING && spendcap::fits_redis_key(std::string_view(e->str, e->len))) {
                sweep_org(std::string(e->str, e->len));
            }
        }
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0, "spend_cap: sweeping reservations: %s", e.what());
    }
}

void on_tick(ngx_event_t *ev) {
    try {
        // Not connected: the next tick tries again.
        if (redis_ready()) {
            spendcap::Command sample = spendcap::api_orgs_sample_command(kApiOrgsPerTick);
            redis_eval(std::move(sample.argv), sample.script, kSweepTimeout, on_api_orgs, nullptr);
            for (std::size_t i = 0; i < kOrgsPerTick && i < sweeper->orgs.size(); ++i) {
                sweep_org(sweeper->orgs[sweeper->next]);
                sweeper->next = (sweeper->next + 1) % sweeper->orgs.size();
            }
        }
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_ERR, sweeper->log, 0, "spend_cap: sweeping reservations: %s", e.what());
    }
    ngx_add_timer(ev, kSweepEvery);
}

}  // namespace

void sweep_start(std::shared_ptr<const spendcap::Policy> policy, ngx_log_t *log) {
    sweeper = new Sweeper;
    sweeper->log = log;
    for (const auto &entry : policy->orgs) sweeper->orgs.push_back(entry.first);
    sweeper->timer.handler = on_tick;
    sweeper->timer.log = log;
    sweeper->timer.data = sweeper;
    sweeper->timer.cancelable = 1;
    ngx_add_timer(&sweeper->timer, kSweepEvery);
}

void sweep_stop() {
    if (sweeper == nullptr) {
        return;
    }
    if (sweeper->timer.timer_set) {
        ngx_del_timer(&sweeper->timer);
    }
    delete sweeper;
    sweeper = nullptr;
}

}  // namespace spendcap_ngx
