"""spend-cap on a real Redis Cluster (SPEC section 10): 3 masters and 3 replicas on
loopback, NGINX nodes that each know one seed, orgs on every master. Caps hold and
counters are exact whichever node and master a request meets."""

import asyncio
import itertools
import os
import signal
import sys
import threading
import time
from collections import Counter

import httpx

from cluster_support import key_slot, redis_cluster, redis_cluster_factory  # noqa: F401 (fixtures)
from support import (MODELS, body_of_length, counter_key, estimate_nanos, openai_cost, sha256_hex, usd_nanos,
                     wait_until)

N = 300
BODY_LEN = 400
MAX_TOKENS = 200
FIT = 50
CAP = "2"


def org_per_master(cluster):
    """One org name per master, each on a slot of that master."""
    return [cluster.find_key_for_master(port, prefix="org") for port in sorted(cluster.masters())]


def cluster_policy(orgs):
    return {
        "models": {name: dict(p) for name, p in MODELS.items()},
        "unknown_model": "reject",
        "default_max_output_tokens": 4096,
        "orgs": {org: {"limits": {"monthly_usd": "1000"}} for org in orgs},
        "projects": {org + "-p": {"org": org} for org in orgs},
        "keys": [{"id": "k-" + org, "sha256": sha256_hex("sk-cluster-" + org), "project": org + "-p",
                  "limits": {"daily_usd": CAP}} for org in orgs],
    }


def cluster_nginx(nginx_factory, cluster, seed, orgs, http_extra="", **opts):
    """An NGINX whose only seed is `seed` (host:port) of `cluster`."""
    return nginx_factory(policy=cluster_policy(orgs), redis_directive="spend_cap_redis_cluster %s;" % seed,
                         http_extra=http_extra, **opts)


def daily_key(org):
    return counter_key(org, "spend", "key", "k-" + org, "daily")


def headers(org, tokens=(BODY_LEN, MAX_TOKENS), delay_ms=100):
    return {"authorization": "Bearer sk-cluster-" + org, "content-type": "application/json",
            "x-fake-input-tokens": str(tokens[0]), "x-fake-output-tokens": str(tokens[1]),
            "x-fake-delay-ms": str(delay_ms)}


