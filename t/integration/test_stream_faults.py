"""Streams that go wrong (SPEC 3.6-3.7): cut before their final event, cut mid-event,
an error event mid-stream, malformed usage, a client that leaves mid-stream, an
upstream error status. A 2xx answer is settled from its usage only when complete
(`data: [DONE]`, Anthropic message_stop, Responses response.completed); otherwise at
the reservation -- never below the usage seen -- with one warn line saying why, once.
Also: the memory a request costs stays bounded for a stream of tens of MB."""

import hashlib
import socket
import time

import pytest

from stream_support import (assert_one_reservation_warning, completions_body, counters_equal, parse_sse,
                            raw_post, raw_socket_request, reservation_warnings, reset_peak_rss, responses_body,
                            status_kib, wait_request_settled, worker_pids)
from support import (SECRETS, anthropic_cost, chat_body, estimate_nanos, format_usd, messages_body, openai_cost,
                     wait_until)
from support import sent_length

CHAT_U = chat_body(max_tokens=100, stream=True, stream_options={"include_usage": True})
CHAT_INJ = chat_body(max_tokens=100, stream=True)
MSG = messages_body(max_tokens=100, stream=True)
RESP = responses_body(max_output_tokens=100, stream=True)

# name -> (path, body, model)
STREAMS = {
    "chat": ("/v1/chat/completions", CHAT_U, "gpt-4o-mini"),
    "completions": ("/v1/completions", completions_body(max_tokens=100, stream=True,
                                                        stream_options={"include_usage": True}), "gpt-4o-mini"),
    "messages": ("/v1/messages", MSG, "claude-sonnet-4-5"),
    "responses": ("/v1/responses", RESP, "gpt-4o-mini"),
}
TOKENS = {"x-fake-input-tokens": "40", "x-fake-output-tokens": "60", "x-fake-content": "one two three four five"}


def usage_cost(name, inp=40, out=60):
    model = STREAMS[name][2]
    return anthropic_cost(model, inp, out) if model.startswith("claude") else openai_cost(model, inp, out)


def estimate(name, max_tokens=100):
    path, body, model = STREAMS[name]
    return estimate_nanos(model, len(body), max_tokens)


def check_reservation(nginx, redis, r, name, expected=None, warn=True):
    expected = estimate(name) if expected is None else expected
    wait_request_settled(redis, r.rid)
    counters_equal(redis, expected)
    counters_equal(redis, 1, kind="reqs")
    e = nginx.log_entry(r.rid)
    assert e["cost_usd"] == format_usd(expected), e
    if expected == estimate(name):
        assert e["settled_from"] == "reservation", e
    if warn:
        line = assert_one_reservation_warning(nginx)
        return e, line
    return e, None


# ---------------------------------------------------------------- cut streams

FRAMING = {"close": "", "chunked": "proxy_http_version 1.1;"}


@pytest.mark.parametrize("framing", list(FRAMING))
@pytest.mark.parametrize("name", list(STREAMS))
def test_stream_cut_before_its_final_event(nginx_factory, redis, fake, name, framing):
    """The provider closes the connection right before [DONE] / message_stop /
    response.completed: the OpenAI and Anthropic usage was already seen, but the
    stream is not complete."""
    ng = nginx_factory(location_extra=FRAMING[framing])
    path, body, model = STREAMS[name]
    h = dict(TOKENS, **{"x-fake-truncate": "1"})
    r = raw_post(ng.url, path, body, SECRETS["k1"], headers=h)
    assert r.status_code == 200
    assert b"[DONE]" not in r.raw and b"message_stop" not in r.raw and b"response.completed" not in r.raw
    assert usage_cost(name) < estimate(name)
    check_reservation(ng, redis, r, name)


@pytest.mark.parametrize("name", ["chat", "messages"])
def test_cut_stream_never_settles_below_the_usage_seen(nginx, redis, fake, name):
    """Usage already seen in a cut stream that is larger than the reservation (an upstream
    that ignored max_tokens): settled at the usage, not at the smaller reservation."""
    path, body, model = STREAMS[name]
    h = dict(TOKENS, **{"x-fake-truncate": "1", "x-fake-output-tokens": "200000"})
    r = raw_post(nginx.url, path, body, SECRETS["k1"], headers=h)
    assert r.status_code == 200
    seen = usage_cost(name, out=200000)
    assert seen > estimate(name)
    check_reservation(nginx, redis, r, name, expected=seen)


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.97])
@pytest.mark.parametrize("name", list(STREAMS))
def test_stream_cut_mid_event(nginx, redis, fake, name, cut):
    path, body, model = STREAMS[name]
    # the complete stream's length, from the provider
    full = raw_post(fake.url, path, body, headers=TOKENS)
    fake.reset()
    n = int(len(full.raw) * cut)
    r = raw_post(nginx.url, path, body, SECRETS["k1"], headers=dict(TOKENS, **{"x-fake-truncate-bytes": str(n)}))
    assert r.status_code == 200 and len(r.raw) == n
    check_reservation(nginx, redis, r, name)


