// Gives back, at their deadline, the reservations whose request never
// settled (its worker was killed, its node lost, its settlement dropped), and
// forgets the markers whose day has passed (spendcap::ReservationSweep). A
// reserve that would refuse a request while such reservations hold gives
// back those of its org first (ngx_http_spend_cap_reserve.cpp).
#pragma once

#include <memory>

#include "ngx.h"
#include "policy/policy.h"

namespace spendcap_ngx {

// One sweeper per node (worker 0): every second it sweeps the next few orgs
// of the policy, round robin.
void sweep_start(std::shared_ptr<const spendcap::Policy> policy, ngx_log_t *log);
void sweep_stop();

}  // namespace spendcap_ngx
