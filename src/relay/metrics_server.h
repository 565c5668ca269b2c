// The relay's /metrics: a small blocking HTTP/1.0 server on its own thread
// (a scrape every few seconds is all it serves).
#pragma once

#include <atomic>
#include <functional>
#include <string>

namespace spendcap::relay {

// Listens on HOST:PORT (throws std::runtime_error when it cannot), then serves
// `render()` at GET /metrics until `stop`; other paths get 404.
void serve_metrics(const std::string &host, int port, const std::function<std::string()> &render,
                   const std::atomic<bool> &stop);
int listen_metrics(const std::string &host, int port);  // the socket serve_metrics uses
void serve_metrics_on(int fd, const std::function<std::string()> &render, const std::atomic<bool> &stop);

}  // namespace spendcap::relay
