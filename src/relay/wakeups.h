// Wake-ups: every script that appends an event PUBLISHes the org's name on
// sc:events (lib/events.lua); the relay listens, so a new event is attempted
// at once instead of when every stream is read (which it never does).
#pragma once

#include <atomic>
#include <functional>
#include <string>

#include "relay/relay_config.h"

namespace spendcap::relay {

constexpr const char *kWakeChannel = "sc:events";

// Calls `woken(org)` for each message until `stop`, connecting again after a
// lost connection (what it missed meanwhile, the delivery's sweep finds).
void listen_for_wakeups(const RelayConfig &config, const std::atomic<bool> &stop,
                        const std::function<void(std::string)> &woken);

}  // namespace spendcap::relay