async def fire(jobs):
    """jobs: [(url, headers)]; all at once."""
    body = body_of_length(BODY_LEN, max_tokens=MAX_TOKENS)
    limits = httpx.Limits(max_connections=len(jobs), max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        tasks = [client.post(url + "/v1/chat/completions", content=body, headers=h) for url, h in jobs]
        return await asyncio.gather(*tasks, return_exceptions=True)


def held(cluster, org):
    return [f for f in (cluster.read("sc:{%s}:reserved" % org, "HKEYS") or []) if not f.startswith(("@", "#"))]


def settlements(cluster, org):
    return int(cluster.get("sc:{%s}:settlements" % org) or 0)


def test_caps_exact_on_every_master_from_two_nodes(nginx_factory, redis_cluster, fake):
    """300 concurrent requests per org, orgs on all three masters, two NGINX nodes
    with one seed each: exactly the requests that fit pass, counters equal the
    settled costs, no reservation is left."""
    cluster = redis_cluster
    orgs = org_per_master(cluster)
    assert len({cluster.master_of_key("{%s}" % o) for o in orgs}) == 3
    seeds = cluster.seeds()
    a = cluster_nginx(nginx_factory, cluster, seeds[0], orgs)
    b = cluster_nginx(nginx_factory, cluster, seeds[-1], orgs)
    estimate = estimate_nanos("gpt-4o-mini", BODY_LEN, MAX_TOKENS)
    cost = openai_cost("gpt-4o-mini", BODY_LEN, MAX_TOKENS)
    assert cost == estimate
    seed_spend = usd_nanos(CAP) - FIT * estimate
    client = cluster.cluster_client()
    for org in orgs:
        client.set(daily_key(org), seed_spend)
    urls = itertools.cycle([a.url, b.url])
    jobs = [(next(urls), headers(org)) for org in orgs for _ in range(N)]
    responses = asyncio.run(fire(jobs))
    errors = [r for r in responses if isinstance(r, Exception)]
    assert not errors, errors[:3]
    for i, org in enumerate(orgs):
        mine = responses[i * N:(i + 1) * N]
        statuses = [r.status_code for r in mine]
        assert set(statuses) <= {200, 402}, (org, sorted(set(statuses)), [r.text for r in mine if r.status_code
                                                                            not in (200, 402)][:2])
        assert statuses.count(200) == FIT, (org, statuses.count(200))
    for org in orgs:
        wait_until(lambda: settlements(cluster, org) == FIT and not held(cluster, org), timeout=10)
        assert int(client.get(daily_key(org))) == usd_nanos(CAP)
        assert int(client.get(counter_key(org, "spend", "org", org, "monthly"))) == FIT * cost
        assert int(client.get(counter_key(org, "reqs", "key", "k-" + org, "daily"))) == FIT
    assert len(fake.requests()) == 3 * FIT
    for ng in (a, b):
        text = ng.error_text()
        assert "redis cluster of 3 masters" in text, text[-2000:]
    # Connections stay bounded: one per worker and master (2 nodes x 2 workers), none
    # to a replica (b's seed is one: its connection is closed once the map is read).
    masters = set(cluster.masters())
    replicas = [n.port for n in cluster.nodes if n.port not in masters]
    assert int(seeds[-1].split(":")[1]) in replicas
    assert wait_until(lambda: all(nginx_clients(cluster, p) == 0 for p in replicas), timeout=10), \
        {p: nginx_clients(cluster, p) for p in replicas}
    assert all(nginx_clients(cluster, p) == 4 for p in masters), {p: nginx_clients(cluster, p) for p in masters}


def nginx_clients(cluster, port):
    """The connections of NGINX workers to a node (the module names them spend-cap)."""
    c = cluster.node_client(port)
    try:
        return sum(1 for x in c.client_list() if x.get("name") == "spend-cap")
    finally:
        c.close()


# ----------------------------------------------------------------- under load

LOAD_TOKENS = (100, 50)
LOAD_COST = openai_cost("gpt-4o-mini", *LOAD_TOKENS)


class Load:
    """Requests of one org sent without pause by `threads` clients, round robin over
    the NGINX urls, until stop(); every answer recorded (status, when it came)."""

    def __init__(self, urls, org, threads=6):
        self.urls, self.org = urls, org
        self.results = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, i):
        body = body_of_length(BODY_LEN, max_tokens=MAX_TOKENS)
        h = headers(self.org, LOAD_TOKENS, delay_ms=5)
        n = i
        with httpx.Client(timeout=60) as client:
            while not self.stopping.is_set():
                url = self.urls[n % len(self.urls)]
                n += 1
                try:
                    status = client.post(url + "/v1/chat/completions", content=body, headers=h).status_code
                except httpx.HTTPError as e:
                    status = repr(e)
                with self.lock:
                    self.results.append((status, time.monotonic()))

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=90)
        return self.results

    def count(self, status=200, after=0.0):
        with self.lock:
            return sum(1 for s, t in self.results if s == status and t >= after)

    def wait_for(self, n, status=200, after=0.0, timeout=60):
        """Until n more answers with `status` came after `after` (monotonic time)."""
        assert wait_until(lambda: self.count(status, after) >= n, timeout=timeout), \
            "%d answers %s after %.1f: %d (all: %s)" % (n, status, after, self.count(status, after),
                                                         self.statuses())

    def statuses(self):
        with self.lock:
            return dict(Counter(s for s, _ in self.results))


