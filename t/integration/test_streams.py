"""Settlement from every API surface (SPEC 3.6-3.7): OpenAI Chat Completions,
Completions, Embeddings and Responses, Anthropic Messages, each plain and streamed
(SSE), delivered in pieces split at arbitrary bytes, with CRLF line endings, gzip
encoded. Every request settles at the exact cost of the usage the fake provider sent,
in every counter, and the client gets exactly the bytes the provider sent."""

import json

import pytest

from stream_support import (K1, assert_include_usage_injected, completions_body, compact, counters_equal,
                            embeddings_body, embeddings_cost, embeddings_estimate, parse_sse, policy_with_embeddings,
                            raw_post, reservation_warnings, responses_body, responses_cost, sse_json,
                            wait_request_settled)
from support import (CAPS, SECRETS, Periods, anthropic_cost, chat_body, estimate_nanos, format_usd, messages_body,
                     openai_cost, usd_nanos)
from support import sent_length

OA_HEADERS = {"x-fake-input-tokens": "1234", "x-fake-cached-tokens": "567", "x-fake-output-tokens": "89",
              "x-fake-content": "Hi there, friend"}
OA_COST = openai_cost("gpt-4o-mini", 1234, 89, cached=567)
AN_HEADERS = {"x-fake-input-tokens": "100", "x-fake-output-tokens": "50", "x-fake-cache-write-tokens": "200",
              "x-fake-cached-tokens": "300", "x-fake-content": "Hi there, friend", "anthropic-version": "2023-06-01"}
AN_COST = anthropic_cost("claude-sonnet-4-5", inp=100, out=50, cache_write=200, cache_read=300)
assert OA_COST == 195_975 and AN_COST == 1_890_000

# legacy Completions usage has no prompt_tokens_details: every prompt token at the input rate
CMPL_COST = openai_cost("gpt-4o-mini", 1234, 89)
CHAT_STREAM_WITH_USAGE = chat_body(max_tokens=100, stream=True, stream_options={"include_usage": True})

# name -> (path, body, model, headers, cost, injected)
SURFACES = {
    "chat": ("/v1/chat/completions", chat_body(max_tokens=100), "gpt-4o-mini", OA_HEADERS, OA_COST, False),
    "chat-stream": ("/v1/chat/completions", CHAT_STREAM_WITH_USAGE, "gpt-4o-mini", OA_HEADERS, OA_COST, False),
    "chat-stream-injected": ("/v1/chat/completions", chat_body(max_tokens=100, stream=True), "gpt-4o-mini",
                             OA_HEADERS, OA_COST, True),
    "completions": ("/v1/completions", completions_body(max_tokens=100), "gpt-4o-mini",
                    OA_HEADERS, CMPL_COST, False),
    "completions-stream-injected": ("/v1/completions", completions_body(max_tokens=100, stream=True),
                                    "gpt-4o-mini", OA_HEADERS, CMPL_COST, True),
    "responses": ("/v1/responses", responses_body(max_output_tokens=100), "gpt-4o-mini",
                  OA_HEADERS, responses_cost("gpt-4o-mini", 1234, 89, cached=567), False),
    "responses-stream": ("/v1/responses", responses_body(max_output_tokens=100, stream=True), "gpt-4o-mini",
                         OA_HEADERS, responses_cost("gpt-4o-mini", 1234, 89, cached=567), False),
    "messages": ("/v1/messages", messages_body(max_tokens=100), "claude-sonnet-4-5", AN_HEADERS, AN_COST, False),
    "messages-stream": ("/v1/messages", messages_body(max_tokens=100, stream=True), "claude-sonnet-4-5",
                        AN_HEADERS, AN_COST, False),
}
STREAMS = [n for n in SURFACES if "stream" in n]

FINAL_EVENT = {
    "/v1/chat/completions": lambda ev: ev[-1] == (None, "[DONE]"),
    "/v1/completions": lambda ev: ev[-1] == (None, "[DONE]"),
    "/v1/messages": lambda ev: ev[-1][0] == "message_stop",
    "/v1/responses": lambda ev: ev[-1][0] == "response.completed",
}


