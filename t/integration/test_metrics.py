"""spend_cap_status (SPEC section 9): Prometheus text summed over the workers of
one NGINX from its shared zone, read with python3-prometheus-client's parser and
checked by Debian's promtool; and the settlement backlog in the same zone, whose
writes outlive the workers that made them (kill -9) and land exactly once."""

import os
import shutil
import signal
import subprocess
import threading

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from support import (MODELS, SECRETS, chat_body, openai_cost, post, sha256_hex, wait_until, estimate_nanos,
                     read_counters, all_counter_keys, CHAINS)
from tcp_proxy import TcpProxy

COST = openai_cost("gpt-4o-mini", 10, 20)  # the fake provider's default usage
STATUS = "location = /metrics { spend_cap_status; }"


def policy(orgs=2):
    """Org o0 holds k0 (a cap it never reaches), capped (a cap below any estimate) and
    slow (1 rpm); orgs o1.. one key each."""
    p = {"models": {name: dict(m) for name, m in MODELS.items()}, "unknown_model": "reject",
         "default_max_output_tokens": 4096, "orgs": {}, "projects": {}, "keys": []}
    for i in range(orgs):
        p["orgs"]["o%d" % i] = {}
        p["projects"]["p%d" % i] = {"org": "o%d" % i}
        p["keys"].append({"id": "k%d" % i, "sha256": sha256_hex("sk-metrics-%d" % i), "project": "p%d" % i,
                          "limits": {"monthly_usd": "1000"}})
    p["keys"].append({"id": "capped", "sha256": sha256_hex("sk-metrics-capped"), "project": "p0",
                      "limits": {"monthly_usd": "0.000001"}})
    p["keys"].append({"id": "slow", "sha256": sha256_hex("sk-metrics-slow"), "project": "p0",
                      "limits": {"rpm": 1}})
    return p


