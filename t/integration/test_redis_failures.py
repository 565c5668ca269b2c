"""Redis unreachable, restarted, flushed of its scripts, or too slow."""

import time

import pytest

from support import (CHAINS, SECRETS, all_counter_keys, chat_body, free_port, messages_body, openai_cost, post,
                     read_counters, wait_request_settled, wait_until, held_requests, resv_records, reserved_fields)

K1 = CHAINS["k1"]
COST = openai_cost("gpt-4o-mini", 10, 20)
CLOSED = "127.0.0.1:%d" % free_port()  # nothing listens there


def wait_spend(r, expected, timeout=3.0):
    keys = all_counter_keys(K1, "spend")
    want = {k: expected for k in keys}
    wait_until(lambda: read_counters(r, keys) == want, timeout=timeout)
    got = read_counters(r, keys)
    assert got == want, "spend counters: expected %d everywhere, got %s" % (expected, got)


def assert_unavailable(r, surface):
    assert r.status_code == 503, "expected 503, got %d: %s" % (r.status_code, r.text)
    assert r.headers["content-type"].split(";")[0].strip() == "application/json"
    ra = r.headers.get("retry-after")
    assert ra is not None and ra.isdigit() and int(ra) > 0, "503 needs Retry-After seconds, got %r" % ra
    b = r.json()
    if surface == "openai":
        assert b["error"]["code"] == "spend_cap_unavailable"
        assert b["error"]["param"] is None and b["error"]["message"]
    else:
        assert b["type"] == "error"
        assert b["error"]["type"] == "api_error"
        assert b["error"]["code"] == "spend_cap_unavailable"


@pytest.mark.nginx(redis_addr=CLOSED)
@pytest.mark.parametrize("surface,path,body", [("openai", "/v1/chat/completions", chat_body()),
                                               ("anthropic", "/v1/messages", messages_body())])
def test_redis_down_fail_closed(nginx, fake, surface, path, body):
    t0 = time.monotonic()
    r = post(nginx.url, path, body, SECRETS["k1"])
    assert time.monotonic() - t0 < 10.0  # decided at once, not after a client timeout (a loose bound: busy box)
    assert_unavailable(r, surface)
    assert fake.requests() == [], "fail closed must not reach the provider"
    e = nginx.log_entry(r.headers["x-test-request-id"])
    assert e["decision"] == "error"
    # a missing key is refused first (no Redis needed); a secret the file does not
    # hold may be a key the management API created, which only Redis knows
    r = post(nginx.url, path, body, None)
    assert r.status_code == 401
    r = post(nginx.url, path, body, "sk-unknown")
    assert_unavailable(r, surface)
    assert fake.requests() == []


@pytest.mark.nginx(redis_addr=CLOSED, location_extra="spend_cap_fail_mode open;")
def test_redis_down_fail_open(nginx, fake):
    r = post(nginx.url, "/v1/chat/completions", chat_body(), SECRETS["k1"])
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "chat.completion"
    assert len(fake.requests()) == 1
    e = nginx.log_entry(r.headers["x-test-request-id"])
    assert e["decision"] == "fail_open"
    assert e["key_id"] == "k1"
    # fail open is about Redis only: a bad key is still refused
    r = post(nginx.url, "/v1/chat/completions", chat_body(), None)
    assert r.status_code == 401
    assert len(fake.requests()) == 1


