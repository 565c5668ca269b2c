#!/usr/bin/env python3
"""A tiny authoritative DNS server over UDP on 127.0.0.1, for NGINX's resolver
(`resolver 127.0.0.1:PORT valid=1s ipv6=off;`) in the tests. Stdlib only.

    dns = DnsServer(ttl=1).start()
    dns.set("redis.test", "127.0.0.1")      # A record (a list gives several)
    dns.set("redis.test", None)             # gone: NXDOMAIN
    dns.queries["redis.test"]               # how many queries named it
    dns.stop()

Known name, type A: NOERROR with its A records (TTL `ttl`); known name, any other
type (AAAA...): NOERROR, no answer; unknown name: NXDOMAIN. Names are compared
case-insensitively, without the trailing dot.

As a script: python3 t/dns_server.py --port P --record name=1.2.3.4 [--record ...]
(prints "listening on 127.0.0.1:P" once ready; stops on SIGTERM or SIGINT).
"""

import argparse
import collections
import signal
import socket
import struct
import sys
import threading

TYPE_A = 1
CLASS_IN = 1
RCODE_NOERROR = 0
RCODE_FORMERR = 1
RCODE_NXDOMAIN = 3
RCODE_NOTIMP = 4


def _norm(name):
    return name.rstrip(".").lower()


def parse_name(data, offset):
    """(name, offset after it) of an uncompressed name at `offset` (a query's
    question has no compression); raises ValueError when malformed."""
    labels = []
    while True:
        if offset >= len(data):
            raise ValueError("truncated name")
        n = data[offset]
        offset += 1
        if n == 0:
            break
        if n & 0xC0:
            raise ValueError("compressed name in a question")
        if offset + n > len(data):
            raise ValueError("truncated label")
        labels.append(data[offset:offset + n].decode("ascii", "replace"))
        offset += n
    return ".".join(labels), offset


def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            raw = label.encode("ascii")
            out += bytes([len(raw)]) + raw
    return out + b"\x00"


def build_query(name, qtype=TYPE_A, qid=0x1234, rd=True):
    """A DNS query packet (for tests)."""
    header = struct.pack("!HHHHHH", qid, 0x0100 if rd else 0, 1, 0, 0, 0)
    return header + encode_name(name) + struct.pack("!HH", qtype, CLASS_IN)


def parse_response(data):
    """{"id", "rcode", "aa", "qname", "qtype", "answers": [(type, ttl, rdata-as-str-or-bytes)]}
    of a reply (answers' names may be compression pointers; only what this server sends)."""
    qid, flags, qd, an, _ns, _ar = struct.unpack("!HHHHHH", data[:12])
    off = 12
    qname, qtype = None, None
    for _ in range(qd):
        qname, off = parse_name(data, off)
        qtype, _qclass = struct.unpack("!HH", data[off:off + 4])
        off += 4
    answers = []
    for _ in range(an):
        if data[off] & 0xC0 == 0xC0:
            off += 2
        else:
            _, off = parse_name(data, off)
        rtype, _rclass, ttl, rdlen = struct.unpack("!HHIH", data[off:off + 10])
        off += 10
        rdata = data[off:off + rdlen]
        off += rdlen
        answers.append((rtype, ttl, socket.inet_ntoa(rdata) if rtype == TYPE_A and rdlen == 4 else rdata))
    return {"id": qid, "rcode": flags & 0xF, "aa": bool(flags & 0x0400), "qname": qname, "qtype": qtype,
            "answers": answers}


class DnsServer:
    def __init__(self, port=None, ttl=1, host="127.0.0.1"):
        self.host = host
        self.port = port or 0
        self.ttl = ttl
        self._records = {}
        self._lock = threading.Lock()
        self.queries = collections.Counter()   # name -> how many queries named it
        self._sock = None
        self._thread = None
        self._stopping = threading.Event()

    # records
    def set(self, name, ipv4):
        """Sets the A record(s) of `name` (a dotted quad or a list of them); None
        removes the name (NXDOMAIN from then on)."""
        with self._lock:
            if ipv4 is None:
                self._records.pop(_norm(name), None)
            else:
                ips = [ipv4] if isinstance(ipv4, str) else list(ipv4)
                for ip in ips:
                    socket.inet_aton(ip)
                self._records[_norm(name)] = ips

    def remove(self, name):
        self.set(name, None)

    def query_count(self, name):
        with self._lock:
            return self.queries[_norm(name)]

    def reset_counts(self):
        with self._lock:
            self.queries.clear()

    # process
    def start(self):
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((self.host, self.port))
        self.port = self._sock.getsockname()[1]
        self._sock.settimeout(0.2)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._serve, name="dns-server-%d" % self.port, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _serve(self):
        while not self._stopping.is_set():
            try:
                data, addr = self._sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            reply = self.answer(data)
            if reply is not None:
                try:
                    self._sock.sendto(reply, addr)
                except OSError:
                    pass

    def answer(self, data):
        """The reply to one query packet (None: not worth an answer)."""
        if len(data) < 12:
            return None
        qid, flags, qdcount = struct.unpack("!HHH", data[:6])
        if flags & 0x8000:          # a response, not a query
            return None
        opcode = (flags >> 11) & 0xF
        rd = flags & 0x0100

        def reply(rcode, question=b"", answers=()):
            rflags = 0x8000 | (opcode << 11) | 0x0400 | rd | rcode
            head = struct.pack("!HHHHHH", qid, rflags, 1 if question else 0, len(answers), 0, 0)
            return head + question + b"".join(answers)

        if opcode != 0:
            return reply(RCODE_NOTIMP)
        if qdcount != 1:
            return reply(RCODE_FORMERR)
        try:
            name, off = parse_name(data, 12)
            qtype, qclass = struct.unpack("!HH", data[off:off + 4])
        except (ValueError, struct.error):
            return reply(RCODE_FORMERR)
        question = data[12:off + 4]
        key = _norm(name)
        with self._lock:
            self.queries[key] += 1
            ips = self._records.get(key)
        if ips is None:
            return reply(RCODE_NXDOMAIN, question)
        answers = []
        if qtype == TYPE_A and qclass == CLASS_IN:
            for ip in ips:
                # the name: a pointer to the question's (offset 12)
                answers.append(struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, self.ttl, 4) + socket.inet_aton(ip))
        return reply(RCODE_NOERROR, question, answers)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ttl", type=int, default=1)
    ap.add_argument("--record", action="append", default=[], metavar="NAME=IPV4[,IPV4...]")
    args = ap.parse_args(argv)
    srv = DnsServer(port=args.port, ttl=args.ttl)
    for rec in args.record:
        name, _, ips = rec.partition("=")
        srv.set(name, ips.split(","))
    srv.start()
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    print("listening on 127.0.0.1:%d" % srv.port, flush=True)
    while not done.wait(0.5):
        pass
    srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
