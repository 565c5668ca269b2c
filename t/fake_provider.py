#!/usr/bin/env python3
"""A fake LLM provider speaking the real OpenAI and Anthropic wire formats.

Standard library only. Used by the integration tests and by scripts/run.sh as the
default upstream:

    /usr/bin/python3 t/fake_provider.py --host 127.0.0.1 --port 9000

Endpoints (POST):
    /v1/chat/completions   OpenAI Chat Completions (JSON, or SSE with "stream": true)
    /v1/completions        OpenAI legacy Completions
    /v1/embeddings         OpenAI Embeddings
    /v1/responses          OpenAI Responses
    /v1/messages           Anthropic Messages (JSON, or SSE with "stream": true)

Test control, by request header (NGINX forwards them):
    x-fake-input-tokens        prompt tokens (OpenAI: includes cached) / Anthropic input_tokens (default 10)
    x-fake-output-tokens       completion / output tokens (default 20)
    x-fake-cached-tokens       OpenAI cached prompt tokens / Anthropic cache_read_input_tokens (default 0)
    x-fake-cache-write-tokens  Anthropic cache_creation_input_tokens (default 0)
    x-fake-reasoning-tokens    OpenAI completion_tokens_details.reasoning_tokens (default 0)
    x-fake-status              HTTP status; non-2xx answers a real-shaped provider error without usage
    x-fake-usage: none         a 2xx body without usage
    x-fake-delay-ms            wait this long before answering
    x-fake-gzip: 1             gzip the response body (Content-Encoding: gzip; not for streams)
    x-fake-content             the assistant's text (default "Hello from the fake provider.")
    x-fake-content-bytes       make the assistant's text this many bytes long (a long answer)
    x-fake-truncate: 1         send only the first half of a JSON body (a broken 2xx answer)
    x-fake-delay-chunk-ms      in a stream ("stream": true), wait this long before each event

Test introspection, on the same port:
    GET    /__fake/requests    JSON list of every request received (method, path, headers, body)
    DELETE /__fake/requests    forget them
    GET    /__fake/health      200 "ok"
"""

import argparse
import gzip
import hashlib
import json
import resource
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_INPUT_TOKENS = 10
DEFAULT_OUTPUT_TOKENS = 20

_lock = threading.Lock()
_requests = []

REASONS = {
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 408: "Request Timeout", 409: "Conflict", 413: "Payload Too Large",
    422: "Unprocessable Entity", 429: "Too Many Requests", 500: "Internal Server Error",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout", 529: "Overloaded",
}


def _int_header(headers, name, default):
    value = headers.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        return int(value.strip())
    except ValueError:
        return default


def _openai_error_type(status):
    if status == 401:
        return "invalid_request_error", "invalid_api_key"
    if status == 429:
        return "requests", "rate_limit_exceeded"
    if status >= 500:
        return "server_error", None
    return "invalid_request_error", None


