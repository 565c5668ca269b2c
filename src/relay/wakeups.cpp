#include "relay/wakeups.h"

#include <hiredis/hiredis.h>
#include <poll.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "relay/redis_link.h"

namespace spendcap::relay {

void listen_for_wakeups(const RelayConfig &config, const std::atomic<bool> &stop,
                        const std::function<void(std::string)> &woken) {
    while (!stop) {
        redisContext *c = nullptr;
        try {
            RedisLink seed(config.redis_nodes, config.cluster, config.password);
            if (config.cluster) seed.connect();
            c = seed.subscriber();
            redisReply *r = static_cast<redisReply *>(redisCommand(c, "SUBSCRIBE %s", kWakeChannel));
            if (r != nullptr) freeReplyObject(r);
            while (!stop) {
                pollfd p{c->fd, POLLIN, 0};
                const int ready_fds = poll(&p, 1, 1000);  // a second at most: look at `stop`
                if (ready_fds == 0) continue;
                if (ready_fds < 0 || redisBufferRead(c) != REDIS_OK) break;
                void *reply = nullptr;
                while (redisGetReplyFromReader(c, &reply) == REDIS_OK && reply != nullptr) {
                    auto *m = static_cast<redisReply *>(reply);
                    if (m->type == REDIS_REPLY_ARRAY && m->elements == 3 && m->element[2]->type == REDIS_REPLY_STRING) {
                        woken(std::string(m->element[2]->str, m->element[2]->len));
                    }
                    freeReplyObject(m);
                    reply = nullptr;
                }
            }
        } catch (const std::exception &e) {
            std::fprintf(stderr, "spend-cap-relay: wake-ups: %s\n", e.what());
        }
        if (c != nullptr) redisFree(c);
        if (!stop) std::this_thread::sleep_for(std::chrono::seconds(1));
    }
}

}  // namespace spendcap::relay
