"""spend_cap_stream_usage inject|off (SPEC section 1): an OpenAI streaming request to
a path ending in /chat/completions or /completions without
stream_options.include_usage: true reaches the upstream with it set -- the rest of
the body byte-identical, Content-Length right --, so its final chunk carries usage;
nothing else is touched. With `off`, the body passes unchanged and such a stream
settles at its reservation."""

import json

import httpx
import pytest

from stream_support import (assert_include_usage_injected, completions_body, counters_equal, embeddings_body,
                            raw_post, responses_body, sse_json, wait_request_settled)
from support import SECRETS, chat_body, estimate_nanos, format_usd, messages_body, openai_cost

TOKENS = {"x-fake-input-tokens": "321", "x-fake-output-tokens": "123"}
COST = openai_cost("gpt-4o-mini", 321, 123)

PRETTY = ('{\n  "model": "gpt-4o-mini",\n  "messages": [\n    {"role": "user", "content": "Grüße, \\u00e9t\\u00e9 '
          '\U0001F600 \\"quoted\\" {braces} [brackets]"}\n  ],\n  "max_tokens": 100,\n  "stream": true\n}\n').encode()

INJECT = {
    "compact": ("/v1/chat/completions", chat_body(max_tokens=100, stream=True)),
    "pretty-unicode": ("/v1/chat/completions", PRETTY),
    "include-usage-false": ("/v1/chat/completions",
                            chat_body(max_tokens=100, stream=True, stream_options={"include_usage": False})),
    "stream-options-empty": ("/v1/chat/completions", chat_body(max_tokens=100, stream=True, stream_options={})),
    "stream-options-other": ("/v1/chat/completions",
                             chat_body(max_tokens=100, stream=True, stream_options={"include_obfuscation": False})),
    "stream-first": ("/v1/chat/completions",
                     b'{"stream":true,"model":"gpt-4o-mini","max_tokens":100,"messages":[{"role":"user","content":"x"}]}'),
    "completions": ("/v1/completions", completions_body(max_tokens=100, stream=True)),
    "prefixed-path": ("/openai/v1/chat/completions", chat_body(max_tokens=100, stream=True)),
}


@pytest.mark.parametrize("case", list(INJECT))
def test_include_usage_is_injected(nginx, redis, fake, case):
    path, body = INJECT[case]
    r = raw_post(nginx.url, path, body, SECRETS["k1"], headers=TOKENS)
    assert r.status_code == 200, r.text
    up = fake.requests()
    assert len(up) == 1
    got = up[0]["body"].encode()
    assert_include_usage_injected(body, got)
    assert up[0]["headers"].get("content-length") == str(len(got)) == str(up[0]["body_len"]), up[0]["headers"]
    assert "transfer-encoding" not in up[0]["headers"]
    chunks = sse_json(r.text)
    assert chunks[-1]["usage"]["prompt_tokens"] == 321
    counters_equal(redis, COST)
    e = nginx.log_entry(r.rid)
    assert (e["settled_from"], e["cost_usd"]) == ("usage", format_usd(COST)), e


def test_include_usage_injected_into_a_chunked_request_body(nginx, redis, fake):
    body = chat_body(max_tokens=100, stream=True, content="y" * 20000)

    def gen():
        for i in range(0, len(body), 4096):
            yield body[i:i + 4096]

    with httpx.Client(timeout=30) as c:
        r = c.post(nginx.url + "/v1/chat/completions", content=gen(),
                   headers=dict(TOKENS, authorization="Bearer " + SECRETS["k1"], **{"content-type": "application/json"}))
    assert r.status_code == 200
    up = fake.requests()[0]
    assert_include_usage_injected(body, up["body"].encode())
    assert up["headers"].get("content-length") == str(up["body_len"])
    counters_equal(redis, COST)


