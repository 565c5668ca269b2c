#include "ngx_http_spend_cap_redis_adapter.h"

#include <hiredis/async.h>

#include <exception>
#include <new>

namespace spendcap_ngx {
namespace {

// The NGINX connection of one hiredis socket (ev.data of its context).
struct Attached {
    ngx_connection_t *c = nullptr;
    redisAsyncContext *ac = nullptr;
    RedisAdapterFlags *flags = nullptr;
};

void on_read(ngx_event_t *ev) {
    auto *a = static_cast<Attached *>(static_cast<ngx_connection_t *>(ev->data)->data);
    redis_guarded(ev->log, "redis read", [&] { redisAsyncHandleRead(a->ac); });
}

void on_write(ngx_event_t *ev) {
    auto *a = static_cast<Attached *>(static_cast<ngx_connection_t *>(ev->data)->data);
    RedisAdapterFlags *flags = a->flags;  // `a` may be freed inside the write
    flags->writing = true;
    redis_guarded(ev->log, "redis write", [&] { redisAsyncHandleWrite(a->ac); });
    flags->writing = false;
}

// Level-triggered: hiredis reads at most 16 KiB per call, so with edge
// triggering a burst of replies could sit unread until the next one arrives.
void add_read(void *privdata) {
    ngx_connection_t *c = static_cast<Attached *>(privdata)->c;
    if (!c->read->active) {
        ngx_add_event(c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT);
    }
}

void del_read(void *privdata) {
    ngx_connection_t *c = static_cast<Attached *>(privdata)->c;
    if (c->read->active) {
        ngx_del_event(c->read, NGX_READ_EVENT, 0);
    }
}

// Once connected, commands queued during one event loop iteration are
// written together at its end, without asking epoll first: the socket is
// nearly always writable. Only a write that could not finish (or a connect in
// progress) waits for a write event.
void add_write(void *privdata) {
    auto *a = static_cast<Attached *>(privdata);
    ngx_connection_t *c = a->c;
    if (a->flags->connected && !a->flags->writing) {
        if (!c->write->posted) {
            ngx_post_event(c->write, &ngx_posted_events);
        }
        return;
    }
    if (!c->write->active) {
        ngx_add_event(c->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT);
    }
}

void del_write(void *privdata) {
    ngx_connection_t *c = static_cast<Attached *>(privdata)->c;
    if (c->write->active) {
        ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
    }
}

// hiredis closes the socket itself (redisFree): release the NGINX connection
// without closing it, and mark it stale for events already collected.
void cleanup(void *privdata) {
    auto *a = static_cast<Attached *>(privdata);
    ngx_connection_t *c = a->c;
    del_read(a);
    del_write(a);
    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }
    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }
    c->fd = (ngx_socket_t) -1;
    ngx_free_connection(c);
    delete a;
}

}  // namespace

bool redis_attach(redisAsyncContext *ac, ngx_log_t *log, RedisAdapterFlags *flags) {
    ngx_connection_t *c = ngx_get_connection(ac->c.fd, log);
    if (c == nullptr) {
        return false;
    }
    auto *a = new (std::nothrow) Attached{c, ac, flags};
    if (a == nullptr) {
        c->fd = (ngx_socket_t) -1;
        ngx_free_connection(c);
        return false;
    }
    c->data = a;
    c->read->handler = on_read;
    c->write->handler = on_write;
    c->read->log = log;
    c->write->log = log;
    ac->ev.data = a;
    ac->ev.addRead = add_read;
    ac->ev.delRead = del_read;
    ac->ev.addWrite = add_write;
    ac->ev.delWrite = del_write;
    ac->ev.cleanup = cleanup;
    return true;
}

}  // namespace spendcap_ngx