@pytest.mark.parametrize("name", list(STREAMS))
def test_error_event_mid_stream(nginx, redis, fake, name):
    path, body, model = STREAMS[name]
    r = raw_post(nginx.url, path, body, SECRETS["k1"], headers=dict(TOKENS, **{"x-fake-stream-error": "1"}))
    assert r.status_code == 200
    assert b"error" in r.raw.splitlines()[-3] or b"error" in r.raw[-300:]
    check_reservation(nginx, redis, r, name)


@pytest.mark.nginx(location_extra="proxy_buffering off;")
@pytest.mark.parametrize("name", ["chat", "messages", "responses"])
def test_gzip_stream_cut(nginx, redis, fake, name):
    path, body, model = STREAMS[name]
    r = raw_post(nginx.url, path, body, SECRETS["k1"],
                 headers=dict(TOKENS, **{"x-fake-truncate": "1", "x-fake-gzip": "1", "x-fake-chunk-bytes": "7"}))
    assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
    check_reservation(nginx, redis, r, name)


# ---------------------------------------------------------------- malformed or missing usage

MALFORMED = [("chat-plain", "/v1/chat/completions", chat_body(max_tokens=100), "gpt-4o-mini"),
             ("chat", *STREAMS["chat"]), ("messages", *STREAMS["messages"]), ("responses", *STREAMS["responses"]),
             ("messages-plain", "/v1/messages", messages_body(max_tokens=100), "claude-sonnet-4-5")]