def expect_exact(cluster, org, answered_2xx, fake=None, timeout=60):
    """Once every settlement has landed: the org's counters are exactly the costs of
    the 2xx answers, no reservation is held."""
    spend = counter_key(org, "spend", "key", "k-" + org, "daily")
    org_month = counter_key(org, "spend", "org", org, "monthly")
    reqs = counter_key(org, "reqs", "key", "k-" + org, "daily")

    def exact():
        return (int(cluster.get(spend) or 0) == answered_2xx * LOAD_COST
                and int(cluster.get(org_month) or 0) == answered_2xx * LOAD_COST
                and int(cluster.get(reqs) or 0) == answered_2xx and not held(cluster, org))
    ok = wait_until(exact, timeout=timeout)
    assert ok, ("counters are not the 2xx answers' costs: spend %s, org monthly %s, requests %s; want %d x %d = %d, "
                "%d requests; held %s" % (cluster.get(spend), cluster.get(org_month), cluster.get(reqs),
                                          answered_2xx, LOAD_COST, answered_2xx * LOAD_COST, answered_2xx,
                                          held(cluster, org)[:5]))


def _info_field(cluster, port, section, name, field):
    """A field of INFO's line `name:field=N,...` (redis-py parses it to a dict, or not)."""
    c = cluster.node_client(port)
    try:
        value = c.info(section).get(name, {})
    finally:
        c.close()
    if isinstance(value, str):
        value = dict(part.split("=", 1) for part in value.split(",") if "=" in part)
    return int(value.get(field, 0))


def error_count(cluster, port, code):
    return _info_field(cluster, port, "errorstats", "errorstat_" + code, "count")


def asking_calls(cluster, port):
    return _info_field(cluster, port, "commandstats", "cmdstat_asking", "calls")


def test_a_slot_migrated_under_load_asks_then_moves(nginx_factory, redis_cluster, fake):
    """The org's slot moves to another master (SETSLOT MIGRATING / IMPORTING, MIGRATE
    in batches, SETSLOT NODE) while its requests flow: the module retries TRYAGAIN,
    follows ASK (ASKING on the new owner) and then MOVED (the old owner refuses the
    slot), counters stay exact, and once the move is done no request gets a 5xx."""
    cluster = redis_cluster
    orgs = org_per_master(cluster)
    org = orgs[0]
    slot = key_slot("{%s}" % org)
    src = cluster.master_of_slot(slot)
    dst = next(p for p in cluster.masters() if p != src)
    seeds = cluster.seeds()
    a = cluster_nginx(nginx_factory, cluster, seeds[1], orgs)
    b = cluster_nginx(nginx_factory, cluster, seeds[2], orgs)
    load = Load([a.url, b.url], org).start()
    try:
        load.wait_for(30)
        half = error_count(cluster, src, "TRYAGAIN") + error_count(cluster, src, "ASK")
        asking = asking_calls(cluster, dst)
        cluster.begin_migration(slot, dst)
        assert cluster.move_keys(slot, batch=5) > 0
        # A request meets the slot half moved (some keys here, some there).
        assert wait_until(lambda: error_count(cluster, src, "TRYAGAIN") + error_count(cluster, src, "ASK") > half,
                          timeout=30), "no request met the slot half moved"
        cluster.move_keys(slot, max_batches=None)
        # Every key on the new owner, the slot still the old one's: ASK, then ASKING there.
        assert wait_until(lambda: asking_calls(cluster, dst) > asking, timeout=30), "no ASKING reached the new owner"
        moved = error_count(cluster, src, "MOVED")
        cluster.finish_migration(slot)
        done = time.monotonic()
        # The old owner now answers MOVED, once per worker at most before its map is new.
        assert wait_until(lambda: error_count(cluster, src, "MOVED") > moved, timeout=30), "no MOVED followed"
        load.wait_for(60, after=done)
    finally:
        results = load.stop()
    after = [s for s, t in results if t >= done]
    assert set(after) == {200}, "answers once the move was done: %s" % load.statuses()
    statuses = load.statuses()
    assert set(statuses) <= {200, 503}, statuses
    assert cluster.master_of_slot(slot) == dst
    expect_exact(cluster, org, load.count(200))
    assert len(fake.requests()) == load.count(200)