def test_redis_restart_reconnects(nginx_factory, redis_factory, fake):
    srv = redis_factory()
    rc = srv.client()
    ng = nginx_factory(redis_addr="127.0.0.1:%d" % srv.port)
    fake.reset()

    r = post(ng.url, "/v1/chat/completions", chat_body(), SECRETS["k1"])
    assert r.status_code == 200, r.text
    wait_spend(rc, COST)

    srv.stop()
    r = post(ng.url, "/v1/chat/completions", chat_body(), SECRETS["k1"])
    assert_unavailable(r, "openai")

    srv.start()  # same port, empty, no scripts loaded
    rc = srv.client()
    deadline = time.monotonic() + 10
    statuses = []
    while time.monotonic() < deadline:
        r = post(ng.url, "/v1/chat/completions", chat_body(), SECRETS["k1"])
        statuses.append(r.status_code)
        if r.status_code == 200:
            break
        time.sleep(0.2)
    assert statuses[-1] == 200, "no recovery within 10 s after Redis came back: %s" % statuses
    # every worker recovers (2 workers: several requests)
    for _ in range(6):
        r = post(ng.url, "/v1/chat/completions", chat_body(), SECRETS["k1"])
        assert r.status_code == 200, r.text
    wait_spend(rc, 7 * COST)
    assert len(fake.requests()) == 8


def test_script_flush_is_survived(nginx, redis, fake):
    for i in range(4):
        r = post(nginx.url, "/v1/chat/completions", chat_body(), SECRETS["k1"])
        assert r.status_code == 200, r.text
    wait_spend(redis, 4 * COST)
    redis.script_flush()
    # several requests so that every worker's connection meets NOSCRIPT, for reserve and settle
    for i in range(6):
        r = post(nginx.url, "/v1/chat/completions", chat_body(), SECRETS["k1"])
        assert r.status_code == 200, "request %d after SCRIPT FLUSH: %d %s" % (i, r.status_code, r.text)
    wait_spend(redis, 10 * COST)
    reqs = read_counters(redis, all_counter_keys(K1, "reqs"))
    assert set(reqs.values()) == {10}, reqs


def test_slow_redis_times_out_and_late_reservation_is_released(nginx_factory, redis_factory, fake):
    srv = redis_factory()
    rc = srv.client()
    ng = nginx_factory(redis_addr="127.0.0.1:%d" % srv.port, location_extra="spend_cap_timeout 100ms;")
    fake.reset()
    # warm up: both workers connected, scripts loaded
    for _ in range(4):
        r = post(ng.url, "/v1/chat/completions", chat_body(), SECRETS["k1"])
        assert r.status_code == 200, r.text
    wait_spend(rc, 4 * COST)

    srv.pause()
    try:
        t0 = time.monotonic()
        r = post(ng.url, "/v1/chat/completions", chat_body(max_tokens=5000), SECRETS["k1"], timeout=10)
        elapsed = time.monotonic() - t0
    finally:
        srv.resume()
    assert_unavailable(r, "openai")
    # (Redis stayed paused until the answer came: far less than that means the timer decided)
    assert elapsed < 5.0, "spend_cap_timeout 100ms, but the 503 took %.2f s" % elapsed
    assert len(fake.requests()) == 4

    # Redis now runs the reservation it received late, then the settlement that
    # followed it on the same connection and gives it back: once that settlement
    # has landed (its marker: a request whose reserve was not answered, a day),
    # the late reservation must not stay counted.
    wait_request_settled(rc, r.headers["x-test-request-id"], settlements=5, answered=False)
    wait_spend(rc, 4 * COST)
    assert held_requests(rc) == [] and resv_records(rc) == [], reserved_fields(rc)

    # and Redis is used normally again
    r = post(ng.url, "/v1/chat/completions", chat_body(), SECRETS["k1"])
    assert r.status_code == 200, r.text
    wait_spend(rc, 5 * COST)