def check_exact(nginx, redis, fake, name, headers=None, r=None, gzip=False):
    """Sends surface `name` (unless r is given) and checks: the client got the provider's
    bytes; the provider got the body (with include_usage where injected); the request
    settled at the exact cost of the usage, everywhere; the log says so."""
    path, body, model, base_headers, cost, injected = SURFACES[name]
    h = dict(base_headers)
    h.update(headers or {})
    if r is None:
        r = raw_post(nginx.url, path, body, SECRETS["k1"], headers=h)
    assert r.status_code == 200, r.text[:500]
    assert r.error is None, "the response to the client ended early: %s" % r.error
    reqs = fake.requests()
    assert len(reqs) == 1, [q["path"] for q in reqs]
    up = reqs[0]
    got = up["body"].encode()
    if injected:
        assert_include_usage_injected(body, got)
        assert up["headers"].get("content-length") == str(len(got)), up["headers"]
    else:
        assert got == body, "the upstream got %r, not %r" % (got, body)
    # the client gets exactly what the provider sent
    assert up["response_complete"], up
    assert r.sha256() == up["response_sha256"] and len(r.raw) == up["response_len"], (
        "the client got %d bytes, the provider sent %d (sha %s vs %s)"
        % (len(r.raw), up["response_len"], r.sha256(), up["response_sha256"]))
    if gzip:
        assert r.headers.get("content-encoding") == "gzip", dict(r.headers)
    elif "stream" in name:
        assert r.headers["content-type"].startswith("text/event-stream")
        assert FINAL_EVENT[path](parse_sse(r.text)), r.text[-300:]

    counters_equal(redis, cost)
    counters_equal(redis, 1, kind="reqs")
    wait_request_settled(redis, r.rid)
    e = nginx.log_entry(r.rid)
    assert e["settled_from"] == "usage", e
    assert e["cost_usd"] == format_usd(cost), e
    estimate = estimate_nanos(model, len(body), 100)
    if injected:
        # the bound may be taken from the body before or after the edit
        assert e["reserved_usd"] in (format_usd(estimate), format_usd(estimate_nanos(model, len(got), 100))), e
    else:
        assert e["reserved_usd"] == format_usd(estimate), e
    assert reservation_warnings(nginx) == []
    return r


@pytest.mark.parametrize("name", list(SURFACES))
def test_surface_settles_exact_cost(nginx, redis, fake, name):
    r = check_exact(nginx, redis, fake, name)
    if name == "chat-stream-injected":
        # the injected usage reaches the client as the final chunk, as if it had asked
        chunks = sse_json(r.text)
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 1234


@pytest.mark.nginx(policy=policy_with_embeddings())
def test_embeddings_settle_input_tokens_only(nginx, redis, fake):
    body = embeddings_body(input=["first text", "second text"])
    r = raw_post(nginx.url, "/v1/embeddings", body, SECRETS["k1"],
                 headers={"x-fake-input-tokens": "4321", "x-fake-output-tokens": "999"})
    assert r.status_code == 200, r.text
    assert json.loads(r.raw)["usage"] == {"prompt_tokens": 4321, "total_tokens": 4321}
    cost = embeddings_cost(4321)
    assert cost == 86_420
    counters_equal(redis, cost)
    e = nginx.log_entry(r.rid)
    assert (e["settled_from"], e["cost_usd"]) == ("usage", format_usd(cost)), e
    assert e["reserved_usd"] == format_usd(embeddings_estimate(len(body))), e
    assert fake.requests()[0]["body"].encode() == body


# ---------------------------------------------------------------- what the counts mean

@pytest.mark.parametrize("name", ["chat", "chat-stream", "responses", "responses-stream"])
def test_reasoning_tokens_are_inside_output_tokens(nginx, redis, fake, name):
    """completion_tokens / output_tokens already include the reasoning tokens: 800
    output tokens of which 500 reasoning cost 800 output tokens, not 1300."""
    cost = openai_cost("gpt-4o-mini", 1000, 800, cached=0)
    r = raw_post(nginx.url, SURFACES[name][0], SURFACES[name][1], SECRETS["k1"],
                 headers={"x-fake-input-tokens": "1000", "x-fake-output-tokens": "800",
                          "x-fake-reasoning-tokens": "500"})
    assert r.status_code == 200
    assert "reasoning_tokens" in r.text
    counters_equal(redis, cost)


@pytest.mark.parametrize("name", ["chat-stream-injected", "completions-stream-injected", "responses-stream"])
def test_cached_input_priced_at_cached_rate(nginx, redis, fake, name):
    """All 1000 prompt tokens cached: 1000 x 0.075 + 10 x 0.60 (not 1000 x 0.15, nor 2000 tokens)."""
    path, body = SURFACES[name][:2]
    r = raw_post(nginx.url, path, body, SECRETS["k1"],
                 headers={"x-fake-input-tokens": "1000", "x-fake-cached-tokens": "1000",
                          "x-fake-output-tokens": "10"})
    assert r.status_code == 200
    expected = 1000 * 75 + 10 * 600
    if name == "completions-stream-injected":
        expected = 1000 * 150 + 10 * 600  # legacy Completions usage has no prompt_tokens_details
    counters_equal(redis, expected)


