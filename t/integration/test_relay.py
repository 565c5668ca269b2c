"""spend-cap-relay (SPEC section 8) with real processes: a real Redis, real NGINX
producing events through the management API, the relay, and a webhook receiver on
loopback. Signatures are checked by the official standardwebhooks npm package and by
an independent HMAC; order, retries, dead letters, 410, filters, Slack, crashes,
two relays and 2,000 orgs."""

import json
import os
import random
import statistics
import subprocess
import time

import pytest

from admin_support import Api  # noqa: F401  (the admin_factory fixture's)
from cluster_support import redis_cluster_factory  # noqa: F401
from relay_support import (OLD_SECRET, RELAY_BIN, SECRET, body, check, receiver, relay_factory,  # noqa: F401
                           signature_ok, xadd)
from support import REPO, free_port, wait_until

FAST = {"first": "100ms", "max": "400ms", "give_up_after": "1h"}
SDK = REPO / "t" / "sdk"


def endpoint(rcv, path="/hooks", name="billing", **kw):
    e = {"name": name, "url": rcv.url + path}
    if kw.get("format") != "slack":
        e["secret"] = SECRET
    e.update(kw)
    return e


def verify_with_sdk(deliveries, secret=SECRET):
    """The official standardwebhooks package (t/sdk, npm ci) verifies each delivery."""
    if not (SDK / "node_modules" / "standardwebhooks").exists():
        if os.environ.get("CI"):
            pytest.fail("t/sdk/node_modules is missing (npm ci in t/sdk)")
        pytest.skip("npm ci in t/sdk first")
    r = subprocess.run(["node", str(SDK / "verify_webhooks.mjs")], input=json.dumps(
        {"secret": secret, "deliveries": [{"headers": d["headers"], "body": d["body"]} for d in deliveries]}),
        capture_output=True, text=True, timeout=60, cwd=SDK)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def ids_of(entries):
    return [e["headers"].get("webhook-id") for e in entries]


def test_signed_deliveries_of_real_events_verify(admin_factory, relay_factory, receiver, redis):
    api = admin_factory()
    relay = relay_factory([endpoint(receiver)], retry=FAST,
                          policy=api.nginx.policy_path)
    receiver.plan("/hooks", fail=2, status=503)
    for cap in ("700", "800"):
        r = api.put("/orgs/acme/limits", {"monthly_usd": cap})
        assert r.status_code == 200, r.text
    assert wait_until(lambda: len(receiver.delivered("/hooks")) == 2, timeout=15), receiver.received()
    every = receiver.received("/hooks")
    assert len(every) == 4  # two refused, then both delivered
    # the same webhook-id on every attempt of one event
    assert ids_of(every)[:3] == [every[0]["headers"]["webhook-id"]] * 3
    delivered = receiver.delivered("/hooks")
    for d in delivered:
        b = body(d)
        assert b["type"] == "limits_changed" and b["data"]["org"] == "acme"
        assert d["headers"]["webhook-id"] == "acme:" + b["data"]["event_id"]
        assert abs(int(d["headers"]["webhook-timestamp"]) - time.time()) < 300
        assert d["headers"]["content-type"] == "application/json"
        assert signature_ok(d)
    result = verify_with_sdk(every)
    assert result == {"verified": 4, "errors": []}, result
    # events in stream order, as the API's GET .../events lists them
    events = api.get("/orgs/acme/events?count=50").json()["events"]
    listed = [e["id"] for e in events if e.get("type") == "limits_changed"]
    assert [body(d)["data"]["event_id"] for d in delivered] == listed[-2:]
    assert relay.stop() == 0


def test_rotating_secret_signs_twice(relay_factory, receiver, redis):
    relay_factory([{"name": "billing", "url": receiver.url + "/hooks", "secrets": [SECRET, OLD_SECRET]}],
                  retry=FAST)
    xadd(redis, "rot", 1)  # (an org new to the relay: the wake-up names it)
    assert wait_until(lambda: len(receiver.delivered("/hooks")) == 1, timeout=15)
    d = receiver.delivered("/hooks")[0]
    assert len(d["headers"]["webhook-signature"].split(" ")) == 2
    assert signature_ok(d, SECRET) and signature_ok(d, OLD_SECRET)
    assert verify_with_sdk([d], SECRET)["verified"] == 1
    assert verify_with_sdk([d], OLD_SECRET)["verified"] == 1


