"""The fake provider's streams and delivery controls, checked directly (no NGINX):
the formats the streaming tests rely on, and that each control does what it says."""

import gzip
import json
import socket
import time
import zlib

import httpx
import pytest

from stream_support import completions_body, parse_sse, raw_post, responses_body, sse_json
from support import chat_body, messages_body, read_to_eof


def test_openai_stream_usage_only_when_asked(fake):
    r = raw_post(fake.url, "/v1/chat/completions", chat_body(stream=True), headers={"x-fake-content": "a b"})
    ev = parse_sse(r.text)
    assert ev[-1] == (None, "[DONE]")
    chunks = [json.loads(d) for _, d in ev[:-1]]
    assert all("usage" not in c for c in chunks), "usage without stream_options.include_usage"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"

    body = chat_body(stream=True, stream_options={"include_usage": True})
    r = raw_post(fake.url, "/v1/chat/completions", body, headers={"x-fake-input-tokens": "7"})
    chunks = sse_json(r.text)
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 7
    assert r.text.endswith("data: [DONE]\n\n")
    assert '"object":"chat.completion.chunk"' in r.text  # compact JSON, like the API

    body = chat_body(stream=True, stream_options={"include_usage": False})
    assert "usage" not in raw_post(fake.url, "/v1/chat/completions", body).text


def test_completions_stream(fake):
    r = raw_post(fake.url, "/v1/completions", completions_body(stream=True, stream_options={"include_usage": True}),
                 headers={"x-fake-output-tokens": "3"})
    chunks = sse_json(r.text)
    assert all(c["object"] == "text_completion" for c in chunks)
    assert chunks[-1]["usage"] == {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}
    assert parse_sse(r.text)[-1] == (None, "[DONE]")


