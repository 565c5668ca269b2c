// spend-cap-relay: delivers the events spend-cap writes into each org's Redis
// stream as signed webhooks (SPEC section 8). `-c FILE` (default
// /etc/spend-cap/relay.yaml); `--check` validates the file and exits, like
// `nginx -t`. A bad file or an unreachable Redis at start is one line on
// stderr and exit 1; SIGTERM finishes the attempts in flight and exits 0.
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "policy/policy.h"
#include "relay/delivery.h"
#include "relay/http_post.h"
#include "relay/metrics_server.h"
#include "relay/relay_config.h"

namespace {

std::atomic<bool> stop{false};

void on_signal(int) { stop = true; }

int usage() {
    std::fprintf(stderr, "usage: spend-cap-relay [-c FILE] [--check]\n");
    return 2;
}

int fail(const std::string &why) {
    std::fprintf(stderr, "spend-cap-relay: %s\n", why.c_str());
    return 1;
}

}  // namespace

int main(int argc, char **argv) {
    using namespace spendcap::relay;
    std::string path = "/etc/spend-cap/relay.yaml";
    bool check = false;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "-c" && i + 1 < argc) {
            path = argv[++i];
        } else if (arg == "--check" || arg == "-t") {
            check = true;
        } else {
            return usage();
        }
    }
    RelayConfig config;
    std::vector<std::string> file_orgs;
    try {
        config = load_relay_config(path);
        if (!config.policy_path.empty()) {
            auto policy = spendcap::load_policy_file(config.policy_path);
            for (const auto &entry : policy->orgs) file_orgs.push_back(entry.first);
        }
    } catch (const std::exception &e) {
        return fail(e.what());
    }
    if (check) {
        std::printf("spend-cap-relay: %s: ok (%zu endpoints)\n", path.c_str(), config.endpoints.size());
        return 0;
    }
    http_init();
    std::signal(SIGPIPE, SIG_IGN);
    std::signal(SIGHUP, SIG_IGN);  // no reload: a changed file takes a restart (a closed terminal stops nothing)
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);

    Relay relay(config, file_orgs);
    int metrics_fd = -1;
    try {
        relay.start();
        if (config.metrics_port > 0) metrics_fd = listen_metrics(config.metrics_host, config.metrics_port);
    } catch (const std::exception &e) {
        return fail(e.what());
    }
    std::thread metrics;
    if (metrics_fd >= 0) {
        metrics = std::thread([&] { serve_metrics_on(metrics_fd, [&] { return relay.metrics().render(); }, stop); });
    }
    std::fprintf(stderr, "spend-cap-relay: delivering to %zu endpoints (%s)\n", config.endpoints.size(),
                 path.c_str());
    relay.run(stop);
    if (metrics.joinable()) metrics.join();
    if (metrics_fd >= 0) close(metrics_fd);
    std::fprintf(stderr, "spend-cap-relay: stopped\n");
    return 0;
}