def test_thirty_events_in_order_through_failures(relay_factory, receiver, redis):
    relay = relay_factory([endpoint(receiver)], retry=FAST)
    receiver.plan("/hooks", fail=3, status=500)
    ids = xadd(redis, "order", 30)
    assert wait_until(lambda: len(receiver.delivered("/hooks")) >= 30, timeout=30), len(receiver.delivered())
    delivered = receiver.delivered("/hooks")
    assert ids_of(delivered) == ["order:" + i for i in ids]  # all, in stream order, no gap, none twice
    failed = [e for e in receiver.received("/hooks") if e["status"] != 200]
    assert ids_of(failed) == ["order:" + ids[0]] * 3
    m = relay.metrics()
    assert m['spend_cap_relay_delivered_total{endpoint="billing"}'] == 30
    assert m['spend_cap_relay_failed_total{endpoint="billing",status="500"}'] == 3
    assert "attempt 1 failed (HTTP 500)" in relay.text()
    assert SECRET not in relay.text()


def test_retry_after_is_honoured(relay_factory, receiver, redis):
    relay_factory([endpoint(receiver)], retry={"first": "100ms", "max": "200ms", "give_up_after": "1h"})
    receiver.plan("/hooks", fail=1, status=429, retry_after=2)
    xadd(redis, "patient", 1)
    assert wait_until(lambda: len(receiver.delivered("/hooks")) == 1, timeout=20)
    first, second = receiver.received("/hooks")[:2]
    assert second["time"] - first["time"] >= 1.9  # not the 100 ms backoff


def test_relay_killed_mid_stream_resumes(relay_factory, receiver, redis):
    relay = relay_factory([endpoint(receiver)], retry=FAST)
    receiver.plan("/hooks", fail=0, delay_ms=150)
    ids = xadd(redis, "crash", 20)
    assert wait_until(lambda: len(receiver.received("/hooks")) >= 5, timeout=20)
    relay.kill()
    seen = len(receiver.received("/hooks"))
    again = relay_factory([endpoint(receiver)], retry=FAST)
    assert wait_until(lambda: {"crash:" + i for i in ids} <= set(ids_of(receiver.received("/hooks"))), timeout=30)
    assert wait_until(lambda: len(set(ids_of(receiver.received("/hooks")))) == 20, timeout=10)
    got = ids_of(receiver.received("/hooks"))
    # in order; sent twice at most the one in flight at the kill
    firsts = sorted(set(got), key=got.index)
    assert firsts == ["crash:" + i for i in ids]
    assert len(got) - 20 <= 1, (len(got), seen)
    assert again.stop() == 0


