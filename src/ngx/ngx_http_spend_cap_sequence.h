// Runs a short Redis conversation of the core (spendcap::Sequence) on the
// worker's connection: each reply decides the next command.
#pragma once

#include <memory>

#include "ngx.h"
#include "redis/command.h"

namespace spendcap_ngx {

// `done` (may be nullptr) is called once, on the event loop, after this call
// returns: `finished` true when the sequence ran to its end, false when a
// command could not be sent or got no reply (no connection, a timeout).
// `timeout` applies to each command.
using SequenceDone = void (*)(void *data, bool finished);
void run_sequence(std::unique_ptr<spendcap::Sequence> sequence, ngx_msec_t timeout, SequenceDone done, void *data);

}  // namespace spendcap_ngx