NOT_INJECTED = {
    "already-true": ("/v1/chat/completions",
                     chat_body(max_tokens=100, stream=True, stream_options={"include_usage": True}), "usage"),
    "already-true-pretty": ("/v1/chat/completions",
                            b'{ "model" : "gpt-4o-mini", "stream" : true, "max_tokens": 100,\n "stream_options" : '
                            b'{ "include_usage" : true }, "messages": [] }', "usage"),
    "not-streaming": ("/v1/chat/completions", chat_body(max_tokens=100), "usage"),
    "stream-false": ("/v1/chat/completions", chat_body(max_tokens=100, stream=False), "usage"),
    "messages": ("/v1/messages", messages_body(max_tokens=100, stream=True), "usage"),
    "responses": ("/v1/responses", responses_body(max_output_tokens=100, stream=True), "usage"),
    "embeddings-path": ("/v1/embeddings", embeddings_body(model="gpt-4o-mini", stream=True), "usage"),
}


@pytest.mark.parametrize("case", list(NOT_INJECTED))
def test_body_passes_unchanged(nginx, redis, fake, case):
    path, body, _ = NOT_INJECTED[case]
    r = raw_post(nginx.url, path, body, SECRETS["k1"], headers=TOKENS)
    assert r.status_code == 200, r.text
    up = fake.requests()[0]
    assert up["body"].encode() == body, "the upstream got %r instead of %r" % (up["body"], body)
    assert up["headers"].get("content-length") == str(len(body))
    wait_request_settled(redis, r.rid)
    e = nginx.log_entry(r.rid)
    assert e["settled_from"] == "usage", e


@pytest.mark.nginx(location_extra="spend_cap_stream_usage off;")
@pytest.mark.parametrize("path,body", [
    ("/v1/chat/completions", chat_body(max_tokens=100, stream=True)),
    ("/v1/completions", completions_body(max_tokens=100, stream=True)),
])
def test_stream_usage_off(nginx, redis, fake, path, body):
    r = raw_post(nginx.url, path, body, SECRETS["k1"], headers=TOKENS)
    assert r.status_code == 200
    up = fake.requests()[0]
    assert up["body"].encode() == body, "stream_usage off, yet the body changed: %r" % up["body"]
    assert "usage" not in r.text
    estimate = estimate_nanos("gpt-4o-mini", len(body), 100)
    wait_request_settled(redis, r.rid)
    counters_equal(redis, estimate)
    e = nginx.log_entry(r.rid)
    assert (e["settled_from"], e["cost_usd"]) == ("reservation", format_usd(estimate)), e

    # a client that asks for usage itself is still settled exactly
    fake.reset()
    body2 = chat_body(max_tokens=100, stream=True, stream_options={"include_usage": True})
    r = raw_post(nginx.url, "/v1/chat/completions", body2, SECRETS["k1"], headers=TOKENS)
    assert fake.requests()[0]["body"].encode() == body2
    counters_equal(redis, estimate + COST)
    assert nginx.log_entry(r.rid)["settled_from"] == "usage"


def test_stream_usage_is_per_location(nginx_factory, redis, fake):
    ng = nginx_factory(http_extra="spend_cap_stream_usage off;",
                       server_extra="""
location /inject/ {
    spend_cap on;
    spend_cap_stream_usage inject;
    add_header x-test-request-id $request_id always;
    proxy_pass http://127.0.0.1:%d/;
}""" % fake.port)
    body = chat_body(max_tokens=100, stream=True)
    raw_post(ng.url, "/v1/chat/completions", body, SECRETS["k1"], headers=TOKENS)
    raw_post(ng.url, "/inject/v1/chat/completions", body, SECRETS["k1"], headers=TOKENS)
    up = fake.requests()
    assert up[0]["body"].encode() == body  # http-level off inherited
    assert_include_usage_injected(body, up[1]["body"].encode())


@pytest.mark.parametrize("value", ["inject", "off"])
def test_stream_usage_directive_accepts(nginx_factory, value):
    ng = nginx_factory(start=False, location_extra="spend_cap_stream_usage %s;" % value)
    p = ng.test_config()
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("value", ["bogus", "on"])
def test_stream_usage_directive_values(nginx_factory, value):
    ng = nginx_factory(start=False, location_extra="spend_cap_stream_usage %s;" % value)
    p = ng.test_config()
    ng.log_checked = True  # [emerg] is expected
    assert p.returncode != 0, p.stderr
    assert 'invalid value "%s"' % value in p.stderr and "nginx.conf:" in p.stderr, p.stderr
