// Gives back, at their deadline, the reservations whose request never
// settled (its worker was killed, its node lost, its settlement dropped) for
// the orgs no request comes to: the reserve script does it for the others.
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
