#include "relay/metrics_server.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>

namespace spendcap::relay {

int listen_metrics(const std::string &host, int port) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw std::runtime_error("metrics: socket: " + std::string(std::strerror(errno)));
    const int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
        // A name (localhost): resolved once, at start (the relay may block).
        addrinfo hints{}, *found = nullptr;
        hints.ai_family = AF_INET;
        hints.ai_socktype = SOCK_STREAM;
        if (getaddrinfo(host.c_str(), nullptr, &hints, &found) != 0 || found == nullptr) {
            close(fd);
            throw std::runtime_error("metrics: cannot resolve \"" + host + "\" to an IPv4 address");
        }
        addr.sin_addr = reinterpret_cast<sockaddr_in *>(found->ai_addr)->sin_addr;
        freeaddrinfo(found);
    }
    if (bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) != 0 || listen(fd, 16) != 0) {
        const std::string why = std::strerror(errno);
        close(fd);
        throw std::runtime_error("metrics: cannot listen on " + host + ":" + std::to_string(port) + ": " + why);
    }
    return fd;
}

void serve_metrics_on(int fd, const std::function<std::string()> &render, const std::atomic<bool> &stop) {
    while (!stop) {
        pollfd p{fd, POLLIN, 0};
        if (poll(&p, 1, 500) <= 0) continue;
        const int client = accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
        if (client < 0) continue;
        timeval tv{2, 0};
        setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        char buf[2048];
        std::string request;
        while (request.find("\r\n\r\n") == std::string::npos && request.size() < 8192) {
            const ssize_t n = recv(client, buf, sizeof buf, 0);
            if (n <= 0) break;
            request.append(buf, static_cast<std::size_t>(n));
        }
        std::string status = "404 Not Found", type = "text/plain", body = "not found\n";
        if (request.rfind("GET /metrics ", 0) == 0 || request.rfind("GET /metrics?", 0) == 0) {
            status = "200 OK";
            type = "text/plain; version=0.0.4; charset=utf-8";
            body = render();
        }
        const std::string response = "HTTP/1.0 " + status + "\r\nContent-Type: " + type
                                     + "\r\nContent-Length: " + std::to_string(body.size())
                                     + "\r\nConnection: close\r\n\r\n" + body;
        std::size_t sent = 0;
        while (sent < response.size()) {
            const ssize_t n = send(client, response.data() + sent, response.size() - sent, MSG_NOSIGNAL);
            if (n <= 0) break;
            sent += static_cast<std::size_t>(n);
        }
        close(client);
    }
}

void serve_metrics(const std::string &host, int port, const std::function<std::string()> &render,
                   const std::atomic<bool> &stop) {
    const int fd = listen_metrics(host, port);
    serve_metrics_on(fd, render, stop);
    close(fd);
}

}  // namespace spendcap::relay
