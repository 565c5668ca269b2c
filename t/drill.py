#!/usr/bin/env python3
"""Fault drills under load (scripts/drill.sh runs this; not part of the test suite).

The `failover` and `reshard` drills run on a Redis Cluster of 3 masters and 3
replicas (NGINX with spend_cap_redis_cluster and spend_cap_redis_replicas 1): kill
-9 of the org's master (its replica promoted, the killed node brought back as a
replica), and the org's slot migrated to another master under load.

Each drill starts its own redis-server, fake provider and NGINX with the module
(2 workers), sends requests from CLIENTS threads for SECONDS, injects one real
fault in the middle, lets everything settle, and prints per drill: requests
sent, answered by status, settled, lost (answered 2xx but not counted), leaked
(counted but never answered, or still reserved), and reservations left.

A 2xx answer costs the fake provider's usage (10 input, 20 output tokens of
gpt-4o-mini), or its reservation when the drill makes the upstream report an
implausible usage; every other answer costs nothing. Expected spend is the sum
of those; counted spend is the key's lifetime counter once all is settled.
"""

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "integration"))

import support  # noqa: E402
from support import (SECRETS, FakeProvider, Nginx, RedisServer, chat_body, counter_key, default_policy,  # noqa: E402
                     estimate_nanos, held_requests, openai_cost, post, read_counters, settled_count,
                     wait_until)
from tcp_proxy import TcpProxy  # noqa: E402

KEY = "k_open"  # no caps of its own: only the fault can refuse a request
CHAIN = {"key": "k_open", "project": "acme-prod", "org": "acme"}
COST = openai_cost("gpt-4o-mini", 10, 20)
BODY = chat_body(max_tokens=100)
ESTIMATE = estimate_nanos("gpt-4o-mini", len(BODY), 100)
INT64_MAX = 2 ** 63 - 1