def test_filters_dead_letters_slack_and_gone(relay_factory, receiver, redis):
    relay = relay_factory([
        endpoint(receiver, "/only", name="only", types=["spend_cap_reached"], orgs=["f1"]),
        endpoint(receiver, "/dead", name="dead"),
        endpoint(receiver, "/gone", name="gone"),
        endpoint(receiver, "/slack", name="chat", format="slack"),
    ], retry={"first": "100ms", "max": "200ms", "give_up_after": "1s"})
    receiver.plan("/dead", fail=1000, status=500)
    receiver.plan("/gone", forever=1, status=410)
    for org in ("f1", "f2"):
        redis.sadd("sc:orgs", org)
        redis.xadd("sc:{%s}:events" % org, {"type": "topup", "amount_nanousd": "5"})
        redis.xadd("sc:{%s}:events" % org, {"type": "spend_cap_reached", "scope": "key", "id": "k1",
                                              "window": "monthly", "period": "2026-12", "spent": "10000000000",
                                              "cap": "10000000000"})
        redis.publish("sc:events", org)
    # filters: only f1's spend_cap_reached
    assert wait_until(lambda: len(receiver.delivered("/slack")) == 4, timeout=20)
    only = receiver.delivered("/only")
    assert [(body(e)["type"], body(e)["data"]["org"]) for e in only] == [("spend_cap_reached", "f1")]
    # slack: one readable line, unsigned
    texts = [json.loads(e["body"])["text"] for e in receiver.delivered("/slack")]
    assert any("spend_cap_reached" in t and "10.000000" in t for t in texts), texts
    assert all("webhook-signature" not in e["headers"] for e in receiver.delivered("/slack"))
    # dead letters after give_up_after, then delivery goes on
    assert wait_until(lambda: redis.xlen("sc:{f1}:events:dead:dead") == 2 and redis.xlen(
        "sc:{f2}:events:dead:dead") == 2, timeout=30)
    dead = redis.xrange("sc:{f1}:events:dead:dead")
    assert dead[0][1]["last_status"] == "500" and dead[0][1]["type"] == "topup"
    receiver.plan("/dead", fail=0)
    xadd(redis, "f1", 1, prefix="after")
    assert wait_until(lambda: len(receiver.delivered("/dead")) == 1, timeout=20)
    assert relay.metrics()['spend_cap_relay_dead_total{endpoint="dead"}'] == 4
    # 410: that endpoint is off for the org (one attempt each org), the others go on
    gone = receiver.received("/gone")
    assert sorted(body(e)["data"]["org"] for e in gone) == ["f1", "f2"]
    assert relay.text().count("410 Gone") == 2
    assert wait_until(lambda: len(receiver.delivered("/slack")) == 5, timeout=20)
    assert len(receiver.received("/gone")) == 2


def test_two_relays_keep_order_and_take_over(relay_factory, receiver, redis):
    eps = [endpoint(receiver)]
    a = relay_factory(eps, retry=FAST)
    b = relay_factory(eps, retry=FAST)
    receiver.plan("/hooks", fail=0, delay_ms=100)
    orgs = ["two%d" % i for i in range(3)]
    ids = {org: xadd(redis, org, 15) for org in orgs}
    assert wait_until(lambda: len(receiver.delivered("/hooks")) >= 6, timeout=20)
    holders = {org: redis.get("sc:{%s}:relay:lease" % org) for org in orgs}
    victim = a if any(h and str(a.proc.pid) in h for h in holders.values()) else b
    victim.kill()
    killed_at = time.time()
    assert wait_until(lambda: len(set(ids_of(receiver.delivered("/hooks")))) == 45, timeout=15)
    took = time.time() - killed_at
    got = ids_of(receiver.delivered("/hooks"))
    for org in orgs:
        mine = [i for i in got if i.startswith(org + ":")]
        firsts = sorted(set(mine), key=mine.index)
        assert firsts == [org + ":" + i for i in ids[org]], org
    print("the surviving relay finished %.1f s after the kill" % took)
    assert took < 15 * 10