def failover_under_load(nginx_factory, cluster, fake, graceful):
    orgs = org_per_master(cluster)
    org = orgs[1]
    master = cluster.master_of_key("{%s}" % org)
    seeds = cluster.seeds()
    extra = "spend_cap_redis_replicas 1;"
    a = cluster_nginx(nginx_factory, cluster, seeds[0], orgs, http_extra=extra)
    b = cluster_nginx(nginx_factory, cluster, seeds[-1], orgs, http_extra=extra)
    load = Load([a.url, b.url], org).start()
    try:
        load.wait_for(50)
        if graceful:
            cluster.failover(cluster.replicas_of(master)[0])
        else:
            cluster.kill_master(master)
        promoted = time.monotonic()
        load.wait_for(50, after=promoted)
    finally:
        load.stop()
    statuses = load.statuses()
    assert set(statuses) <= {200, 503}, statuses
    if not graceful:
        # Its replica back (it rejoins as the new master's replica): WAIT 1 can
        # confirm what the new master holds, and the backlogs drain.
        cluster.restart_node(master)
    expect_exact(cluster, org, load.count(200))
    assert len(fake.requests()) == load.count(200)
    return statuses


def test_kill_9_of_a_master_under_load_loses_and_doubles_nothing(nginx_factory, redis_cluster, fake):
    """kill -9 of the org's master while its requests flow, with
    spend_cap_redis_replicas 1: its replica is promoted, and once the backlogs drain
    the counters are exactly the costs of every 2xx (503s in the failover window are
    allowed; a lost or doubled settlement is not)."""
    failover_under_load(nginx_factory, redis_cluster, fake, graceful=False)


def test_a_graceful_failover_under_load_loses_and_doubles_nothing(nginx_factory, redis_cluster, fake):
    failover_under_load(nginx_factory, redis_cluster, fake, graceful=True)


# ----------------------------------------------------------------- the API

def test_the_management_api_on_the_cluster(admin_factory, redis_cluster, fake):
    """An org, a project and a key created through one node work at once through the
    other; top-ups, usage and revocation too (global records in their own slots)."""
    from admin_support import chat
    cluster = redis_cluster
    orgs = org_per_master(cluster)
    seeds = cluster.seeds()
    one = admin_factory(policy=cluster_policy(orgs), redis_directive="spend_cap_redis_cluster %s;" % seeds[0])
    two = admin_factory(policy=cluster_policy(orgs), redis_directive="spend_cap_redis_cluster %s;" % seeds[4])
    assert one.put("/orgs/newco", {"limits": {"daily_usd": "5"}, "prepaid": True}).status_code == 201
    assert one.put("/projects/newco-app", {"org": "newco"}).status_code == 201
    key = one.post("/keys", {"project": "newco-app", "id": "nk"}).json()
    r = two.post("/orgs/newco/topups", {"amount_usd": "1.00", "idempotency_key": "t1"})
    assert r.status_code in (200, 201), r.text
    for node in (two, one):
        assert chat(node.nginx, key["secret"]).status_code == 200
    assert wait_until(lambda: one.get("/keys/nk/usage").json()["windows"][0]["requests"] == 2, timeout=10)
    assert {k["id"] for k in two.get("/keys?org=newco").json()["keys"]} == {"nk"}
    # the records sit on the masters of their own slots
    assert cluster.read("sc:keyid:nk", "TYPE") is not None
    assert two.delete("/keys/nk").status_code == 200
    for node in (one, two):
        for _ in range(4):
            assert chat(node.nginx, key["secret"]).status_code == 401
    # file orgs on every master answer too
    for org in orgs:
        assert two.get("/orgs/%s/usage" % org).status_code == 200


# ----------------------------------------------------------------- start and sweep

def test_seeds_all_unreachable_at_start_fail_closed_until_one_answers(nginx_factory, tmp_path, fake):
    """A cluster none of whose seeds answers at start: NGINX starts, says so in one
    clear line, answers 503 (fail closed), and serves as soon as the cluster is up."""
    from cluster_support import RedisCluster
    cluster = RedisCluster(tmp_path / "later")
    orgs = ["orgx"]
    ng = cluster_nginx(nginx_factory, cluster, " ".join(cluster.seeds()[:2]), orgs)
    try:
        r = httpx.post(ng.url + "/v1/chat/completions", content=body_of_length(BODY_LEN, max_tokens=MAX_TOKENS),
                       headers=headers("orgx"), timeout=30)
        assert r.status_code == 503 and r.json()["error"]["code"] == "spend_cap_unavailable", r.text
        assert wait_until(lambda: "no node of the redis cluster answers" in ng.error_text(), timeout=10)
        cluster.start()

        def served():
            r = httpx.post(ng.url + "/v1/chat/completions", content=body_of_length(BODY_LEN, max_tokens=MAX_TOKENS),
                           headers=headers("orgx", delay_ms=0), timeout=30)
            return r.status_code == 200
        assert wait_until(served, timeout=30)
        assert ng.proc.poll() is None and len(ng.worker_pids()) == 2
    finally:
        cluster.stop()