class Drill:
    def __init__(self, name, workdir, args, ttl="2s", timeout="100ms", via_proxy=False, dataset=0, cluster=False):
        self.name = name
        self.args = args
        self.dir = Path(workdir) / name
        self.cluster = None
        if cluster:
            self._start_on_cluster(ttl, timeout)
            return
        redis_args = ["--enable-debug-command", "yes"] if dataset else []
        self.redis = RedisServer(self.dir / "redis", extra_args=redis_args).start()
        self.rc = self.redis.client()
        if dataset:
            self.rc.execute_command("DEBUG", "POPULATE", str(dataset), "filler")
        self.proxy = TcpProxy(self.redis.port).start() if via_proxy else None
        port = self.proxy.port if self.proxy else self.redis.port
        self.fake = args.fake
        self.nginx = Nginx(self.dir / "nginx", fake_port=self.fake.port, redis_port=port,
                           policy=default_policy(), http_extra="spend_cap_reservation_ttl %s;" % ttl,
                           location_extra="spend_cap_timeout %s;" % timeout).start()
        self.statuses = Counter()
        self.implausible_ok = 0   # 2xx answers the drill asked to report absurd usage for
        self.absurd_sent = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.extra = {}

    def _start_on_cluster(self, ttl, timeout):
        from cluster_support import RedisCluster
        self.cluster = RedisCluster(self.dir / "cluster").start()
        self.redis = self.proxy = None
        self.rc = self.cluster.cluster_client()
        self.fake = self.args.fake
        seeds = self.cluster.seeds()
        self.nginx = Nginx(self.dir / "nginx", fake_port=self.fake.port, policy=default_policy(),
                           redis_directive="spend_cap_redis_cluster %s %s;" % (seeds[0], seeds[-1]),
                           http_extra="spend_cap_reservation_ttl %s;\nspend_cap_redis_replicas 1;" % ttl,
                           location_extra="spend_cap_timeout %s;" % timeout).start()
        self.statuses = Counter()
        self.implausible_ok = 0
        self.absurd_sent = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.extra = {}

    def client(self, i):
        n = 0
        while not self.stop.is_set():
            n += 1
            headers = {"x-fake-delay-ms": str(self.args.delay_ms)}
            absurd = self.name == "absurd" and n % 5 == 0
            implausible = self.name == "absurd" and n % 5 == 1
            body = BODY
            if absurd:
                body = chat_body(max_tokens=INT64_MAX)
            if implausible:
                headers["x-fake-input-tokens"] = str(10 ** 18)
            try:
                r = post(self.nginx.url, "/v1/chat/completions", body, SECRETS[KEY], headers=headers, timeout=30)
                status = r.status_code
            except Exception:
                status = "no answer"
            with self.lock:
                self.statuses[status] += 1
                if absurd:
                    self.absurd_sent += 1
                if implausible and status == 200:
                    self.implausible_ok += 1

    def run(self, fault):
        threads = [threading.Thread(target=self.client, args=(i,)) for i in range(self.args.clients)]
        for t in threads:
            t.start()
        time.sleep(self.args.seconds / 2)
        fault(self)
        time.sleep(self.args.seconds / 2)
        self.stop.set()
        for t in threads:
            t.join(60)

    def report(self):
        ok = self.statuses.get(200, 0)
        expected = (ok - self.implausible_ok) * COST + self.implausible_ok * ESTIMATE
        life = counter_key("acme", "spend", "key", KEY, "lifetime")
        reqs = counter_key("acme", "reqs", "key", KEY, "daily")

        def quiet():
            return (self.rc.hlen("sc:{acme}:reserved") == 0
                    and self.rc.zcard("sc:{acme}:reserved:deadlines") == 0)

        wait_until(quiet, timeout=self.args.settle_timeout, interval=0.2)
        wait_until(lambda: read_counters(self.rc, [life])[life] == expected, timeout=5, interval=0.2)
        counted = read_counters(self.rc, [life, reqs])
        left = len(held_requests(self.rc))
        settled = settled_count(self.rc)  # requests settled (sc:{acme}:settlements)
        diff = counted[life] - expected
        row = {
            "drill": self.name,
            "sent": sum(self.statuses.values()),
            "answered": {str(k): v for k, v in sorted(self.statuses.items(), key=lambda kv: str(kv[0]))},
            "settled": settled,
            "counted_requests": counted[reqs],
            "lost_nanousd": max(0, -diff),
            "leaked_nanousd": max(0, diff),
            "lost_requests": max(0, ok - counted[reqs]),
            "leaked_requests": max(0, counted[reqs] - ok),
            "reservations_left": left,
        }
        row.update(self.extra)
        return row

    def close(self):
        self.nginx.expected_log_lines.append("exited on signal 9")
        self.nginx.stop(check=False)
        if self.proxy:
            self.proxy.stop()
        if self.cluster:
            self.cluster.stop()
        else:
            self.redis.stop()


def oom(d):
    d.rc.config_set("maxmemory-policy", "noeviction")
    d.rc.config_set("maxmemory", "1")
    time.sleep(1.5)
    d.rc.config_set("maxmemory", "0")


def loading(d):
    # SHUTDOWN SAVE keeps every write Redis acknowledged (a SAVE before it
    # would lose those accepted in between: Redis's durability, not ours)
    try:
        d.rc.shutdown(save=True)
    except Exception:
        pass
    d.redis.proc.wait(10)
    d.redis.extra_args += ["--key-load-delay", "60", "--loading-process-events-interval-bytes", "1024"]
    t0 = time.monotonic()
    d.redis.start(timeout=120)
    d.rc = d.redis.client()
    d.extra["loading_seconds"] = round(time.monotonic() - t0, 1)


def delay(d):
    d.proxy.delay = 0.2
    time.sleep(2)
    d.proxy.delay = 0


def blackhole(d):
    d.proxy.blackhole = True
    time.sleep(3)
    d.proxy.blackhole = False
    d.proxy.close_all()


