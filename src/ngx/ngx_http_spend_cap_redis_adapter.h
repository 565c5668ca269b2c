// hiredis's async context on NGINX's event loop (after slact/nchan's
// adapter): its socket becomes an NGINX connection whose read and write
// events drive redisAsyncHandleRead / redisAsyncHandleWrite.
#pragma once

#include <exception>

#include "ngx.h"

struct redisAsyncContext;

namespace spendcap_ngx {

// What the adapter needs to know of its connection, owned by it (it outlives
// the socket): once connected, writes are posted to the end of the loop
// iteration instead of waiting for a write event.
struct RedisAdapterFlags {
    bool connected = false;
    bool writing = false;  // inside redisAsyncHandleWrite
};

// Hooks `ac` into the event loop; false (nothing attached) when NGINX has no
// free connection for its socket. hiredis releases it (ev.cleanup) when it
// frees the context.
bool redis_attach(redisAsyncContext *ac, ngx_log_t *log, RedisAdapterFlags *flags);

// A timer of the Redis client's own (never one that keeps a stopping worker).
inline void redis_init_timer(ngx_event_t *ev, ngx_event_handler_pt handler, ngx_log_t *log, void *data) {
    ev->handler = handler;
    ev->log = log;
    ev->data = data;
    ev->cancelable = 1;
}

// Exceptions never cross into NGINX or hiredis: every callback runs its body
// through this.
template <typename F>
void redis_guarded(ngx_log_t *log, const char *where, F &&f) noexcept {
    try {
        f();
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_ALERT, log, 0, "spend_cap: %s: %s", where, e.what());
    } catch (...) {
        ngx_log_error(NGX_LOG_ALERT, log, 0, "spend_cap: %s failed", where);
    }
}

}  // namespace spendcap_ngx
