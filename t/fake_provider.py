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
    x-fake-output-tokens       completion / output tokens (OpenAI: includes reasoning) (default 20)
    x-fake-cached-tokens       OpenAI cached prompt tokens / Anthropic cache_read_input_tokens (default 0)
    x-fake-cache-write-tokens  Anthropic cache_creation_input_tokens (default 0)
    x-fake-reasoning-tokens    OpenAI completion_tokens_details / output_tokens_details.reasoning_tokens (default 0)
    x-fake-status              HTTP status; non-2xx answers a real-shaped provider error without usage
    x-fake-usage: none         a 2xx body (or stream) without usage
    x-fake-usage: malformed    a usage object whose token counts are not numbers
    x-fake-usage: max          adversarial: the most the provider could bill for this request
                               (t/fake_billing.py), input in its dearest kind
    x-fake-usage: random       adversarial: each count drawn from 0 to that most (x-fake-seed: N)
    x-fake-context-window      the model's context window, for max / random (default 200000)
    x-fake-model-max-output    the model's own output maximum, for a request without a bound
    x-fake-cache-write-1h-tokens  Anthropic: of the cache writes, this many for one hour
    x-fake-hold: TAG           answer only once POST /__fake/release?tag=TAG was called (or 60 s)
    x-fake-delay-ms            wait this long before answering
    x-fake-gzip: 1             gzip the response body (Content-Encoding: gzip); a stream is one gzip
                               stream flushed (Z_SYNC_FLUSH) after every event
    x-fake-content             the assistant's text (default "Hello from the fake provider.")
    x-fake-content-bytes       make the assistant's text this many bytes long (a long answer)
    x-fake-truncate: 1         a JSON body: send only its first half (a broken 2xx answer, Content-Length
                               of the half); a stream: stop before its final event ([DONE], Anthropic
                               message_stop, Responses response.completed) and close the connection
    x-fake-truncate-bytes: N   a stream: stop after N bytes of event text (before gzip) and close
    x-fake-stream-error: 1     a stream: half way, send the provider's error event and close
                               (no final event)
    x-fake-delay-chunk-ms      in a stream ("stream": true), wait this long before each event
    x-fake-chunk-bytes: N      write the body (plain or stream, after gzip) N bytes at a time, each
                               write flushed (TCP_NODELAY) and followed by a short sleep, so that the
                               reader gets it split at arbitrary byte boundaries
    x-fake-chunk-delay-ms      that sleep, milliseconds, fractions allowed (default 0.2)
    x-fake-delta-bytes: N      a stream: N bytes of text per delta event (default: one word per event)
    x-fake-crlf: 1             a stream: CRLF line endings
    x-fake-sse-comments: 1     a stream: a ": keep-alive" comment line before every event
    x-fake-anthropic-delta-usage: full
                               Anthropic message_delta usage carries the (cumulative) input and cache
                               counts too, as the API does for some requests, not only output_tokens

Streams follow the real APIs: OpenAI Chat Completions and Completions send `data: {chunk}`
events and `data: [DONE]`, with a final usage chunk (choices: []) only when the request asked
for stream_options.include_usage; Anthropic Messages sends `event:` lines, message_start
(input and cache counts, output_tokens 1), ping, content blocks, message_delta (cumulative
output_tokens), message_stop; Responses sends response.created, response.in_progress,
output item / content part events, response.output_text.delta ..., response.completed (usage).
A stream is chunked (Transfer-Encoding) for an HTTP/1.1 client, close-delimited for HTTP/1.0.

Test introspection, on the same port:
    GET    /__fake/requests    JSON list of every request received (method, path, headers, body,
                               body_len, body_sha256) and what was answered (status, response_len
                               and response_sha256 of the body bytes written -- after gzip, before
                               chunked framing --, response_complete: false when cut or aborted,
                               `billed`: the token counts its usage reported)
    POST   /__fake/release?tag=T  lets the requests held with x-fake-hold: T answer
    DELETE /__fake/requests    forget them
    GET    /__fake/health      200 "ok"