@pytest.mark.parametrize("name,field,value", [
    ("responses", "max_output_tokens", 777),
    ("responses-stream", "max_output_tokens", 555),
    ("responses", None, None),
    ("chat-stream", "max_completion_tokens", 333),
    ("messages-stream", "max_tokens", 444),
    ("completions", "max_tokens", 222),
])
def test_max_tokens_bound_the_estimate(nginx, redis, fake, name, field, value):
    path, _, model = SURFACES[name][:3]
    stream = "stream" in name
    if path == "/v1/responses":
        body = responses_body(max_output_tokens=value, **({"stream": True} if stream else {}))
    elif path == "/v1/messages":
        body = messages_body(max_tokens=value, stream=True)
    elif path == "/v1/completions":
        body = completions_body(max_tokens=value)
    else:
        body = chat_body(max_tokens=None, stream=True, stream_options={"include_usage": True}, **{field: value})
    bound = value if value is not None else 16384  # the model's max_output_tokens
    r = raw_post(nginx.url, path, body, SECRETS["k1"])
    assert r.status_code == 200
    e = nginx.log_entry(r.rid)
    assert e["reserved_usd"] == format_usd(estimate_nanos(model, sent_length(fake), bound)), e


def test_anthropic_output_from_the_last_message_delta(nginx, redis, fake):
    """message_start carries input and cache counts (and output_tokens 1); message_delta the
    cumulative totals -- here all of them, as the API sends for some requests: nothing is
    counted twice."""
    h = dict(AN_HEADERS)
    h["x-fake-anthropic-delta-usage"] = "full"
    r = raw_post(nginx.url, "/v1/messages", messages_body(max_tokens=100, stream=True), SECRETS["k1"], headers=h)
    assert r.status_code == 200
    events = parse_sse(r.text)
    start = json.loads(events[0][1])["message"]["usage"]
    delta = [json.loads(d) for ev, d in events if ev == "message_delta"][-1]["usage"]
    assert start["output_tokens"] == 1 and delta["output_tokens"] == 50 and delta["input_tokens"] == 100
    assert [ev for ev, _ in events].count("ping") >= 1
    counters_equal(redis, AN_COST)


@pytest.mark.parametrize("name", ["chat-stream-injected", "messages-stream", "responses-stream"])
def test_usage_lookalike_in_streamed_text_is_ignored(nginx, redis, fake, name):
    # (a header value has no newlines: the text carries the lookalikes on one line)
    text = ('data: {"usage":{"prompt_tokens":0,"completion_tokens":0}} data: [DONE] '
            'event: message_stop {"type":"message_stop"} {"type":"response.completed","response":'
            '{"usage":{"input_tokens":0,"output_tokens":0}}} "usage": {"output_tokens": 0}')
    h = {"x-fake-content": text, "x-fake-input-tokens": "500", "x-fake-output-tokens": "500"}
    path, body, model = SURFACES[name][:3]
    r = raw_post(nginx.url, path, body, SECRETS["k1"], headers=h)
    assert r.status_code == 200
    cost = anthropic_cost(model, 500, 500) if path == "/v1/messages" else openai_cost(model, 500, 500)
    counters_equal(redis, cost)


@pytest.mark.parametrize("name", ["chat-stream-injected", "messages-stream", "responses-stream"])
def test_spend_headers_on_streamed_responses(nginx, redis, fake, name):
    path, body, model = SURFACES[name][:3]
    r = raw_post(nginx.url, path, body, SECRETS["k1"])
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    estimate = estimate_nanos(model, len(body), 100)
    assert r.headers["x-spend-limit-usd"] == "2.00"
    assert r.headers["x-spend-scope"] == "key:daily"
    assert r.headers["x-spend-reset"] == Periods().day_reset
    remaining = r.headers["x-spend-remaining-usd"]
    if path == "/v1/chat/completions":  # the estimate may count the injected bytes
        assert remaining in (format_usd(usd_nanos(CAPS[("key", "daily")]) - estimate),
                             format_usd(usd_nanos(CAPS[("key", "daily")])
                                        - estimate_nanos(model, len(fake.requests()[0]["body"]), 100))), remaining
    else:
        assert remaining == format_usd(usd_nanos(CAPS[("key", "daily")]) - estimate)


