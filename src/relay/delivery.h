// The relay's delivery: every org's event stream to every endpoint that
// takes it, at least once, in stream order per org and endpoint ("a lane"),
// each lane waiting on its own retries while the others go on.
//
// - Positions are consumer groups, one per endpoint on each org's stream
//   (consumer "relay"), so a restarted relay, or another one, resumes there;
//   a group starts at the endpoint's first run (its `since` in Redis): an org
//   that existed then is delivered from that moment, one created later from
//   its beginning.
// - One relay at a time delivers an org: a lease in the org's slot
//   (sc:{ORG}:relay:lease, 10 s, renewed every 3 s, given back when the org is
//   caught up), so the order holds with several relays running.
// - New events are noticed at once through the scripts' PUBLISH on
//   sc:events (the org's name), and every few seconds by a sweep of the
//   groups' lag (a missed message, a relay that was down), never by reading
//   every stream every second.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "relay/relay_config.h"
#include "relay/relay_metrics.h"

namespace spendcap::relay {


class Relay {
public:
    // `file_orgs`: the policy file's orgs (the API's are read from sc:orgs).
    Relay(RelayConfig config, std::vector<std::string> file_orgs);
    ~Relay();

    // Connects and sets up the endpoints' start points: throws on an
    // unreachable Redis (one clear line for main).
    void start();
    // Delivers until `stop` is set; the attempts in flight finish first.
    void run(const std::atomic<bool> &stop);

    RelayMetrics &metrics() { return metrics_; }

private:
    struct Impl;
    Impl *impl_;
    RelayMetrics metrics_;
};

}  // namespace spendcap::relay
