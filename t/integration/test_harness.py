"""The harness itself: the fake provider speaks the real formats and a plain NGINX
(no module) proxies to it. These run without the module."""

import json

import httpx

from support import chat_body, messages_body, to_yaml, format_usd, cost_nanos, Periods


def test_fake_openai_chat(fake):
    r = httpx.post(fake.url + "/v1/chat/completions", content=chat_body(),
                   headers={"x-fake-input-tokens": "1234", "x-fake-output-tokens": "56",
                            "x-fake-cached-tokens": "1000", "x-fake-reasoning-tokens": "7"})
    assert r.status_code == 200
    b = r.json()
    assert b["object"] == "chat.completion"
    assert b["id"].startswith("chatcmpl-")
    assert isinstance(b["created"], int)
    assert b["model"] == "gpt-4o-mini"
    assert b["choices"][0]["index"] == 0
    assert b["choices"][0]["message"]["role"] == "assistant"
    assert b["choices"][0]["finish_reason"] == "stop"
    u = b["usage"]
    assert (u["prompt_tokens"], u["completion_tokens"], u["total_tokens"]) == (1234, 56, 1290)
    assert u["prompt_tokens_details"]["cached_tokens"] == 1000
    assert u["completion_tokens_details"]["reasoning_tokens"] == 7


def test_fake_anthropic_messages(fake):
    r = httpx.post(fake.url + "/v1/messages", content=messages_body(),
                   headers={"x-fake-input-tokens": "11", "x-fake-output-tokens": "22",
                            "x-fake-cached-tokens": "33", "x-fake-cache-write-tokens": "44"})
    assert r.status_code == 200
    b = r.json()
    assert b["type"] == "message" and b["role"] == "assistant"
    assert b["content"] == [{"type": "text", "text": b["content"][0]["text"]}]
    assert b["model"] == "claude-sonnet-4-5"
    assert b["stop_reason"] == "end_turn"
    assert b["usage"]["input_tokens"] == 11
    assert b["usage"]["output_tokens"] == 22
    assert b["usage"]["cache_read_input_tokens"] == 33
    assert b["usage"]["cache_creation_input_tokens"] == 44


def test_fake_defaults_errors_and_no_usage(fake):
    b = httpx.post(fake.url + "/v1/chat/completions", content=chat_body()).json()
    assert (b["usage"]["prompt_tokens"], b["usage"]["completion_tokens"]) == (10, 20)

    r = httpx.post(fake.url + "/v1/chat/completions", content=chat_body(), headers={"x-fake-status": "500"})
    assert r.status_code == 500
    assert "usage" not in r.json() and r.json()["error"]["type"] == "server_error"

    r = httpx.post(fake.url + "/v1/messages", content=messages_body(), headers={"x-fake-status": "529"})
    assert r.status_code == 529
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "overloaded_error"

    r = httpx.post(fake.url + "/v1/messages", content=messages_body(), headers={"x-fake-usage": "none"})
    assert r.status_code == 200 and "usage" not in r.json()

    r = httpx.post(fake.url + "/v1/chat/completions", content=chat_body(), headers={"x-fake-gzip": "1"})
    assert r.headers["content-encoding"] == "gzip"
    assert r.json()["usage"]["total_tokens"] == 30  # httpx decodes gzip


def test_fake_streams(fake):
    body = chat_body(stream=True, stream_options={"include_usage": True})
    r = httpx.post(fake.url + "/v1/chat/completions", content=body, headers={"x-fake-input-tokens": "5"})
    assert r.headers["content-type"].startswith("text/event-stream")
    data = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    assert json.loads(data[-2])["usage"]["prompt_tokens"] == 5

    r = httpx.post(fake.url + "/v1/messages", content=messages_body(stream=True),
                   headers={"x-fake-output-tokens": "9"})
    events = [line[7:] for line in r.text.splitlines() if line.startswith("event: ")]
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert '"usage":{"output_tokens":9}' in r.text


def test_fake_records_and_resets(fake):
    httpx.post(fake.url + "/v1/chat/completions", content=b'{"model":"m"}', headers={"x-test": "1"})
    reqs = fake.requests()
    assert len(reqs) == 1
    assert reqs[0]["path"] == "/v1/chat/completions"
    assert reqs[0]["headers"]["x-test"] == "1"
    assert reqs[0]["body"] == '{"model":"m"}'
    fake.reset()
    assert fake.requests() == []


def test_plain_nginx_proxies_to_fake(nginx_factory, fake):
    """The NGINX fixture without the module: proves config template, start/stop and
    the access log work, independently of the module."""
    ng = nginx_factory(module=False)
    body = chat_body(content="y" * 100000)  # a body that goes to a temp file
    r = httpx.post(ng.url + "/v1/chat/completions", content=body,
                   headers={"authorization": "Bearer x", "x-fake-input-tokens": "3"})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] == 3
    rid = r.headers["x-test-request-id"]
    assert ng.log_entry(rid)["status"] == "200"
    reqs = fake.requests()
    assert len(reqs) == 1 and reqs[0]["body_len"] == len(body)
    assert reqs[0]["headers"]["authorization"] == "Bearer x"
    r = httpx.get(ng.url + "/free/v1/models")
    assert r.status_code == 200


def test_helpers():
    assert format_usd(10 * 10**9) == "10.00"
    assert format_usd(12345) == "0.000012345"
    assert format_usd(1_500_000_000) == "1.50"
    assert format_usd(0) == "0.00"
    assert cost_nanos((1, 1)) == 1 and cost_nanos((1_000_000, 1)) == 1 and cost_nanos((1_000_001, 1)) == 2
    assert to_yaml({"a": {"b": "0.15"}, "l": [{"id": "x", "n": 1}]}) == 'a:\n  b: 0.15\nl:\n  - id: x\n    n: 1'
    p = Periods()
    assert p.day_reset.endswith("T00:00:00Z") and p.month_reset.endswith("-01T00:00:00Z")