def test_slow_redis_fail_open_lets_requests_through(nginx_factory, redis_factory, fake):
    srv = redis_factory()
    rc = srv.client()
    ng = nginx_factory(redis_addr="127.0.0.1:%d" % srv.port,
                       location_extra="spend_cap_timeout 100ms;\nspend_cap_fail_mode open;")
    fake.reset()
    r = post(ng.url, "/v1/chat/completions", chat_body(), SECRETS["k1"])
    assert r.status_code == 200
    wait_spend(rc, COST)
    srv.pause()
    try:
        t0 = time.monotonic()
        r = post(ng.url, "/v1/chat/completions", chat_body(), SECRETS["k1"], timeout=10)
        elapsed = time.monotonic() - t0
    finally:
        srv.resume()
    # answered while Redis was still paused (it resumes only after): the timer decided
    assert r.status_code == 200, r.text
    assert elapsed < 10.0, "fail-open request waited %.2f s" % elapsed
    assert ng.log_entry(r.headers["x-test-request-id"])["decision"] == "fail_open"
    assert len(fake.requests()) == 2
    # "open lets the request through and settles it later": once Redis answers again,
    # the fail-open request is counted at its real cost, once; its reserve was never
    # answered, so its settlement notes it in sc:{acme}:settled for a day
    wait_spend(rc, 2 * COST, timeout=5)
    wait_request_settled(rc, r.headers["x-test-request-id"], settlements=2, answered=False)


# ---------------------------------------------------------------- spend_cap_redis options

def test_redis_password_and_db(nginx_factory, redis_factory, fake, tmp_path):
    srv = redis_factory(password="s3cret-pw")
    ng = nginx_factory(redis_addr="127.0.0.1:%d password=s3cret-pw db=3" % srv.port)
    fake.reset()
    r = post(ng.url, "/v1/chat/completions", chat_body(), SECRETS["k1"])
    assert r.status_code == 200, r.text
    wait_spend(srv.client(db=3), COST)
    assert srv.client(db=0).dbsize() == 0, "counters must go to db 3"


def test_redis_wrong_password_is_unavailable(nginx_factory, redis_factory, fake):
    srv = redis_factory(password="s3cret-pw")
    ng = nginx_factory(redis_addr="127.0.0.1:%d password=wrong" % srv.port)
    fake.reset()
    r = post(ng.url, "/v1/chat/completions", chat_body(), SECRETS["k1"])
    assert_unavailable(r, "openai")
    assert fake.requests() == []
    assert srv.client().dbsize() == 0


def test_redis_unix_socket(nginx_factory, redis_factory, fake, tmp_path):
    sock = tmp_path / "redis.sock"
    srv = redis_factory(unixsocket=sock)
    ng = nginx_factory(redis_addr="unix:%s" % sock)
    fake.reset()
    r = post(ng.url, "/v1/messages", messages_body(), SECRETS["k1"])
    assert r.status_code == 200, r.text
    keys = all_counter_keys(K1, "reqs")
    wait_until(lambda: read_counters(srv.client(), keys) == {k: 1 for k in keys})
    assert read_counters(srv.client(), keys) == {k: 1 for k in keys}


def test_slow_redis_within_the_timeout_is_waited_for(nginx_factory, redis_factory, fake):
    """A Redis that answers late but within spend_cap_timeout decides the request."""
    import threading
    srv = redis_factory()
    rc = srv.client()
    ng = nginx_factory(redis_addr="127.0.0.1:%d" % srv.port, location_extra="spend_cap_timeout 3s;")
    fake.reset()
    for _ in range(2):
        assert post(ng.url, "/v1/chat/completions", chat_body(), SECRETS["k1"]).status_code == 200
    wait_spend(rc, 2 * COST)
    srv.pause()
    result = {}
    t = threading.Thread(target=lambda: result.update(
        r=post(ng.url, "/v1/chat/completions", chat_body(), SECRETS["k1"], timeout=10)))
    try:
        t0 = time.monotonic()
        t.start()
        time.sleep(0.6)
    finally:
        srv.resume()
    t.join(10)
    elapsed = time.monotonic() - t0
    # 200, not 503: it waited for Redis within its 3 s timeout
    assert result["r"].status_code == 200, result["r"].text
    assert 0.5 < elapsed < 10.0, elapsed
    wait_spend(rc, 3 * COST)
    assert len(fake.requests()) == 3