def scrape(ng):
    r = httpx.get(ng.url + "/metrics", timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4"), r.headers
    return r.text


def samples(text):
    """{(name, frozenset(labels)): value} of every sample, by the official parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(parsed, name, **labels):
    return parsed.get((name, frozenset(labels.items())), 0)


def by_label(parsed, name, label):
    return {dict(k[1])[label]: v for k, v in parsed.items() if k[0] == name}


def promtool_check(text):
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing (Debian's prometheus package)")
        pytest.skip("promtool is missing (apt-get install prometheus)")
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), (r.stdout, r.stderr)


def no_inf_or_nan(text):
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        v = line.rsplit(" ", 1)[1]
        assert v not in ("+Inf", "-Inf", "NaN") and "e" not in v.lower(), line


def test_known_traffic_counted_over_two_workers(nginx_factory, redis_factory, redis, fake):
    rs = redis_factory()
    ng = nginx_factory(policy=policy(), redis_port=rs.port, server_extra=STATUS, workers=2)
    ok = reserved = 0

    def send(secret, status):
        nonlocal ok, reserved
        r = post(ng.url, "/v1/chat/completions", chat_body(), secret)
        assert r.status_code == status, r.text
        if status == 200:  # reserved at its estimate, then settled at its usage
            ok += 1
            reserved += estimate_nanos("gpt-4o-mini", fake.requests()[-1]["body_len"], 100)

    for _ in range(6):
        send("sk-metrics-0", 200)
    send("sk-metrics-capped", 402)
    send("sk-metrics-slow", 200)
    send("sk-metrics-slow", 429)
    send("sk-metrics-wrong", 401)
    r = httpx.post(ng.url + "/v1/chat/completions", content=b"{not json",
                   headers={"authorization": "Bearer sk-metrics-0", "content-type": "application/json"}, timeout=10)
    assert r.status_code == 400, r.text
    # every answer's log line is written (the log phase counts) before the scrape
    assert wait_until(lambda: len(ng.log_entries()) >= ok + 4, timeout=10)

    text = scrape(ng)
    promtool_check(text)
    no_inf_or_nan(text)
    m = samples(text)
    assert by_label(m, "spend_cap_requests_total", "decision") == {
        "allow": ok, "block": 2, "reject": 2, "dry_run_block": 0, "fail_open": 0, "error": 0}
    assert value(m, "spend_cap_blocked_total", scope="key", limit="monthly_usd") == 1
    assert value(m, "spend_cap_blocked_total", scope="key", limit="rpm") == 1
    assert sum(by_label(m, "spend_cap_blocked_total", "limit").values()) == 2
    # the cost is exactly what Redis settled (below); every estimate reserved counted
    assert value(m, "spend_cap_cost_nanousd_total") == ok * COST
    assert value(m, "spend_cap_reserved_nanousd_total") == reserved
    assert value(m, "spend_cap_tokens_total", kind="input") == ok * 10
    assert value(m, "spend_cap_tokens_total", kind="output") == ok * 20
    assert value(m, "spend_cap_settlements_total", **{"from": "usage"}) == ok
    assert value(m, "spend_cap_settlements_total", **{"from": "reservation"}) == 0
    # the histogram observed each reserve (allowed and blocked), nothing else
    assert value(m, "spend_cap_redis_seconds_count") == ok + 2
    assert value(m, "spend_cap_redis_seconds_bucket", le="+Inf") == ok + 2
    assert 0 < value(m, "spend_cap_redis_seconds_sum") < 60
    assert value(m, "spend_cap_redis_up") == 1
    assert value(m, "spend_cap_settlement_backlog") == 0
    assert value(m, "spend_cap_org_requests_total", org="o0", decision="allow") == ok
    assert value(m, "spend_cap_org_requests_total", org="_other", decision="reject") == 1  # 401: no org
    assert value(m, "spend_cap_org_cost_nanousd_total", org="o0") == ok * COST
    info = [k for k in m if k[0] == "spend_cap_info"]
    assert len(info) == 1 and dict(info[0][1])["version"] and dict(info[0][1])["nginx"]
    # spent in Redis as counted here
    o0 = all_counter_keys({"key": "k0", "project": "p0", "org": "o0"}, "spend")
    want = {k: (6 if ":key:" in k else ok) * COST for k in o0}  # (slow's request is o0's and p0's too)
    assert wait_until(lambda: read_counters(rs.client(), o0) == want, timeout=10), read_counters(rs.client(), o0)

    # Redis stopped: down, the errors counted, a 503 counted as the gateway's error
    rs.stop()
    assert wait_until(lambda: value(samples(scrape(ng)), "spend_cap_redis_up") == 0, timeout=10)
    r = post(ng.url, "/v1/chat/completions", chat_body(), "sk-metrics-0")
    assert r.status_code == 503, r.text
    assert wait_until(lambda: value(samples(scrape(ng)), "spend_cap_requests_total", decision="error") == 1,
                      timeout=10)
    text = scrape(ng)
    promtool_check(text)
    no_inf_or_nan(text)
    m = samples(text)
    assert value(m, "spend_cap_redis_up") == 0
    assert value(m, "spend_cap_redis_errors_total", kind="connection") >= 1
    assert value(m, "spend_cap_requests_total", decision="allow") == ok  # nothing else moved


def test_org_labels_bounded_their_sum_the_total(nginx_factory, redis, fake):
    ng = nginx_factory(policy=policy(orgs=7), server_extra=STATUS, http_extra="spend_cap_status_orgs 3;",
                       workers=2)
    sent = 0
    for round_ in range(2):
        for i in range(7):
            r = post(ng.url, "/v1/chat/completions", chat_body(), "sk-metrics-%d" % i)
            assert r.status_code == 200, r.text
            sent += 1
    assert wait_until(lambda: len(ng.log_entries()) >= sent, timeout=10)
    text = scrape(ng)
    promtool_check(text)
    m = samples(text)
    requests = by_label(m, "spend_cap_org_requests_total", "org")  # (decision allow last wins: sum below)
    orgs = {dict(k[1])["org"] for k in m if k[0] == "spend_cap_org_requests_total"}
    assert len(orgs) == 4 and "_other" in orgs, orgs
    total = sum(v for k, v in m.items() if k[0] == "spend_cap_org_requests_total")
    assert total == value(m, "spend_cap_requests_total", decision="allow") == sent
    cost = sum(v for k, v in m.items() if k[0] == "spend_cap_org_cost_nanousd_total")
    assert cost == value(m, "spend_cap_cost_nanousd_total") == sent * COST
    # the first three keep their labels (two requests each); the four others share _other
    named = [o for o in orgs if o != "_other"]
    assert all(value(m, "spend_cap_org_requests_total", org=o, decision="allow") == 2 for o in named)
    assert value(m, "spend_cap_org_requests_total", org="_other", decision="allow") == 8
    assert requests


def test_totals_survive_a_reload(nginx_factory, redis, fake):
    ng = nginx_factory(policy=policy(), server_extra=STATUS, workers=2)
    for _ in range(3):
        assert post(ng.url, "/v1/chat/completions", chat_body(), "sk-metrics-0").status_code == 200
    assert wait_until(lambda: len(ng.log_entries()) >= 3, timeout=10)
    before = samples(scrape(ng))
    assert value(before, "spend_cap_requests_total", decision="allow") == 3
    old = set(ng.worker_pids())
    ng.reload()
    assert wait_until(lambda: old.isdisjoint(ng.worker_pids()) and len(ng.worker_pids()) == 2, timeout=20)
    after = samples(scrape(ng))
    assert value(after, "spend_cap_requests_total", decision="allow") == 3
    assert value(after, "spend_cap_cost_nanousd_total") == 3 * COST
    assert value(after, "spend_cap_org_requests_total", org="o0", decision="allow") == 3


@pytest.mark.parametrize("outage", ["blackhole", "refused"])
def test_settlements_of_killed_workers_land_exactly_once(nginx_factory, redis_factory, redis, fake, outage):
    """Settlements wait for Redis, black-holed (sent, never answered: they may have
    landed) or refusing connections (never sent); the workers are killed with kill -9;
    Redis comes back: the node's new workers send what the dead ones left in the shared
    backlog, each counted once, and the gauge returns to 0."""
    rs = redis_factory()
    proxy = TcpProxy(rs.port).start()
    try:
        ng = nginx_factory(policy=policy(), redis_port=proxy.port, server_extra=STATUS, workers=2)
        ng.expected_log_lines.append("exited on signal 9")
        warm = 0
        for _ in range(4):
            assert post(ng.url, "/v1/chat/completions", chat_body(), "sk-metrics-0").status_code == 200
            warm += 1
        keys = all_counter_keys({"key": "k0", "project": "p0", "org": "o0"}, "spend")
        assert wait_until(lambda: set(read_counters(rs.client(), keys).values()) == {warm * COST}, timeout=10)

        n = 12
        results = [None] * n

        def one(i):
            try:
                results[i] = post(ng.url, "/v1/chat/completions", chat_body(), "sk-metrics-0",
                                  headers={"x-fake-hold": "held"}, timeout=60)
            except Exception as e:
                results[i] = e

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        assert wait_until(lambda: len(fake.requests()) >= warm + n, timeout=15)
        # reserved: the capped counter holds the estimates
        assert max(read_counters(rs.client(), keys).values()) > warm * COST
        if outage == "blackhole":
            proxy.blackhole = True
        else:
            proxy.stop()
            assert wait_until(lambda: "cannot connect to redis" in ng.error_text(), timeout=10)
        fake.release("held")
        for t in threads:
            t.join(60)
        assert all(getattr(r, "status_code", None) == 200 for r in results), results
        # every settlement waits in the zone
        assert wait_until(lambda: value(samples(scrape(ng)), "spend_cap_settlement_backlog") == n, timeout=15)
        for pid in ng.worker_pids():
            os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: len(ng.worker_pids()) == 2, timeout=15)
        # (the zone outlived them: the new workers report what waits)
        assert value(samples(scrape(ng)), "spend_cap_settlement_backlog") == n
        if outage == "blackhole":
            proxy.heal()
        else:
            proxy = TcpProxy(rs.port, port=proxy.port).start()
        assert wait_until(lambda: value(samples(scrape(ng)), "spend_cap_settlement_backlog") == 0, timeout=30)
        # each settled once at its real cost: no reservation left, nothing twice
        want = (warm + n) * COST
        assert wait_until(lambda: set(read_counters(rs.client(), keys).values()) == {want}, timeout=15), \
            read_counters(rs.client(), keys)
        reqs = all_counter_keys({"key": "k0", "project": "p0", "org": "o0"}, "reqs")
        assert set(read_counters(rs.client(), reqs).values()) == {warm + n}
        assert ng.error_text().count("left in the shared backlog") >= 1
        m = samples(scrape(ng))
        assert value(m, "spend_cap_settlements_total", **{"from": "usage"}) == warm + n
    finally:
        proxy.stop()