def test_two_thousand_orgs_new_event_within_two_seconds(admin_factory, relay_factory, receiver, redis):
    api = admin_factory()
    n = 2000
    for i in range(n):
        r = api.put("/orgs/m%d" % i, {})
        assert r.status_code in (200, 201), r.text
    assert redis.scard("sc:orgs") >= n
    relay = relay_factory([endpoint(receiver)], retry=FAST)
    assert wait_until(lambda: all(redis.exists("sc:{m%d}:events" % i) for i in (0, n // 2, n - 1)), timeout=30)
    latencies = []
    for round_ in range(5):
        org = "m%d" % random.randrange(n)
        before = len(receiver.delivered("/hooks"))
        sent = time.time()
        r = api.put("/orgs/%s/limits" % org, {"monthly_usd": str(100 + round_)})
        assert r.status_code == 200, r.text
        assert wait_until(lambda: len(receiver.delivered("/hooks")) > before, timeout=20)
        latencies.append(receiver.delivered("/hooks")[-1]["time"] - sent)
    print("2,000 orgs: a new event arrived in %s s" % ", ".join("%.2f" % x for x in latencies))
    assert statistics.median(latencies) < 2.0, latencies
    assert relay.stop() == 0


def test_check_and_start_errors(tmp_path, redis_server):
    good = tmp_path / "good.yaml"
    good.write_text("redis: 127.0.0.1:%d\nendpoints:\n  - name: b\n    url: http://127.0.0.1:9/x\n"
                    "    secret: %s\n" % (redis_server.port, SECRET))
    rc, out = check(good)
    assert rc == 0 and "ok" in out, out
    bad = tmp_path / "bad.yaml"
    bad.write_text("redis: 127.0.0.1:%d\nendpoints:\n  - name: b\n    url: http://127.0.0.1:9/x\n"
                   "    secret: whsec_!!!notbase64\n" % redis_server.port)
    rc, out = check(bad)
    assert rc != 0 and "bad.yaml:5" in out and "notbase64" not in out, out
    # an unreachable Redis at start: one line, non-zero
    down = tmp_path / "down.yaml"
    down.write_text(good.read_text().replace(str(redis_server.port), str(free_port())))
    r = subprocess.run([str(RELAY_BIN), "-c", str(down)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and "redis" in r.stderr, r.stderr


def test_relay_follows_a_redis_cluster(redis_cluster_factory, relay_factory, receiver):
    """Orgs on every master: each org's stream, group, lease and dead letters sit in its
    slot; the wake-ups of every master reach the relay (a cluster broadcasts PUBLISH)."""
    cluster = redis_cluster_factory(replicas=0)
    relay = relay_factory([endpoint(receiver)], retry=FAST, cluster=cluster.seeds())
    c = cluster.cluster_client()
    orgs = ["c%d" % i for i in range(6)]
    assert len({cluster.master_of_key("sc:{%s}:events" % o) for o in orgs}) > 1
    ids = {}
    for org in orgs:
        c.sadd("sc:orgs", org)
        ids[org] = [c.xadd("sc:{%s}:events" % org, {"type": "topup", "amount_nanousd": str(i)}) for i in range(3)]
        c.publish("sc:events", org)
    assert wait_until(lambda: len(receiver.delivered("/hooks")) == 18, timeout=30), relay.text()
    got = ids_of(receiver.delivered("/hooks"))
    for org in orgs:
        assert [i for i in got if i.startswith(org + ":")] == [org + ":" + i for i in ids[org]]
    c.close()
    assert relay.stop() == 0


def test_sigterm_finishes_the_attempt_in_flight(relay_factory, receiver, redis):
    relay = relay_factory([endpoint(receiver)], retry=FAST)
    receiver.plan("/hooks", fail=0, delay_ms=2000)
    xadd(redis, "term", 1)
    assert wait_until(lambda: len(receiver.received("/hooks")) == 1, timeout=15)  # the answer is 2 s away
    started = time.time()
    assert relay.stop() == 0
    assert time.time() - started >= 1.0, "it did not wait for the answer"
    # acknowledged before it exited: nothing pending, nothing to send again
    assert redis.xpending("sc:{term}:events", "billing")["pending"] == 0
    assert redis.get("sc:{term}:relay:lease") is None  # given back


def test_delivery_goes_on_after_redis_loses_its_data(relay_factory, receiver, redis):
    """A Redis restarted without persistence (here: FLUSHALL) loses the groups and the
    lease: the relay makes the group again where the endpoint started and goes on."""
    relay_factory([endpoint(receiver)], retry=FAST)
    xadd(redis, "lost", 1, prefix="before")
    assert wait_until(lambda: len(receiver.delivered("/hooks")) == 1, timeout=15)
    redis.flushall()
    xadd(redis, "lost", 1, prefix="after")
    assert wait_until(lambda: len(receiver.delivered("/hooks")) == 2, timeout=20)
    assert [body(e)["data"]["idempotency_key"] for e in receiver.delivered("/hooks")] == ["before0", "after0"]