def test_responses_stream(fake):
    r = raw_post(fake.url, "/v1/responses", responses_body(stream=True),
                 headers={"x-fake-content": "Hi there", "x-fake-cached-tokens": "4", "x-fake-reasoning-tokens": "2"})
    ev = parse_sse(r.text)
    names = [e for e, _ in ev]
    assert names[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert names[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert names.count("response.output_text.delta") == 2
    data = [json.loads(d) for _, d in ev]
    assert [d["sequence_number"] for d in data] == list(range(len(data)))
    assert all(d["type"] == e for e, d in zip(names, data))
    assert data[0]["response"]["usage"] is None
    u = data[-1]["response"]["usage"]
    assert u["input_tokens_details"]["cached_tokens"] == 4 and u["output_tokens_details"]["reasoning_tokens"] == 2
    assert "[DONE]" not in r.text


def test_anthropic_stream_shape(fake):
    r = raw_post(fake.url, "/v1/messages", messages_body(stream=True), headers={"x-fake-output-tokens": "9"})
    ev = parse_sse(r.text)
    names = [e for e, _ in ev]
    assert names[0] == "message_start" and names[-1] == "message_stop" and names[-2] == "message_delta"
    assert names.count("ping") == 2
    assert all(json.loads(d)["type"] == e for e, d in ev)
    assert json.loads(ev[0][1])["message"]["usage"]["output_tokens"] == 1
    assert json.loads(ev[-2][1])["usage"] == {"output_tokens": 9}


@pytest.mark.parametrize("path,body,last", [
    ("/v1/chat/completions", chat_body(stream=True, stream_options={"include_usage": True}), "usage"),
    ("/v1/messages", messages_body(stream=True), "message_delta"),
    ("/v1/responses", responses_body(stream=True), "response.output_item.done"),
])
def test_truncate_stops_before_the_final_event(fake, path, body, last):
    # HTTP/1.1: a chunked body that never ends -> httpx raises; read it raw over HTTP/1.0
    raw = http10(fake.port, path, body, {"x-fake-truncate": "1"})
    ev = parse_sse(raw.decode())
    assert ev[-1][0] == last or last in ev[-1][1]
    assert "[DONE]" not in raw.decode() and "message_stop" not in raw.decode()
    assert '"response.completed"' not in raw.decode()
    assert fake.requests()[-1]["response_complete"] is False


def http10(port, path, body, headers):
    """POST over HTTP/1.0 (as NGINX proxies by default); returns the body bytes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = "POST %s HTTP/1.0\r\nContent-Length: %d\r\n%s\r\n" % (
        path, len(body), "".join("%s: %s\r\n" % kv for kv in headers.items()))
    s.sendall(head.encode() + body)
    data = read_to_eof(s)
    s.close()
    return data.split(b"\r\n\r\n", 1)[1]


def test_truncate_bytes_and_stream_error(fake):
    raw = http10(fake.port, "/v1/messages", messages_body(stream=True), {"x-fake-truncate-bytes": "100"})
    assert len(raw) == 100
    raw = http10(fake.port, "/v1/messages", messages_body(stream=True), {"x-fake-stream-error": "1"})
    ev = parse_sse(raw.decode())
    assert ev[-1][0] == "error" and "message_stop" not in raw.decode()
    raw = http10(fake.port, "/v1/chat/completions", chat_body(stream=True), {"x-fake-stream-error": "1"})
    assert json.loads(parse_sse(raw.decode())[-1][1])["error"]["type"] == "server_error"
    assert b"[DONE]" not in raw


def test_crlf_and_comments(fake):
    r = raw_post(fake.url, "/v1/messages", messages_body(stream=True),
                 headers={"x-fake-crlf": "1", "x-fake-sse-comments": "1"})
    assert "\n" not in r.text.replace("\r\n", "")
    assert r.text.count(": keep-alive\r\n") == len(parse_sse(r.text))
    assert parse_sse(r.text)[-1][0] == "message_stop"


def test_gzip_stream_flushed_per_event(fake):
    body = chat_body(stream=True, stream_options={"include_usage": True})
    r = raw_post(fake.url, "/v1/chat/completions", body, headers={"x-fake-gzip": "1", "x-fake-content": "a b c"})
    assert r.headers["content-encoding"] == "gzip"
    text = gzip.decompress(r.raw).decode()
    assert text.endswith("data: [DONE]\n\n")
    # every event can be inflated as soon as it arrived: Z_SYNC_FLUSH boundaries
    # (a sync flush ends with an empty stored block: 00 00 ff ff)
    assert r.raw.count(b"\x00\x00\xff\xff") >= len(parse_sse(text))
    cut = r.raw.index(b"\x00\x00\xff\xff") + 4
    first = zlib.decompressobj(31).decompress(r.raw[:cut])
    assert first.endswith(b"\n\n") and first.count(b"\n\n") == 1, first
    assert fake.requests()[-1]["response_len"] == len(r.raw)


def test_chunk_bytes_splits_and_slows(fake):
    body = chat_body(stream=True)
    t0 = time.monotonic()
    r = raw_post(fake.url, "/v1/chat/completions", body, headers={"x-fake-chunk-bytes": "50",
                                                                  "x-fake-chunk-delay-ms": "5"})
    n = len(r.raw)
    assert time.monotonic() - t0 >= (n // 50 - 1) * 0.004
    assert parse_sse(r.text)[-1] == (None, "[DONE]")
    # a plain body too, and byte-exact
    with httpx.Client() as c:
        with c.stream("POST", fake.url + "/v1/chat/completions", content=chat_body(),
                      headers={"x-fake-chunk-bytes": "7"}) as resp:
            pieces = list(resp.iter_raw())
    assert json.loads(b"".join(pieces))["usage"]["total_tokens"] == 30
    assert len(pieces) > 3


def test_delta_bytes_and_content_bytes(fake):
    r = raw_post(fake.url, "/v1/chat/completions", chat_body(stream=True),
                 headers={"x-fake-content-bytes": "10000", "x-fake-delta-bytes": "1000"})
    chunks = sse_json(r.text)
    texts = [c["choices"][0]["delta"].get("content") for c in chunks[1:-1]]
    assert len(texts) == 10 and all(len(t) == 1000 for t in texts)


def test_malformed_usage(fake):
    r = raw_post(fake.url, "/v1/chat/completions", chat_body(), headers={"x-fake-usage": "malformed"})
    assert json.loads(r.raw)["usage"]["prompt_tokens"] == "ten"
    r = raw_post(fake.url, "/v1/messages", messages_body(stream=True), headers={"x-fake-usage": "malformed"})
    assert json.loads(parse_sse(r.text)[-2][1])["usage"]["output_tokens"] == "twenty"


def test_client_abort_is_recorded(fake):
    s = socket.create_connection(("127.0.0.1", fake.port), timeout=10)
    body = chat_body(stream=True)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: %d\r\nx-fake-delay-chunk-ms: 100\r\n"
              b"x-fake-content: a b c d e f g h\r\n\r\n%s" % (len(body), body))
    assert b"data:" in s.recv(65536) or b"data:" in s.recv(65536)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()
    entry = None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        entry = fake.requests()[-1]
        if entry.get("response_aborted"):
            break
        time.sleep(0.1)
    assert entry.get("response_aborted") and entry["response_complete"] is False, entry
