#!/usr/bin/env python3
"""A webhook receiver on loopback for spend-cap-relay's tests and demo: it
records every POST (path, headers, body, time) and answers what it was told to.

    python3 t/webhook_receiver.py --port 9300 [--print]

    POST /any/path            a delivery: recorded; answered 200, or as /__plan says
    GET  /__received          [{"path", "headers", "body", "time", "status"}...]
    DELETE /__received        forgets them and the plans
    POST /__plan?path=P&fail=N&status=S&retry_after=R&delay_ms=D&forever=1
                              the next N deliveries to P are answered S (default 500,
                              with Retry-After: R when given); delay_ms holds every
                              answer to P that long; forever=1: every delivery to P
--print writes one line per delivery to stdout (the demo's "what it gets").
"""

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

_lock = threading.Lock()
_received = []
_plans = {}  # path -> {"fail": n, "status": s, "retry_after": r, "delay_ms": d, "forever": bool}
PRINT = False


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.startswith("/__received"):
            with _lock:
                body = json.dumps(_received).encode()
            return self._send(200, body, [("Content-Type", "application/json")])
        self._send(404)

    def do_DELETE(self):
        if self.path.startswith("/__received"):
            with _lock:
                _received.clear()
                _plans.clear()
            return self._send(200)
        self._send(404)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlparse(self.path)
        if url.path == "/__plan":
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            with _lock:
                _plans[q.get("path", "/")] = {"fail": int(q.get("fail", "0")), "status": int(q.get("status", "500")),
                                              "retry_after": q.get("retry_after"),
                                              "delay_ms": int(q.get("delay_ms", "0")),
                                              "forever": q.get("forever") == "1"}
            return self._send(200)
        with _lock:
            plan = _plans.get(url.path)
            status, headers = 200, []
            if plan and (plan["forever"] or plan["fail"] > 0):
                status = plan["status"]
                if not plan["forever"]:
                    plan["fail"] -= 1
                if plan["retry_after"] is not None:
                    headers.append(("Retry-After", plan["retry_after"]))
            delay = plan["delay_ms"] if plan else 0
            entry = {"path": url.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                     "body": body.decode("utf-8", "replace"), "time": time.time(), "status": status}
            _received.append(entry)
        if delay:
            time.sleep(delay / 1000.0)
        if PRINT:
            sys.stdout.write("%s %s %s -> %d\n" % (entry["headers"].get("webhook-id", "-"), url.path,
                                                  entry["body"], status))
            sys.stdout.flush()
        self._send(status, b"ok" if status < 300 else b"no", headers)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


def main():
    global PRINT
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9300)
    ap.add_argument("--print", action="store_true")
    args = ap.parse_args()
    PRINT = args.print
    srv = Server((args.host, args.port), Handler)
    sys.stderr.write("webhook_receiver listening on http://%s:%d\n" % (args.host, srv.server_address[1]))
    sys.stderr.flush()
    srv.serve_forever()


if __name__ == "__main__":
    main()
