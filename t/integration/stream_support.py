"""Helpers of the streaming / every-surface settlement tests (test_streams.py and
test_stream_faults.py): request bodies of each API surface, SSE parsing, raw
response capture, the settle-at-reservation warn line, NGINX worker memory."""

import hashlib
import json
import re
import socket

import httpx

from support import (CHAINS, all_counter_keys, cost_nanos, default_policy, estimate_nanos, openai_cost,
                     price_of, read_counters, wait_request_settled, wait_until)  # noqa: F401 (re-exported)
from support import redis_barrier

K1 = CHAINS["k1"]

# The settle-at-reservation warn line (SPEC 3.7; one per request, saying why).
RESERVATION_WARN = re.compile(r"\[warn\].*spend_cap: settling request .*at its reservation: ")


def compact(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def responses_body(model="gpt-4o-mini", max_output_tokens=100, input="Say hello.", **extra):
    b = {"model": model, "input": input}
    if max_output_tokens is not None:
        b["max_output_tokens"] = max_output_tokens
    b.update(extra)
    return compact(b)


def completions_body(model="gpt-4o-mini", max_tokens=100, prompt="Say hello.", **extra):
    b = {"model": model, "prompt": prompt}
    if max_tokens is not None:
        b["max_tokens"] = max_tokens
    b.update(extra)
    return compact(b)


def embeddings_body(model="text-embedding-3-small", input="The food was delicious.", **extra):
    b = {"model": model, "input": input}
    b.update(extra)
    return compact(b)


def policy_with_embeddings():
    p = default_policy()
    p["models"]["text-embedding-3-small"] = {"input": "0.02"}
    return p


def embeddings_cost(tokens, policy=None):
    return cost_nanos((tokens, price_of("text-embedding-3-small", policy or policy_with_embeddings())["input"]))


def embeddings_estimate(body_len, policy=None):
    """Embeddings produce no output tokens: the model has no output price."""
    p = price_of("text-embedding-3-small", policy or policy_with_embeddings())
    return cost_nanos((body_len, p["input"]))


def responses_cost(model, input_tokens, output_tokens, cached=0):
    return openai_cost(model, input_tokens, output_tokens, cached=cached)


# ---------------------------------------------------------------- requests

class Raw:
    """A response read through httpx without decoding: .raw is exactly the body bytes
    NGINX sent (after de-chunking), .text the decoded text when it is not compressed."""

    def __init__(self, status, headers, raw, error=None):
        self.status_code = status
        self.headers = headers
        self.raw = raw
        self.error = error  # the body ended without its framing (e.g. a cut chunked body)

    @property
    def text(self):
        return self.raw.decode("utf-8", "replace")

    @property
    def rid(self):
        return self.headers["x-test-request-id"]

    def sha256(self):
        return hashlib.sha256(self.raw).hexdigest()


def raw_post(url, path, body, secret=None, headers=None, timeout=60, key_header="authorization"):
    h = {"content-type": "application/json"}
    if secret is not None:
        h.update({"authorization": "Bearer " + secret} if key_header == "authorization" else {key_header: secret})
    h.update(headers or {})
    with httpx.Client(timeout=timeout) as c:
        with c.stream("POST", url + path, content=body, headers=h) as r:
            parts, error = [], None
            try:
                for part in r.iter_raw():
                    parts.append(part)
            except httpx.RemoteProtocolError as e:
                error = e
            return Raw(r.status_code, r.headers, b"".join(parts), error)


def parse_sse(text):
    """[(event or None, data)] of an SSE text; comment lines skipped; LF or CRLF."""
    out = []
    text = text.replace("\r\n", "\n")
    for block in text.split("\n\n"):
        event, data = None, []
        for line in block.split("\n"):
            if line.startswith(":") or not line:
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
        if data:
            out.append((event, "\n".join(data)))
    return out


def sse_json(text):
    return [json.loads(d) for _, d in parse_sse(text) if d != "[DONE]"]


# ---------------------------------------------------------------- Redis / logs

def counters_equal(redis, expected, chain=K1, kind="spend", timeout=4.0):
    keys = all_counter_keys(chain, kind)
    want = {k: expected for k in keys} if isinstance(expected, int) else expected
    wait_until(lambda: read_counters(redis, keys) == want, timeout=timeout)
    got = read_counters(redis, keys)
    assert got == want, "counters differ:\n" + "\n".join(
        "  %s: expected %s, got %s" % (k, want[k], got[k]) for k in keys if got[k] != want[k])


def reservation_warnings(nginx):
    return [line for line in nginx.error_text().splitlines() if RESERVATION_WARN.search(line)]


def assert_one_reservation_warning(nginx, timeout=3.0):
    assert wait_until(lambda: reservation_warnings(nginx), timeout=timeout)
    redis_barrier(nginx)  # every worker is past the log phase of what it answered: a second would show
    lines = reservation_warnings(nginx)
    assert len(lines) == 1, ("expected one warn line 'spend_cap: settling request ... at its reservation: "
                             "<why>' in error.log, got %d:\n%s\n--- error.log tail:\n%s"
                             % (len(lines), "\n".join(lines), "\n".join(nginx.error_text().splitlines()[-15:])))
    return lines[0]


# ---------------------------------------------------------------- the injected include_usage

def assert_include_usage_injected(original, received):
    """`received` is `original` with stream_options.include_usage set to true, edited in
    place: one contiguous region differs, it is small, and everything else is byte-identical."""
    orig_obj = json.loads(original)
    want = dict(orig_obj)
    so = dict(want.get("stream_options") or {})
    so["include_usage"] = True
    want["stream_options"] = so
    got_obj = json.loads(received)
    assert got_obj == want, "upstream got %r, expected %r" % (received, want)
    # byte-identical around one edit
    p = 0
    while p < min(len(original), len(received)) and original[p] == received[p]:
        p += 1
    s = 0
    while (s < min(len(original), len(received)) - p
           and original[len(original) - 1 - s] == received[len(received) - 1 - s]):
        s += 1
    removed = original[p:len(original) - s]
    added = received[p:len(received) - s]
    assert len(removed) <= len(b"false") + 2, (
        "more than include_usage changed: %r became %r (in %r -> %r)" % (removed, added, original, received))
    assert b"tru" in added and len(added) <= len(b',"stream_options":{"include_usage":true}') + 8, (
        "the edit %r -> %r is not just include_usage (%r -> %r)" % (removed, added, original, received))


# ---------------------------------------------------------------- NGINX workers

def worker_pids(nginx):
    master = nginx.proc.pid
    pids = []
    import os
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == master:
            pids.append(int(d))
    return sorted(pids)


def status_kib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss(pid):
    """Resets VmHWM (Linux: clear_refs 5); False when not permitted."""
    try:
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def raw_socket_request(port, path, body, headers):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n" % (path, len(body))
    head += "".join("%s: %s\r\n" % kv for kv in headers.items()) + "\r\n"
    s.sendall(head.encode() + body)
    return s


__all__ = [n for n in dir() if not n.startswith("_")] + ["estimate_nanos"]