def _anthropic_error_type(status):
    return {
        400: "invalid_request_error",
        401: "authentication_error",
        402: "billing_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        500: "api_error",
        529: "overloaded_error",
    }.get(status, "api_error" if status >= 500 else "invalid_request_error")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-provider/1.0"

    def version_string(self):
        return self.server_version

    def log_message(self, fmt, *args):  # quiet unless --verbose
        if self.server.verbose:
            sys.stderr.write("fake_provider: " + (fmt % args) + "\n")

    # ---- plumbing -------------------------------------------------------
    def _read_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            chunks = []
            while True:
                line = self.rfile.readline()
                if not line:
                    break
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # trailers up to the empty line
                    while True:
                        t = self.rfile.readline()
                        if not t or t in (b"\r\n", b"\n"):
                            break
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after the chunk
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status, body, content_type="application/json", extra_headers=None):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        headers = dict(extra_headers or {})
        if self.headers.get("x-fake-truncate", "").strip() in ("1", "true", "yes"):
            body = body[:len(body) // 2]
        if self.headers.get("x-fake-gzip", "").strip() in ("1", "true", "yes"):
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        self.send_response(status, REASONS.get(status))
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _record(self, body):
        entry = {
            "time": time.time(),
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body.decode("utf-8", "replace"),
            "body_len": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
        }
        with _lock:
            _requests.append(entry)

    # ---- introspection --------------------------------------------------
    def _fake_api(self):
        path = self.path.split("?", 1)[0]
        if path == "/__fake/health":
            self._send(200, "ok", "text/plain")
        elif path == "/__fake/requests" and self.command == "GET":
            with _lock:
                data = list(_requests)
            self._send(200, data)
        elif path == "/__fake/requests" and self.command == "DELETE":
            with _lock:
                n = len(_requests)
                _requests.clear()
            self._send(200, {"deleted": n})
        else:
            self._send(404, {"error": "no such fake endpoint"})

    # ---- verbs ----------------------------------------------------------
    def do_GET(self):
        if self.path.startswith("/__fake/"):
            return self._fake_api()
        self._record(b"")
        if self.path.split("?", 1)[0] == "/v1/models":
            return self._send(200, {"object": "list", "data": [
                {"id": "gpt-4o-mini", "object": "model", "created": 1721172741, "owned_by": "system"}]})
        self._not_found()

    def do_DELETE(self):
        if self.path.startswith("/__fake/"):
            return self._fake_api()
        self._record(self._read_body())
        self._not_found()

    def do_POST(self):
        body = self._read_body()
        if self.path.startswith("/__fake/"):
            return self._fake_api()
        self._record(body)

        delay = _int_header(self.headers, "x-fake-delay-ms", 0)
        if delay > 0:
            time.sleep(delay / 1000.0)

        path = self.path.split("?", 1)[0]
        anthropic = path.endswith("/v1/messages")
        try:
            req = json.loads(body.decode("utf-8")) if body else {}
            if not isinstance(req, dict):
                raise ValueError("not an object")
        except (ValueError, UnicodeDecodeError):
            req = None

        status = _int_header(self.headers, "x-fake-status", 200)
        if status < 200 or status >= 300:
            return self._error(status, anthropic, "fake provider error (x-fake-status)")
        if req is None:
            return self._error(400, anthropic, "We could not parse the JSON body of your request.")

        handlers = {
            "/v1/chat/completions": self._chat,
            "/v1/completions": self._completions,
            "/v1/embeddings": self._embeddings,
            "/v1/responses": self._responses,
            "/v1/messages": self._messages,
        }
        for suffix, fn in handlers.items():
            if path.endswith(suffix):
                return fn(req, status)
        self._not_found()

    def _not_found(self):
        anthropic = self.path.split("?", 1)[0].endswith("/v1/messages")
        self._error(404, anthropic, "Unknown request URL: %s %s" % (self.command, self.path))

    def _error(self, status, anthropic, message):
        if anthropic:
            body = {"type": "error",
                    "error": {"type": _anthropic_error_type(status), "message": message},
                    "request_id": "req_" + uuid.uuid4().hex[:24]}
        else:
            etype, code = _openai_error_type(status)
            body = {"error": {"message": message, "type": etype, "param": None, "code": code}}
        headers = {}
        if status in (429, 503, 529):
            headers["Retry-After"] = "1"
        self._send(status, body, extra_headers=headers)

    # ---- token numbers --------------------------------------------------
    def _tokens(self):
        h = self.headers
        return {
            "input": _int_header(h, "x-fake-input-tokens", DEFAULT_INPUT_TOKENS),
            "output": _int_header(h, "x-fake-output-tokens", DEFAULT_OUTPUT_TOKENS),
            "cached": _int_header(h, "x-fake-cached-tokens", 0),
            "cache_write": _int_header(h, "x-fake-cache-write-tokens", 0),
            "reasoning": _int_header(h, "x-fake-reasoning-tokens", 0),
        }

    def _text(self):
        n = _int_header(self.headers, "x-fake-content-bytes", 0)
        if n > 0:
            unit = "All work and no play makes Jack a dull boy. "
            return (unit * (n // len(unit) + 1))[:n]
        return self.headers.get("x-fake-content", "Hello from the fake provider.")

    def _with_usage(self):
        return self.headers.get("x-fake-usage", "").strip().lower() != "none"

    # ---- OpenAI ---------------------------------------------------------
    def _openai_usage(self, t):
        return {
            "prompt_tokens": t["input"],
            "completion_tokens": t["output"],
            "total_tokens": t["input"] + t["output"],
            "prompt_tokens_details": {"cached_tokens": t["cached"], "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": t["reasoning"], "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        }

    def _chat(self, req, status):
        t = self._tokens()
        model = req.get("model") or "gpt-4o-mini"
        cid = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        text = self._text()
        if req.get("stream"):
            return self._chat_stream(req, status, t, model, cid, created, text)
        body = {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": "stop",
            }],
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }
        if self._with_usage():
            body["usage"] = self._openai_usage(t)
        self._send(status, body)

    def _chat_stream(self, req, status, t, model, cid, created, text):
        include_usage = bool((req.get("stream_options") or {}).get("include_usage")) and self._with_usage()
        events = []

        def chunk(delta, finish=None):
            c = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                 "system_fingerprint": "fp_fake",
                 "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            if include_usage:
                c["usage"] = None
            return c

        events.append(chunk({"role": "assistant", "content": "", "refusal": None}))
        for word in text.split(" "):
            events.append(chunk({"content": word + " "}))
        events.append(chunk({}, "stop"))
        if include_usage:
            events.append({"id": cid, "object": "chat.completion.chunk", "created": created,
                           "model": model, "system_fingerprint": "fp_fake", "choices": [],
                           "usage": self._openai_usage(t)})
        out = "".join("data: %s\n\n" % json.dumps(e) for e in events) + "data: [DONE]\n\n"
        self._send_stream(status, out)

    def _completions(self, req, status):
        t = self._tokens()
        body = {
            "id": "cmpl-" + uuid.uuid4().hex[:24],
            "object": "text_completion",
            "created": int(time.time()),
            "model": req.get("model") or "gpt-3.5-turbo-instruct",
            "choices": [{"text": " fake completion", "index": 0, "logprobs": None, "finish_reason": "stop"}],
        }
        if self._with_usage():
            body["usage"] = {"prompt_tokens": t["input"], "completion_tokens": t["output"],
                             "total_tokens": t["input"] + t["output"]}
        self._send(status, body)

    def _embeddings(self, req, status):
        t = self._tokens()
        inputs = req.get("input")
        n = len(inputs) if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else 1
        body = {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": [0.0023, -0.0093, 0.0157, -0.0048]}
                     for i in range(n)],
            "model": req.get("model") or "text-embedding-3-small",
        }
        if self._with_usage():
            body["usage"] = {"prompt_tokens": t["input"], "total_tokens": t["input"]}
        self._send(status, body)

    def _responses(self, req, status):
        t = self._tokens()
        body = {
            "id": "resp_" + uuid.uuid4().hex,
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "error": None,
            "incomplete_details": None,
            "model": req.get("model") or "gpt-4o-mini",
            "output": [{
                "type": "message", "id": "msg_" + uuid.uuid4().hex, "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": self._text(), "annotations": []}],
            }],
            "max_output_tokens": req.get("max_output_tokens"),
        }
        if self._with_usage():
            body["usage"] = {
                "input_tokens": t["input"],
                "input_tokens_details": {"cached_tokens": t["cached"]},
                "output_tokens": t["output"],
                "output_tokens_details": {"reasoning_tokens": t["reasoning"]},
                "total_tokens": t["input"] + t["output"],
            }
        self._send(status, body)

    # ---- Anthropic ------------------------------------------------------
    def _anthropic_usage(self, t):
        return {
            "input_tokens": t["input"],
            "cache_creation_input_tokens": t["cache_write"],
            "cache_read_input_tokens": t["cached"],
            "output_tokens": t["output"],
            "service_tier": "standard",
        }

    def _messages(self, req, status):
        t = self._tokens()
        model = req.get("model") or "claude-sonnet-4-5"
        mid = "msg_" + uuid.uuid4().hex[:24]
        text = self._text()
        if req.get("stream"):
            return self._messages_stream(status, t, model, mid, text)
        body = {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
        }
        if self._with_usage():
            body["usage"] = self._anthropic_usage(t)
        self._send(status, body)

    def _messages_stream(self, status, t, model, mid, text):
        with_usage = self._with_usage()
        start_msg = {"id": mid, "type": "message", "role": "assistant", "model": model,
                     "content": [], "stop_reason": None, "stop_sequence": None}
        if with_usage:
            u = self._anthropic_usage(t)
            u["output_tokens"] = 1
            start_msg["usage"] = u
        events = [("message_start", {"type": "message_start", "message": start_msg}),
                  ("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": ""}}),
                  ("ping", {"type": "ping"})]
        for word in text.split(" "):
            events.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                   "delta": {"type": "text_delta", "text": word + " "}}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
        delta = {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}}
        if with_usage:
            delta["usage"] = {"output_tokens": t["output"]}
        events.append(("message_delta", delta))
        events.append(("message_stop", {"type": "message_stop"}))
        out = "".join("event: %s\ndata: %s\n\n" % (name, json.dumps(data)) for name, data in events)
        self._send_stream(status, out)

    def _send_stream(self, status, text):
        # Sent in several writes (one per event): chunked for HTTP/1.1 clients,
        # close-delimited for HTTP/1.0 ones (NGINX's default proxy_http_version).
        chunked = self.request_version == "HTTP/1.1"
        self.send_response(status, REASONS.get(status))
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        for part in text.split("\n\n"):
            if not part:
                continue
            data = (part + "\n\n").encode()
            if self.headers.get("x-fake-delay-chunk-ms"):
                time.sleep(_int_header(self.headers, "x-fake-delay-chunk-ms", 0) / 1000.0)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
            self.wfile.flush()
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 4096
    verbose = False


def main(argv=None):
    p = argparse.ArgumentParser(description="Fake OpenAI/Anthropic provider for spend-cap tests")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9000)
    p.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = p.parse_args(argv)

    try:  # many concurrent connections in the load tests
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536, hard))
    except (ValueError, OSError):
        pass

    server = Server((args.host, args.port), Handler)
    server.verbose = args.verbose
    sys.stderr.write("fake_provider listening on http://%s:%d\n" % (args.host, server.server_address[1]))
    sys.stderr.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