"""

import argparse
import gzip
import hashlib
import json
import resource
import socket
import sys
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import fake_billing

DEFAULT_INPUT_TOKENS = 10
DEFAULT_OUTPUT_TOKENS = 20

_lock = threading.Lock()
_requests = []
_holds = {}  # tag -> threading.Event (x-fake-hold)


def _hold_event(tag):
    with _lock:
        return _holds.setdefault(tag, threading.Event())

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


def _sse_json(obj):
    """Event data as the real APIs send it: compact JSON on one line."""
    return json.dumps(obj, separators=(",", ":"))


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

    def _flag(self, name):
        return self.headers.get(name, "").strip().lower() in ("1", "true", "yes")

    def _send(self, status, body, content_type="application/json", extra_headers=None):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        headers = dict(extra_headers or {})
        if self._flag("x-fake-truncate"):
            body = body[:len(body) // 2]
        if self._flag("x-fake-gzip"):
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        self._note_response(status)
        self.send_response(status, REASONS.get(status))
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self._write_pieces(body, chunked=False)
        self._note_done(True)

    # Body writing in N-byte pieces (x-fake-chunk-bytes), recorded in the request log.
    def _piece_size(self):
        n = _int_header(self.headers, "x-fake-chunk-bytes", 0)
        return n if n > 0 else 0

    def _write_pieces(self, data, chunked):
        if not data:
            return
        n = self._piece_size()
        if n == 0:
            pieces = [data]
        else:
            pieces = [data[i:i + n] for i in range(0, len(data), n)]
            try:
                pause = float(self.headers.get("x-fake-chunk-delay-ms", "0.2")) / 1000.0
            except ValueError:
                pause = 0.0002
        for i, piece in enumerate(pieces):
            if n and i:
                time.sleep(pause)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            self.wfile.flush()
            self._resp_hash.update(piece)
            self._resp_len += len(piece)
            if self._entry is not None:
                with _lock:
                    self._entry["response_len"] = self._resp_len
                    self._entry["response_sha256"] = self._resp_hash.hexdigest()

    def _note_response(self, status):
        self._resp_hash = hashlib.sha256()
        self._resp_len = 0
        if self._piece_size():
            try:
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        if self._entry is not None:
            with _lock:
                self._entry.update(status=status, response_len=0,
                                   response_sha256=self._resp_hash.hexdigest(), response_complete=False)

    def _note_done(self, complete):
        if self._entry is not None:
            with _lock:
                self._entry["response_complete"] = complete

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
        self._entry = entry

    # ---- introspection --------------------------------------------------
    _entry = None

    def _fake_api(self):
        self._entry = None
        path = self.path.split("?", 1)[0]
        if path == "/__fake/health":
            self._send(200, "ok", "text/plain")
        elif path == "/__fake/requests" and self.command == "GET":
            with _lock:
                data = [dict(e) for e in _requests]
            self._send(200, data)
        elif path == "/__fake/requests" and self.command == "DELETE":
            with _lock:
                n = len(_requests)
                _requests.clear()
                _holds.clear()
            self._send(200, {"deleted": n})
        elif path == "/__fake/release" and self.command == "POST":
            query = self.path.split("?", 1)[1] if "?" in self.path else ""
            tag = dict(p.split("=", 1) for p in query.split("&") if "=" in p).get("tag", "")
            _hold_event(tag).set()
            self._send(200, {"released": tag})
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

    do_HEAD = do_GET  # (_send writes the headers only)

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
        try:
            self._answer(body)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            # the reader (NGINX) went away mid-answer: the request log says so
            self.close_connection = True
            self._note_done(False)
            with _lock:
                if self._entry is not None:
                    self._entry["response_aborted"] = True

    def _answer(self, body):

        delay = _int_header(self.headers, "x-fake-delay-ms", 0)
        if delay > 0:
            time.sleep(delay / 1000.0)
        hold = self.headers.get("x-fake-hold")
        if hold:
            _hold_event(hold.strip()).wait(60)

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
        self._req, self._body = req, body

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
        mode = h.get("x-fake-usage", "").strip().lower()
        if mode in ("max", "random"):
            path = self.path.split("?", 1)[0]
            most_in, most_out = fake_billing.bounds(
                path, self._body, self._req, _int_header(h, "x-fake-context-window", 200000),
                _int_header(h, "x-fake-model-max-output", fake_billing.DEFAULT_MODEL_MAX_OUTPUT))
            t = fake_billing.usage_tokens(mode, h.get("x-fake-seed", "0"), most_in, most_out,
                                          path.endswith("/messages"))
        else:
            t = {
                "input": _int_header(h, "x-fake-input-tokens", DEFAULT_INPUT_TOKENS),
                "output": _int_header(h, "x-fake-output-tokens", DEFAULT_OUTPUT_TOKENS),
                "cached": _int_header(h, "x-fake-cached-tokens", 0),
                "cache_write": _int_header(h, "x-fake-cache-write-tokens", 0),
                "cache_write_1h": _int_header(h, "x-fake-cache-write-1h-tokens", 0),
                "reasoning": _int_header(h, "x-fake-reasoning-tokens", 0),
            }
        if self._entry is not None:
            with _lock:
                self._entry["billed"] = dict(t)
        return t

    def _text(self):
        n = _int_header(self.headers, "x-fake-content-bytes", 0)
        if n > 0:
            unit = "All work and no play makes Jack a dull boy. "
            return (unit * (n // len(unit) + 1))[:n]
        return self.headers.get("x-fake-content", "Hello from the fake provider.")

    def _with_usage(self):
        return self.headers.get("x-fake-usage", "").strip().lower() != "none"

    _req, _body = {}, b""

    def _malformed_usage(self):
        return self.headers.get("x-fake-usage", "").strip().lower() == "malformed"

    def _deltas(self, text):
        """The pieces of the answer, one per delta event."""
        n = _int_header(self.headers, "x-fake-delta-bytes", 0)
        if n > 0:
            return [text[i:i + n] for i in range(0, len(text), n)] or [""]
        return [word + " " for word in text.split(" ")]

    # ---- OpenAI ---------------------------------------------------------
    def _openai_usage(self, t):
        if self._malformed_usage():
            return {"prompt_tokens": "ten", "completion_tokens": "twenty", "total_tokens": "thirty"}
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

    @staticmethod
    def _include_usage(req):
        so = req.get("stream_options")
        return isinstance(so, dict) and so.get("include_usage") is True

    def _openai_stream_error(self):
        return ("data: %s" % _sse_json({"error": {
            "message": "The server had an error while processing your request. Sorry about that!",
            "type": "server_error", "param": None, "code": None}}))

    def _chat_stream(self, req, status, t, model, cid, created, text):
        # as the real API: the usage chunk (and "usage": null in the others) only when asked
        include_usage = self._include_usage(req)
        events = []

        def chunk(delta, finish=None):
            c = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                 "service_tier": "default", "system_fingerprint": "fp_fake",
                 "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            if include_usage:
                c["usage"] = None
            return "data: " + _sse_json(c)

        events.append(chunk({"role": "assistant", "content": "", "refusal": None}))
        for piece in self._deltas(text):
            events.append(chunk({"content": piece}))
        events.append(chunk({}, "stop"))
        if include_usage and self._with_usage():
            events.append("data: " + _sse_json({
                "id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                "service_tier": "default", "system_fingerprint": "fp_fake", "choices": [],
                "usage": self._openai_usage(t)}))
        events.append("data: [DONE]")
        self._send_stream(status, events, self._openai_stream_error())

    def _completions(self, req, status):
        t = self._tokens()
        cid = "cmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        model = req.get("model") or "gpt-3.5-turbo-instruct"
        if req.get("stream"):
            return self._completions_stream(req, status, t, model, cid, created)
        body = {
            "id": cid,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [{"text": self._text(), "index": 0, "logprobs": None, "finish_reason": "stop"}],
        }
        if self._with_usage():
            u = self._openai_usage(t)
            body["usage"] = u if self._malformed_usage() else {
                "prompt_tokens": t["input"], "completion_tokens": t["output"],
                "total_tokens": t["input"] + t["output"]}
        self._send(status, body)

    def _completions_stream(self, req, status, t, model, cid, created):
        include_usage = self._include_usage(req)
        events = []

        def chunk(text, finish=None):
            c = {"id": cid, "object": "text_completion", "created": created,
                 "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
                 "model": model, "system_fingerprint": None}
            if include_usage:
                c["usage"] = None
            return "data: " + _sse_json(c)

        for piece in self._deltas(self._text()):
            events.append(chunk(piece))
        events.append(chunk("", "stop"))
        if include_usage and self._with_usage():
            u = self._openai_usage(t)
            if not self._malformed_usage():
                u = {"prompt_tokens": t["input"], "completion_tokens": t["output"],
                     "total_tokens": t["input"] + t["output"]}
            events.append("data: " + _sse_json({"id": cid, "object": "text_completion", "created": created,
                                                  "choices": [], "model": model, "system_fingerprint": None,
                                                  "usage": u}))
        events.append("data: [DONE]")
        self._send_stream(status, events, self._openai_stream_error())

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
            body["usage"] = ({"prompt_tokens": "ten", "total_tokens": "ten"} if self._malformed_usage()
                             else {"prompt_tokens": t["input"], "total_tokens": t["input"]})
        self._send(status, body)

    def _responses_usage(self, t):
        if self._malformed_usage():
            return {"input_tokens": "ten", "output_tokens": "twenty", "total_tokens": "thirty"}
        return {
            "input_tokens": t["input"],
            "input_tokens_details": {"cached_tokens": t["cached"]},
            "output_tokens": t["output"],
            "output_tokens_details": {"reasoning_tokens": t["reasoning"]},
            "total_tokens": t["input"] + t["output"],
        }

    def _response_object(self, req, rid, created, status_word, output, usage):
        return {
            "id": rid,
            "object": "response",
            "created_at": created,
            "status": status_word,
            "background": False,
            "error": None,
            "incomplete_details": None,
            "instructions": req.get("instructions"),
            "max_output_tokens": req.get("max_output_tokens"),
            "model": req.get("model") or "gpt-4o-mini",
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "store": True,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": usage,
            "user": None,
            "metadata": {},
        }

    def _responses(self, req, status):
        t = self._tokens()
        rid = "resp_" + uuid.uuid4().hex
        created = int(time.time())
        text = self._text()
        msg_id = "msg_" + uuid.uuid4().hex
        if req.get("stream"):
            return self._responses_stream(req, status, t, rid, created, msg_id, text)
        output = [{"type": "message", "id": msg_id, "status": "completed", "role": "assistant",
                   "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}]
        body = self._response_object(req, rid, created, "completed", output, None)
        if self._with_usage():
            body["usage"] = self._responses_usage(t)
        else:
            del body["usage"]
        self._send(status, body)

    def _responses_stream(self, req, status, t, rid, created, msg_id, text):
        seq = [0]
        events = []

        def ev(etype, **fields):
            data = {"type": etype, "sequence_number": seq[0]}
            data.update(fields)
            seq[0] += 1
            events.append("event: %s\ndata: %s" % (etype, _sse_json(data)))

        ev("response.created", response=self._response_object(req, rid, created, "in_progress", [], None))
        ev("response.in_progress", response=self._response_object(req, rid, created, "in_progress", [], None))
        item = {"id": msg_id, "type": "message", "status": "in_progress", "content": [], "role": "assistant"}
        ev("response.output_item.added", output_index=0, item=item)
        ev("response.content_part.added", item_id=msg_id, output_index=0, content_index=0,
           part={"type": "output_text", "annotations": [], "logprobs": [], "text": ""})
        for piece in self._deltas(text):
            ev("response.output_text.delta", item_id=msg_id, output_index=0, content_index=0, delta=piece,
               logprobs=[])
        full = "".join(self._deltas(text))
        ev("response.output_text.done", item_id=msg_id, output_index=0, content_index=0, text=full, logprobs=[])
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": full}
        ev("response.content_part.done", item_id=msg_id, output_index=0, content_index=0, part=part)
        done_item = {"id": msg_id, "type": "message", "status": "completed", "content": [part], "role": "assistant"}
        ev("response.output_item.done", output_index=0, item=done_item)
        final = self._response_object(req, rid, created, "completed", [done_item],
                                      self._responses_usage(t) if self._with_usage() else None)
        ev("response.completed", response=final)
        error = "event: error\ndata: %s" % _sse_json({
            "type": "error", "code": "server_error", "param": None, "sequence_number": seq[0],
            "message": "An error occurred while processing your request."})
        self._send_stream(status, events, error)

    # ---- Anthropic ------------------------------------------------------
    def _anthropic_usage(self, t):
        if self._malformed_usage():
            return {"input_tokens": "ten", "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                    "output_tokens": "twenty", "service_tier": "standard"}
        usage = {
            "input_tokens": t["input"],
            "cache_creation_input_tokens": t["cache_write"],
            "cache_read_input_tokens": t["cached"],
            "output_tokens": t["output"],
            "service_tier": "standard",
        }
        if t.get("cache_write_1h"):
            usage["cache_creation"] = {"ephemeral_5m_input_tokens": t["cache_write"] - t["cache_write_1h"],
                                       "ephemeral_1h_input_tokens": t["cache_write_1h"]}
        return usage

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
            if not self._malformed_usage():
                u["output_tokens"] = 1  # as the API: a small count at the start, the total in message_delta
            start_msg["usage"] = u
        events = [("message_start", {"type": "message_start", "message": start_msg}),
                  ("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": ""}}),
                  ("ping", {"type": "ping"})]
        deltas = self._deltas(text)
        for i, piece in enumerate(deltas):
            events.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                   "delta": {"type": "text_delta", "text": piece}}))
            if i == len(deltas) // 2:
                events.append(("ping", {"type": "ping"}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
        delta = {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}}
        if with_usage:
            if self._malformed_usage():
                delta["usage"] = {"output_tokens": "twenty"}
            elif self.headers.get("x-fake-anthropic-delta-usage", "").strip().lower() == "full":
                delta["usage"] = {"input_tokens": t["input"], "cache_creation_input_tokens": t["cache_write"],
                                  "cache_read_input_tokens": t["cached"], "output_tokens": t["output"]}
            else:
                delta["usage"] = {"output_tokens": t["output"]}
        events.append(("message_delta", delta))
        events.append(("message_stop", {"type": "message_stop"}))
        error = "event: error\ndata: %s" % _sse_json(
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
        self._send_stream(status, ["event: %s\ndata: %s" % (name, _sse_json(data)) for name, data in events],
                          error)

    # ---- SSE ------------------------------------------------------------
    def _send_stream(self, status, events, error_event):
        """events: the SSE events' text (lines joined by \\n, no blank line), the last one
        the stream's final event. Sent one write per event (or in x-fake-chunk-bytes
        pieces): chunked for HTTP/1.1 clients, close-delimited for HTTP/1.0 ones (NGINX's
        default proxy_http_version)."""
        h = self.headers
        truncate = self._flag("x-fake-truncate")
        cut_at = _int_header(h, "x-fake-truncate-bytes", -1)
        if self._flag("x-fake-stream-error"):
            events = events[:max(1, len(events) // 2)] + [error_event]
            truncate = False
        elif truncate:
            events = events[:-1]
        # a cut stream ends without its final framing: the connection just closes
        cut = truncate or cut_at >= 0 or self._flag("x-fake-stream-error")
        eol = "\r\n" if self._flag("x-fake-crlf") else "\n"
        comments = self._flag("x-fake-sse-comments")
        use_gzip = self._flag("x-fake-gzip")
        delay = _int_header(h, "x-fake-delay-chunk-ms", 0) / 1000.0
        # a cut HTTP/1.1 stream is a chunked body that never ends; an HTTP/1.0 one just closes
        chunked = self.request_version == "HTTP/1.1"

        self._note_response(status)
        self.send_response(status, REASONS.get(status))
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        if use_gzip:
            self.send_header("Content-Encoding", "gzip")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
        self.close_connection = not chunked or cut
        self.end_headers()

        z = zlib.compressobj(6, zlib.DEFLATED, 31) if use_gzip else None
        sent_text = 0
        for ev in events:
            text = ev.replace("\n", eol) + eol + eol
            if comments:
                text = ": keep-alive" + eol + text
            data = text.encode()
            if cut_at >= 0:
                if sent_text >= cut_at:
                    break
                data = data[:cut_at - sent_text]
            sent_text += len(data)
            if delay > 0:
                time.sleep(delay)
            if z is not None:
                data = z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)
            self._write_pieces(data, chunked)
        if cut:
            self._note_done(False)
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if z is not None:
            self._write_pieces(z.flush(zlib.Z_FINISH), chunked)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        self._note_done(True)


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
