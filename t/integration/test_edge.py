"""Edge cases of the request path: chunked bodies, keep-alive connections, client
aborts, where the key comes from, absurd max-tokens values, tricky JSON."""

import json

import httpx
import pytest

from support import (CHAINS, SECRETS, all_counter_keys, chat_body, counter_key, estimate_nanos, format_usd,
                     openai_cost, post, read_counters, read_to_eof, counter_state, resv_records, settled_count, usd_nanos,
                     wait_until)
from support import redis_barrier

K1 = CHAINS["k1"]


def wait_counters(r, keys, want, timeout=3.0):
    want = {k: want for k in keys} if isinstance(want, int) else want
    wait_until(lambda: read_counters(r, keys) == want, timeout=timeout)
    got = read_counters(r, keys)
    assert got == want, {k: (want[k], got[k]) for k in keys if got[k] != want[k]}


def test_chunked_request_body(nginx, redis, fake):
    """No Content-Length: the estimate still counts every byte of the body."""
    body = chat_body(max_tokens=50, content="z" * 20000)

    def gen():
        for i in range(0, len(body), 4096):
            yield body[i:i + 4096]

    r = httpx.post(nginx.url + "/v1/chat/completions", content=gen(),
                   headers={"authorization": "Bearer " + SECRETS["k1"], "content-type": "application/json"})
    assert r.status_code == 200, r.text
    reqs = fake.requests()
    assert len(reqs) == 1 and reqs[0]["body_len"] == len(body)
    e = nginx.log_entry(r.headers["x-test-request-id"])
    assert e["reserved_usd"] == format_usd(estimate_nanos("gpt-4o-mini", len(body), 50))


def test_keepalive_connection_mixes_outcomes(nginx, redis, fake):
    """Several requests on one client connection: each is judged on its own."""
    estimate = estimate_nanos("gpt-4o-mini", len(chat_body()), 100)
    daily = counter_key("acme", "spend", "key", "k1", "daily")
    with httpx.Client(base_url=nginx.url, timeout=10) as c:
        def call(secret, body=None):
            h = {"content-type": "application/json"}
            if secret:
                h["authorization"] = "Bearer " + secret
            return c.post("/v1/chat/completions", content=body or chat_body(), headers=h)

        r1 = call(SECRETS["k1"])
        assert r1.status_code == 200
        wait_counters(redis, all_counter_keys(K1), openai_cost("gpt-4o-mini", 10, 20))
        redis.set(daily, usd_nanos("2") - estimate + 1)
        r2 = call(SECRETS["k1"])
        assert r2.status_code == 402
        r3 = call(None)
        assert r3.status_code == 401
        r4 = call(SECRETS["k_open"])
        assert r4.status_code == 200
        r5 = call(SECRETS["k1"], b"{oops")
        assert r5.status_code == 400
        redis.set(daily, 0)
        r6 = call(SECRETS["k1"])
        assert r6.status_code == 200
    rids = [r.headers["x-test-request-id"] for r in (r1, r2, r3, r4, r5, r6)]
    assert len(set(rids)) == 6
    assert [nginx.log_entry(rid)["status"] for rid in rids] == ["200", "402", "401", "200", "400", "200"]
    assert nginx.log_entry(rids[3])["key_id"] == "k_open"
    assert len(fake.requests()) == 3
    assert [r.status_code for r in (r1, r4, r6)] == [200, 200, 200]


def test_client_abort_while_upstream_works_is_not_free(nginx, redis, fake):
    """The client gives up while the provider is still answering. The provider got the
    request and may bill it, so the request must stay counted (settled at its
    reservation), never released to 0 -- else aborting would bypass every cap.
    In any case it is settled once (counted in sc:{ORG}:settlements, its record gone), not
    left as a bare reservation."""
    body = chat_body(max_tokens=100)
    estimate = estimate_nanos("gpt-4o-mini", len(body), 100)
    with pytest.raises(httpx.TimeoutException):
        httpx.post(nginx.url + "/v1/chat/completions", content=body, timeout=0.5,
                   headers={"authorization": "Bearer " + SECRETS["k1"], "x-fake-delay-ms": "1500"})
    assert wait_until(lambda: len(fake.requests()) == 1, timeout=2)
    entry = wait_until(lambda: next((e for e in nginx.log_entries() if e["status"] == "499"), None), timeout=3)
    assert entry, "no 499 in the access log: %s" % nginx.log_entries()
    assert wait_until(lambda: settled_count(redis) == 1 and not resv_records(redis), timeout=2), \
        "never settled: settlements %d, records %s" % (settled_count(redis), resv_records(redis))
    wait_counters(redis, all_counter_keys(K1, "reqs"), 1)
    wait_counters(redis, all_counter_keys(K1, "spend"), estimate)
    assert entry["settled_from"] == "reservation"


def test_authorization_takes_precedence_over_x_api_key(nginx, redis, fake):
    r = post(nginx.url, "/v1/chat/completions", chat_body(), None,
             headers={"authorization": "Bearer " + SECRETS["k1"], "x-api-key": SECRETS["k_open"]})
    assert r.status_code == 200
    assert nginx.log_entry(r.headers["x-test-request-id"])["key_id"] == "k1"