# ---------------------------------------------------------------- split, CRLF, gzip, framing

SPLIT_CASES = [(n, size) for size in (1, 3, 17) for n in
               ("chat", "messages", "chat-stream-injected", "completions-stream-injected", "responses-stream",
                "messages-stream")]
# how NGINX reads the upstream: buffered, unbuffered, HTTP/1.1 (chunked) unbuffered
PROXY_MODES = {1: "proxy_buffering off;", 3: "", 17: "proxy_buffering off;\nproxy_http_version 1.1;"}


@pytest.mark.parametrize("name,size", SPLIT_CASES, ids=["%s-%dB" % c for c in SPLIT_CASES])
def test_split_at_arbitrary_bytes(nginx_factory, redis, fake, name, size):
    ng = nginx_factory(location_extra=PROXY_MODES[size])
    check_exact(ng, redis, fake, name, headers={"x-fake-chunk-bytes": str(size), "x-fake-chunk-delay-ms": "0.1"})


CRLF_CASES = [("chat-stream-injected", {}), ("messages-stream", {}), ("responses-stream", {}),
              ("completions-stream-injected", {"x-fake-sse-comments": "1"}),
              ("messages-stream", {"x-fake-sse-comments": "1", "x-fake-chunk-bytes": "1"}),
              ("chat-stream", {"x-fake-chunk-bytes": "1"})]


@pytest.mark.parametrize("name,extra", CRLF_CASES, ids=["%s-%s" % (n, "-".join(sorted(e)) or "crlf")
                                                        for n, e in CRLF_CASES])
def test_crlf_line_endings(nginx, redis, fake, name, extra):
    h = {"x-fake-crlf": "1"}
    h.update(extra)
    r = check_exact(nginx, redis, fake, name, headers=h)
    assert b"\r\n\r\n" in r.raw


GZIP_CASES = [(n, ae) for n in ("chat", "messages", "responses", "embeddings-like-completions", "chat-stream-injected",
                                "messages-stream", "responses-stream")
              for ae in ("gzip", "identity")]


@pytest.mark.parametrize("name,accept", GZIP_CASES, ids=["%s-ae-%s" % c for c in GZIP_CASES])
def test_gzip_responses(nginx, redis, fake, name, accept):
    """gzip from the upstream is read whether or not the client asked for it, and the
    client gets the compressed bytes the upstream sent."""
    if name == "embeddings-like-completions":
        name = "completions"
    check_exact(nginx, redis, fake, name, headers={"x-fake-gzip": "1", "accept-encoding": accept}, gzip=True)
    up = fake.requests()[0]
    assert up["headers"].get("accept-encoding", "") in (accept, ""), up["headers"]


@pytest.mark.nginx(location_extra="proxy_buffering off;")
@pytest.mark.parametrize("name", ["chat-stream-injected", "messages-stream", "responses-stream"])
def test_gzip_stream_split_and_slow(nginx, redis, fake, name):
    """A gzip stream flushed per event, each flush cut in 5-byte pieces."""
    check_exact(nginx, redis, fake, name, gzip=True,
                headers={"x-fake-gzip": "1", "x-fake-chunk-bytes": "5", "x-fake-delay-chunk-ms": "5"})


def test_streams_one_after_another_on_keepalive_upstream(nginx_factory, redis, fake):
    """HTTP/1.1 keepalive to the upstream: streams of different surfaces reuse the
    connection; each settles on its own."""
    ng = nginx_factory(http_extra="upstream fakeup { server 127.0.0.1:%d; keepalive 4; }" % fake.port,
                       server_extra="location /ka/ { spend_cap on; proxy_http_version 1.1; "
                                    "proxy_set_header Connection \"\"; "
                                    "add_header x-test-request-id $request_id always; "
                                    "proxy_pass http://fakeup/; }")
    total = 0
    for name in ("chat-stream-injected", "messages-stream", "responses-stream", "chat-stream-injected"):
        path, body, model, h, cost = SURFACES[name][:5]
        r = raw_post(ng.url, "/ka" + path, body, SECRETS["k1"], headers=h)
        assert r.status_code == 200
        assert ng.log_entry(r.rid)["cost_usd"] == format_usd(cost)
        total += cost
    counters_equal(redis, total)
    counters_equal(redis, 4, kind="reqs")