def kill9(d):
    master = d.nginx.proc.pid
    killed = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid) as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == master:
                    os.kill(int(pid), signal.SIGKILL)
                    killed += 1
        except OSError:
            pass
    d.extra["workers_killed"] = killed


def outlive_ttl(d):
    # a burst of requests that outlive the 1 s deadline
    old = d.args.delay_ms
    d.args.delay_ms = 2500
    time.sleep(3)
    d.args.delay_ms = old


def absurd(d):
    pass  # the clients mix in max_tokens 2^63-1 and usage of 10^18 tokens throughout


def failover(d):
    from cluster_support import key_slot
    master = d.cluster.master_of_slot(key_slot("{acme}"))
    t0 = time.monotonic()
    d.cluster.kill_master(master)
    d.extra["failover_seconds"] = round(time.monotonic() - t0, 1)
    time.sleep(d.args.seconds / 4)
    d.cluster.restart_node(master)  # back as a replica: WAIT 1 confirms again


def reshard(d):
    from cluster_support import key_slot
    slot = key_slot("{acme}")
    src = d.cluster.master_of_slot(slot)
    dst = next(p for p in d.cluster.masters() if p != src)
    t0 = time.monotonic()
    d.extra["keys_moved"] = d.cluster.migrate_slot(slot, dst, batch=5)
    d.extra["reshard_seconds"] = round(time.monotonic() - t0, 2)


DRILLS = {
    "oom": (oom, {}),
    "loading": (loading, {"dataset": 20000}),
    "delay": (delay, {"via_proxy": True}),
    "blackhole": (blackhole, {"via_proxy": True}),
    "kill9": (kill9, {}),
    "ttl": (outlive_ttl, {"ttl": "1s"}),
    "absurd": (absurd, {}),
    "failover": (failover, {"cluster": True, "timeout": "1s"}),
    "reshard": (reshard, {"cluster": True, "timeout": "1s"}),
}


def main():
    # redis-py's cluster client logs each MOVED it follows while reading the counters
    logging.getLogger("redis").setLevel(logging.CRITICAL)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("drills", nargs="*", default=list(DRILLS))
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--delay-ms", type=int, default=50, help="the provider's answer time")
    ap.add_argument("--settle-timeout", type=float, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not support.MODULE.exists():
        sys.exit("drill: build the module first (scripts/build.sh): %s" % support.MODULE)
    work = Path(tempfile.mkdtemp(prefix="spend-cap-drill-"))
    args.fake = FakeProvider(log_path=str(work / "fake.log")).start()
    rows = []
    try:
        for name in args.drills:
            fault, opts = DRILLS[name]
            d = Drill(name, work, args, **opts)
            try:
                d.run(fault)
                rows.append(d.report())
            finally:
                d.close()
            args.fake.reset()
            print_row(rows[-1], args.json)
    finally:
        args.fake.stop()
    bad = [r["drill"] for r in rows if r["lost_nanousd"] or r["leaked_nanousd"] or r["reservations_left"]
           or r["lost_requests"] or r["leaked_requests"]]
    print("drill: %s" % ("every drill exact" if not bad else "NOT exact: " + ", ".join(bad)))
    print("drill: logs in %s" % work)
    return 1 if bad else 0


def print_row(row, as_json):
    if as_json:
        print(json.dumps(row))
        return
    answered = " ".join("%s:%s" % kv for kv in row["answered"].items())
    extra = " ".join("%s=%s" % (k, v) for k, v in row.items() if k in ("loading_seconds", "workers_killed",
                                                                       "failover_seconds", "keys_moved",
                                                                       "reshard_seconds"))
    print("%-10s sent %5d  answered %-30s settled %5d  lost %d req / %d nUSD  leaked %d req / %d nUSD  "
          "reservations left %d  %s"
          % (row["drill"], row["sent"], answered, row["settled"], row["lost_requests"], row["lost_nanousd"],
             row["leaked_requests"], row["leaked_nanousd"], row["reservations_left"], extra), flush=True)


if __name__ == "__main__":
    sys.exit(main())