def test_the_sweeper_gives_back_a_killed_workers_reservations_on_the_cluster(nginx_factory, redis_cluster, fake):
    cluster = redis_cluster
    orgs = org_per_master(cluster)
    org = orgs[2]
    ng = cluster_nginx(nginx_factory, cluster, cluster.seeds()[0], orgs, http_extra="spend_cap_reservation_ttl 2s;")
    ng.expected_log_lines.append("exited on signal 9")
    h = dict(headers(org), **{"x-fake-hold": "sweep"})

    def one():
        try:
            httpx.post(ng.url + "/v1/chat/completions", content=body_of_length(BODY_LEN, max_tokens=MAX_TOKENS),
                       headers=h, timeout=60)
        except httpx.HTTPError:
            pass  # its worker was killed
    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    assert wait_until(lambda: len(held(cluster, org)) == 4, timeout=10)
    assert int(cluster.get(daily_key(org))) > 0
    for pid in ng.worker_pids():
        os.kill(pid, signal.SIGKILL)
    fake.release("sweep")
    for t in threads:
        t.join(60)
    # given back at the deadline by the respawned worker 0's sweeper, on the org's master
    assert wait_until(lambda: not held(cluster, org) and int(cluster.get(daily_key(org)) or 0) == 0, timeout=15)
    assert len(cluster.read("sc:{%s}:released" % org, "ZRANGE", 0, -1)) == 4


def test_nodes_announced_by_host_name_are_resolved_by_nginx(nginx_factory, redis_cluster, fake):
    """A cluster that announces its nodes by name (cluster-preferred-endpoint-type
    hostname) is reached through NGINX's resolver, never a blocking lookup; without a
    resolver, a clear line says what is missing."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from dns_server import DnsServer
    cluster = redis_cluster
    orgs = org_per_master(cluster)
    dns = DnsServer().start()
    try:
        for node in cluster.nodes:
            name = "n%d.cluster.test" % node.port
            dns.set(name, "127.0.0.1")
            c = cluster.node_client(node.port)
            c.config_set("cluster-announce-hostname", name)
            c.config_set("cluster-preferred-endpoint-type", "hostname")
            c.close()

        def by_name():
            c = cluster.node_client(cluster.nodes[0].port)
            try:
                return all(r[2][0].endswith(".cluster.test") for r in c.execute_command("CLUSTER", "SLOTS"))
            finally:
                c.close()
        assert wait_until(by_name, timeout=20)
        seed = cluster.seeds()[0]
        resolving = cluster_nginx(nginx_factory, cluster, seed, orgs,
                                  http_extra="resolver 127.0.0.1:%d valid=1s ipv6=off;" % dns.port)
        for org in orgs:
            r = httpx.post(resolving.url + "/v1/chat/completions",
                           content=body_of_length(BODY_LEN, max_tokens=MAX_TOKENS), headers=headers(org, delay_ms=0),
                           timeout=30)
            assert r.status_code == 200, r.text
        assert all(dns.query_count("n%d.cluster.test" % p) > 0 for p in cluster.masters())
        blind = cluster_nginx(nginx_factory, cluster, seed, orgs)
        r = httpx.post(blind.url + "/v1/chat/completions", content=body_of_length(BODY_LEN, max_tokens=MAX_TOKENS),
                       headers=headers(orgs[0], delay_ms=0), timeout=30)
        assert r.status_code == 503
        assert wait_until(lambda: "is a host name: set NGINX's resolver" in blind.error_text(), timeout=10)
    finally:
        dns.stop()