@pytest.mark.parametrize("case,path,body,model", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_usage_settles_at_the_reservation(nginx, redis, fake, case, path, body, model):
    r = raw_post(nginx.url, path, body, SECRETS["k1"], headers=dict(TOKENS, **{"x-fake-usage": "malformed"}))
    assert r.status_code == 200 and b'"ten"' in r.raw
    expected = estimate_nanos(model, sent_length(fake, 0), 100)  # (stream_options added when injected)
    wait_request_settled(redis, r.rid)
    counters_equal(redis, expected)
    e = nginx.log_entry(r.rid)
    assert (e["settled_from"], e["cost_usd"]) == ("reservation", format_usd(expected)), e
    assert_one_reservation_warning(nginx)


@pytest.mark.parametrize("name", ["chat", "messages", "responses", "completions"])
def test_complete_stream_without_usage_settles_at_the_reservation(nginx, redis, fake, name):
    path, body, model = STREAMS[name]
    r = raw_post(nginx.url, path, body, SECRETS["k1"], headers=dict(TOKENS, **{"x-fake-usage": "none"}))
    assert r.status_code == 200 and b"input_tokens" not in r.raw and b"prompt_tokens" not in r.raw
    check_reservation(nginx, redis, r, name, warn=False)


@pytest.mark.parametrize("status", [500, 529, 429])
@pytest.mark.parametrize("name", ["chat", "messages", "responses"])
def test_upstream_error_status_on_a_streaming_request_costs_nothing(nginx, redis, fake, name, status):
    path, body, model = STREAMS[name]
    r = raw_post(nginx.url, path, body, SECRETS["k1"], headers=dict(TOKENS, **{"x-fake-status": str(status)}))
    assert r.status_code == status
    wait_request_settled(redis, r.rid)
    counters_equal(redis, 0)
    counters_equal(redis, 1, kind="reqs")
    assert nginx.log_entry(r.rid)["cost_usd"] == "0.00"


# ---------------------------------------------------------------- the client leaves

ABORT_BODIES = {"chat-injected": ("/v1/chat/completions", CHAT_INJ, "gpt-4o-mini"),
                "messages": STREAMS["messages"], "responses": STREAMS["responses"]}


@pytest.mark.parametrize("buffering", ["on", "off"])
@pytest.mark.parametrize("name", list(ABORT_BODIES))
def test_client_disconnects_mid_stream(nginx_factory, redis, fake, name, buffering):
    ng = nginx_factory(location_extra="proxy_buffering %s;" % buffering)
    path, body, model = ABORT_BODIES[name]
    words = " ".join("w%d" % i for i in range(12))
    s = raw_socket_request(ng.port, path, body, {
        "authorization": "Bearer " + SECRETS["k1"], "content-type": "application/json",
        "x-fake-delay-chunk-ms": "150", "x-fake-content": words,
        # enough bytes per event that a buffered NGINX forwards events early
        "x-fake-delta-bytes": "3" if buffering == "off" else "1", "x-fake-sse-comments": "1"})
    got = b""
    deadline = time.monotonic() + 10
    s.settimeout(10)
    while b"data:" not in got and time.monotonic() < deadline:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    assert got.startswith(b"HTTP/1.1 200"), got[:300]
    rid = [line.split(b":", 1)[1].strip().decode() for line in got.split(b"\r\n")
           if line.lower().startswith(b"x-test-request-id:")][0]
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()

    expected = estimate_nanos(model, sent_length(fake, 0), 100)  # (stream_options added when injected)
    wait_request_settled(redis, rid, timeout=8)
    counters_equal(redis, expected)
    e = ng.log_entry(rid, timeout=5)
    assert (e["settled_from"], e["cost_usd"]) == ("reservation", format_usd(expected)), e
    assert_one_reservation_warning(ng)
    # the provider's stream was cut short by NGINX, not completed
    assert wait_until(lambda: fake.requests()[0].get("response_complete") is False
                      and fake.requests()[0].get("response_aborted"), timeout=6), fake.requests()[0]
    # NGINX keeps serving
    r = raw_post(ng.url, "/v1/chat/completions", chat_body(), SECRETS["k1"])
    assert r.status_code == 200


# ---------------------------------------------------------------- bounded memory

def worker_peaks(ng):
    return {pid: status_kib(pid, "VmHWM") for pid in worker_pids(ng)}


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
def test_twenty_megabyte_stream_settles_exactly_in_bounded_memory(nginx, redis, fake, encoding):
    """A ~20 MB stream (2,500 events of 8 KB, usage in the last chunk) settles at its exact
    cost, and no worker's peak RSS (VmHWM, reset before) grows by more than 6 MB."""
    pids = worker_pids(nginx)
    assert len(pids) == 2, pids
    # warm up both workers (first request allocations, Redis connections)
    for _ in range(4):
        assert raw_post(nginx.url, "/v1/chat/completions", CHAT_INJ, SECRETS["k1"]).status_code == 200
    counters_equal(redis, 4 * openai_cost("gpt-4o-mini", 10, 20))
    resettable = all(reset_peak_rss(p) for p in pids)
    before = worker_peaks(nginx) if resettable else {p: status_kib(p, "VmRSS") for p in pids}

    h = {"x-fake-content-bytes": str(20_000_000), "x-fake-delta-bytes": "8000",
         "x-fake-input-tokens": "5000", "x-fake-output-tokens": "1000000"}
    if encoding == "gzip":
        h["x-fake-gzip"] = "1"
    # the model allows 16384 output tokens; an upstream reporting more is still settled at its usage
    body = chat_body(max_tokens=16384, stream=True)
    r = raw_post(nginx.url, "/v1/chat/completions", body, SECRETS["k1"], headers=h, timeout=90)
    assert r.status_code == 200 and r.error is None
    up = fake.requests()[-1]
    assert len(r.raw) == up["response_len"] and hashlib.sha256(r.raw).hexdigest() == up["response_sha256"]
    if encoding == "identity":
        assert len(r.raw) > 20_000_000
    else:
        assert r.headers["content-encoding"] == "gzip"
    cost = openai_cost("gpt-4o-mini", 5000, 1_000_000)
    counters_equal(redis, 4 * openai_cost("gpt-4o-mini", 10, 20) + cost, timeout=8)
    e = nginx.log_entry(r.rid)
    assert (e["settled_from"], e["cost_usd"]) == ("usage", format_usd(cost)), e

    after = worker_peaks(nginx) if resettable else {p: status_kib(p, "VmRSS") for p in pids}
    growth = {p: after[p] - before[p] for p in pids}
    assert max(growth.values()) <= 6 * 1024, (
        "a worker's %s grew by %s KiB for one 20 MB stream (before %s, after %s)"
        % ("VmHWM" if resettable else "VmRSS", growth, before, after))