def test_non_bearer_authorization_falls_back_to_x_api_key(nginx, redis, fake):
    r = post(nginx.url, "/v1/messages", chat_body(model="claude-sonnet-4-5"), None,
             headers={"authorization": "Basic dXNlcjpwYXNz", "x-api-key": SECRETS["k_open"]})
    assert r.status_code == 200, r.text
    assert nginx.log_entry(r.headers["x-test-request-id"])["key_id"] == "k_open"


def test_bearer_scheme_is_case_insensitive(nginx, redis, fake):
    # RFC 9110: the authentication scheme is case-insensitive
    r = post(nginx.url, "/v1/chat/completions", chat_body(), None,
             headers={"authorization": "bearer " + SECRETS["k1"]})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("max_tokens", [10**15, 10**17, 2**63 - 1])
def test_absurd_max_tokens_never_reach_the_provider(nginx, redis, fake, max_tokens):
    """An estimate larger than any cap (or than int64 nano-USD) is refused, not
    wrapped around into something small."""
    body = b'{"model":"gpt-4o-mini","max_tokens":%d,"messages":[]}' % max_tokens
    r = post(nginx.url, "/v1/chat/completions", body, SECRETS["k1"])
    assert r.status_code in (400, 402), "%d: %s" % (r.status_code, r.text)
    if r.status_code == 402:
        assert r.json()["error"]["code"] == "spend_limit_exceeded"
        assert (r.json()["error"]["scope"], r.json()["error"]["window"]) == ("key", "daily")
    redis_barrier(nginx)
    assert fake.requests() == []
    assert list(redis.scan_iter("*")) == []


def test_max_tokens_beyond_int64_is_invalid(nginx, redis, fake):
    body = b'{"model":"gpt-4o-mini","max_tokens":100000000000000000000000000000,"messages":[]}'
    r = post(nginx.url, "/v1/chat/completions", body, SECRETS["k1"])
    assert r.status_code in (400, 402), r.text
    assert fake.requests() == []


@pytest.mark.parametrize("body", [
    b'{"messages":[{"role":"user","content":"hi","model":"gpt-4o-mini"}]}',   # model only nested
    b'{"model":"gpt-4o-mini","messages":[]} trailing',                         # not one JSON value
    b'{"model":"gpt-4o-mini","max_tokens":"100"}',                              # max_tokens not an integer
    b'{"model":"gpt-4o-mini","max_tokens":1.5}',
    b'{"model":null}',
    b'{"model":"gpt-4o-mini","n":0}',                                           # n must be >= 1
], ids=["model-only-nested", "trailing-garbage", "max-tokens-string", "max-tokens-float", "model-null", "n-zero"])
def test_tricky_json_is_invalid_request(nginx, redis, fake, body):
    r = post(nginx.url, "/v1/chat/completions", body, SECRETS["k1"])
    assert r.status_code == 400, "%d: %s" % (r.status_code, r.text)
    assert r.json()["error"]["code"] == "invalid_request"
    assert fake.requests() == []


def test_model_field_anywhere_in_a_big_body(nginx, redis, fake):
    """The model comes after a large messages array: the whole body is parsed."""
    body = json.dumps({"messages": [{"role": "user", "content": "q" * 50000}], "max_tokens": 10,
                       "model": "claude-sonnet-4-5"}).encode()
    r = post(nginx.url, "/v1/messages", body, SECRETS["k1"])
    assert r.status_code == 200, r.text
    e = nginx.log_entry(r.headers["x-test-request-id"])
    assert e["reserved_usd"] == format_usd(estimate_nanos("claude-sonnet-4-5", len(body), 10))


def test_blocked_request_body_is_not_forwarded_even_if_large(nginx, redis, fake):
    redis.set(counter_key("acme", "spend", "key", "k1", "daily"), usd_nanos("2"))
    before = counter_state(redis)
    body = chat_body(content="w" * 200000)
    r = post(nginx.url, "/v1/chat/completions", body, SECRETS["k1"])
    assert r.status_code == 402
    redis_barrier(nginx)
    assert fake.requests() == []
    assert counter_state(redis) == before


@pytest.mark.nginx(location_extra="client_max_body_size 0;")
def test_absurd_content_length_is_not_allocated(nginx, redis, fake):
    """A Content-Length of a petabyte (no client_max_body_size to refuse it) must
    not be taken at its word: the copy of the body grows as bytes arrive. The
    client sends a few bytes and closes: NGINX's 400 for a body cut short, not
    a 500 from an allocation that failed."""
    import socket
    host, port = nginx.url.split("//")[1].split(":")
    before = counter_state(redis)
    logged = len(nginx.log_entries())
    head = ("POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %s\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000000000000000\r\n\r\n" % SECRETS["k1"])
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(head.encode() + b'{"model":"gpt-4o-mini","messages":[')
        s.shutdown(socket.SHUT_WR)
        answer = read_to_eof(s)
    assert not answer.startswith(b"HTTP/1.1 500"), answer[:300]
    entries = wait_until(lambda: nginx.log_entries()[logged:] or None, timeout=10)
    assert entries and entries[0]["status"] == "400", entries
    assert fake.requests() == []
    assert counter_state(redis) == before
