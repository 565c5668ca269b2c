"""The management API (SPEC section 7) through a real NGINX and a real Redis: every
answer checked against docs/openapi.yaml, changes seen by the very next request on
every node that shares the Redis."""

import os
import time

import httpx
import pytest

from admin_support import PREFIX, TOKEN, Api, chat  # (the fixtures admin_factory and api: conftest)
from support import (SECRETS, RedisMonitor, chat_body, counter_key, is_barrier, is_reserve, is_settle, is_sweep,
                     monitor_barrier, openai_cost, redis_int, sha256_hex, usd_nanos, wait_until)


def settled_usage(api, key_id, spent):
    """Waits for the key's monthly spend to reach `spent` (settlement is asynchronous)."""
    def monthly():
        return api.get("/keys/%s/usage" % key_id).json()["windows"][1]["spent_nanousd"]
    assert wait_until(lambda: monthly() == spent, timeout=3)
    return api.get("/keys/%s/usage" % key_id).json()


# ---------------------------------------------------------------- keys

def test_a_created_key_works_at_once_and_its_usage_is_the_settled_cost(api, redis):
    r = api.post("/keys", {"project": "acme-prod", "id": "user_1", "name": "Ann's \"bot\"",
                           "limits": {"monthly_usd": "5", "daily_usd": 1.5, "rpm": 100}})
    assert r.status_code == 201, r.text
    key = r.json()
    assert key["id"] == "user_1" and key["org"] == "acme" and key["project"] == "acme-prod"
    assert key["source"] == "api" and key["revoked"] is False and key["name"] == "Ann's \"bot\""
    assert key["limits"] == {"daily_usd": "1.50", "monthly_usd": "5.00", "rpm": 100}
    secret = key["secret"]
    assert secret.startswith("sk-sc-") and len(secret) == 6 + 43

    ok = chat(api.nginx, secret, **{"x-fake-input-tokens": "1000", "x-fake-output-tokens": "200"})
    assert ok.status_code == 200, ok.text
    assert ok.headers["x-spend-scope"] == "key:daily"
    cost = openai_cost("gpt-4o-mini", prompt=1000, completion=200)
    usage = settled_usage(api, "user_1", cost)
    daily, monthly, lifetime = usage["windows"]
    assert usage["scope"] == "key" and usage["org"] == "acme"
    assert daily["spent_nanousd"] == monthly["spent_nanousd"] == lifetime["spent_nanousd"] == cost
    assert daily["cap_nanousd"] == usd_nanos("1.5") and daily["remaining_nanousd"] == usd_nanos("1.5") - cost
    assert daily["requests"] == 1 and daily["tokens"] == 1200
    assert lifetime["cap_nanousd"] is None and lifetime["period"] is None
    assert usage["rates"]["rpm"]["used"] == 1 and usage["rates"]["rpm"]["cap"] == 100
    assert usage["rates"]["tpm"] is None

    # the same key, read back: never its secret
    got = api.get("/keys/user_1").json()
    assert "secret" not in got and got["created_at"] is not None
    # an audit event
    events = api.get("/orgs/acme/events").json()["events"]
    assert [e["type"] for e in events] == ["key_created"] and events[0]["id"]
    # only the secret's hash is stored
    for k in redis.keys("*"):
        t = redis.type(k)
        dump = repr(redis.hgetall(k)) if t == "hash" else repr(redis.get(k)) if t == "string" else ""
        assert secret not in dump and secret not in k
    assert redis.exists("sc:key:" + sha256_hex(secret))


def test_a_key_created_on_one_node_works_on_another_and_revocation_holds_on_both(admin_factory):
    one, two = admin_factory(), admin_factory()
    secret = one.post("/keys", {"project": "acme-prod", "id": "shared"}).json()["secret"]
    assert chat(two.nginx, secret).status_code == 200
    assert chat(one.nginx, secret).status_code == 200
    # both nodes have it cached now; a revocation on one holds for the next request on both
    r = two.delete("/keys/shared")
    assert r.status_code == 200 and r.json()["revoked"] is True
    for node in (one, two):
        for _ in range(4):  # every worker
            refused = chat(node.nginx, secret)
            assert refused.status_code == 401 and refused.json()["error"]["code"] == "api_key_revoked"


def test_rotation_refuses_the_old_secret_and_keeps_the_counters(admin_factory):
    one, two = admin_factory(), admin_factory()
    old = one.post("/keys", {"project": "acme-prod", "id": "rot"}).json()["secret"]
    assert chat(two.nginx, old).status_code == 200
    rotated = one.post("/keys/rot/rotate", {}).json()
    new = rotated["secret"]
    assert new != old and rotated["id"] == "rot"
    for node in (one, two):
        assert chat(node.nginx, new).status_code == 200
        for _ in range(3):
            assert chat(node.nginx, old).status_code == 401
    assert wait_until(lambda: one.get("/keys/rot/usage").json()["windows"][0]["requests"] == 3, timeout=3)
    # a grace period: the old secret still works until it ends
    newer = one.post("/keys/rot/rotate", {"grace_seconds": 60}).json()["secret"]
    assert chat(two.nginx, new).status_code == 200
    assert chat(two.nginx, newer).status_code == 200


def test_a_limit_put_blocks_the_next_request_and_deleting_it_restores_the_files(api):
    secret = SECRETS["k1"]
    assert chat(api.nginx, secret).status_code == 200
    r = api.put("/keys/k1/limits", {"monthly_usd": "0.000001"})
    assert r.status_code == 200 and r.json()["limits"] == {"monthly_usd": "0.000001"}
    assert r.json()["source"] == "file"
    blocked = chat(api.nginx, secret)
    assert blocked.status_code == 402 and blocked.json()["error"]["code"] == "spend_limit_exceeded"
    assert blocked.json()["error"]["scope"] == "key" and blocked.json()["error"]["window"] == "monthly"
    r = api.delete("/keys/k1/limits")
    assert r.status_code == 200 and r.json()["limits"]["monthly_usd"] == "10.00"
    assert chat(api.nginx, secret).status_code == 200


def test_a_file_key_revoked_through_the_api(api):
    assert chat(api.nginx, SECRETS["k_open"]).status_code == 200
    r = api.delete("/keys/k_open")
    assert r.status_code == 200 and r.json()["revoked"] is True and r.json()["source"] == "file"
    refused = chat(api.nginx, SECRETS["k_open"])
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "api_key_revoked"
    # the other keys of its org are unaffected
    assert chat(api.nginx, SECRETS["k1"]).status_code == 200


def test_an_org_project_and_key_created_only_through_the_api(api):
    r = api.put("/orgs/newco", {"limits": {"daily_usd": "1"}})
    assert r.status_code == 201 and r.json()["source"] == "api"
    assert api.put("/orgs/newco", {"limits": {"daily_usd": "1"}}).status_code == 200
    r = api.put("/projects/newco-app", {"org": "newco", "limits": {"monthly_usd": "3"}})
    assert r.status_code == 201 and r.json()["org"] == "newco"
    key = api.post("/keys", {"project": "newco-app", "limits": {"daily_requests": 2}}).json()
    assert key["org"] == "newco" and key["id"].startswith("key_")
    assert chat(api.nginx, key["secret"]).status_code == 200
    assert chat(api.nginx, key["secret"]).status_code == 200
    third = chat(api.nginx, key["secret"])
    assert third.status_code == 402 and third.json()["error"]["code"] == "request_limit_exceeded"
    assert api.get("/projects/newco-app").json()["limits"] == {"monthly_usd": "3.00"}
    listed = api.get("/keys?project=newco-app").json()["keys"]
    assert [k["id"] for k in listed] == [key["id"]]
    assert {k["id"] for k in api.get("/keys?org=acme").json()["keys"]} >= {"k1", "k_open"}


def test_budgets_are_in_enforcement_order_and_the_binding_one_is_x_spend_scope(api):
    ok = chat(api.nginx, SECRETS["k1"])
    assert ok.status_code == 200
    budgets = api.get("/keys/k1/budgets").json()["budgets"]
    assert [(b["scope"], b["window"]) for b in budgets] == [
        (s, w) for s in ("key", "project", "org") for w in ("daily", "monthly", "lifetime")]
    binding = [b for b in budgets if b["binding"]]
    assert len(binding) == 1
    assert "%s:%s" % (binding[0]["scope"], binding[0]["window"]) == ok.headers["x-spend-scope"]


def test_errors_of_the_api(api):
    assert api.post("/keys", {"project": "acme-prod", "id": "k1"}).status_code == 409
    assert api.post("/keys", {"project": "nope"}).status_code == 404
    bad = api.post("/keys", {"project": "acme-prod", "limits": {"monthly_usd": "-1"}})
    assert bad.status_code == 400 and "monthly_usd" in bad.json()["error"]["message"]
    assert api.post("/keys", raw="{not json").status_code == 400
    assert api.get("/keys/nobody").status_code == 404
    assert api.get("/nothing/here").status_code == 404
    r = api.call("PATCH", "/keys/k1")
    assert r.status_code == 405 and r.headers["allow"], (r.status_code, r.text, dict(r.headers))
    assert api.get("/keys/k1", token="wrong").status_code == 401
    assert api.get("/keys/k1", token="").status_code == 401
    # a key's own secret is not an admin token
    assert api.get("/keys/k1", token=SECRETS["k1"]).status_code == 401
    big = api.post("/keys", raw="{" + " " * (70 * 1024) + "}")
    assert big.status_code == 413


def test_self_service_with_the_keys_own_secret(api):
    assert chat(api.nginx, SECRETS["k1"]).status_code == 200
    me = api.get("/keys/self", token=SECRETS["k1"])
    assert me.status_code == 200 and me.json()["id"] == "k1"
    assert api.get("/keys/self/usage", token=SECRETS["k1"]).status_code == 200
    assert api.get("/keys/self/budgets", token=SECRETS["k1"]).json()["key"] == "k1"
    assert api.get("/keys/self", token="sk-nobody").status_code == 401
    assert api.get("/keys/self", token=TOKEN).status_code == 401


def test_topups_are_idempotent(api):
    first = api.post("/orgs/acme/topups", {"amount_usd": "12.5", "idempotency_key": "inv-1"})
    assert first.status_code == 200 and first.json()["applied"] is True
    assert first.json()["balance_nanousd"] == usd_nanos("12.5")
    again = api.post("/orgs/acme/topups", {"amount_usd": "12.5", "idempotency_key": "inv-1"})
    assert again.status_code == 200 and again.json()["applied"] is False
    assert again.json()["balance_nanousd"] == usd_nanos("12.5")
    b = api.get("/orgs/acme/balance").json()
    assert b["balance_nanousd"] == usd_nanos("12.5") and b["reserved_nanousd"] == 0
    assert [e["type"] for e in api.get("/orgs/acme/events").json()["events"]] == ["topup"]


def test_redis_down_answers_503(admin_factory):
    api = admin_factory(redis_addr="127.0.0.1:1")
    r = api.get("/keys/k1")
    assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"


def test_the_token_file_is_checked_at_load(nginx_factory, tmp_path):
    empty = tmp_path / "empty.token"
    empty.write_text("\n")
    ng = nginx_factory(start=False, server_extra="location /a/ { spend_cap_admin %s; }" % empty)
    ng.expected_log_lines.append("has an empty first line")
    result = ng.test_config()
    assert result.returncode != 0 and "empty first line" in result.stderr
    missing = nginx_factory(start=False, server_extra="location /a/ { spend_cap_admin %s; }" % (tmp_path / "nope"))
    missing.expected_log_lines.append("cannot read the token file")
    assert missing.test_config().returncode != 0
    readable = tmp_path / "open.token"
    readable.write_text("tok\n")
    os.chmod(readable, 0o644)
    warned = nginx_factory(start=False, server_extra="location /a/ { spend_cap_admin %s; }" % readable)
    result = warned.test_config()
    assert result.returncode == 0 and "readable by every user" in result.stderr
    assert "tok" not in result.stderr.replace("token", "")


def test_projects_orgs_and_customers_read_and_limit(api):
    # a file project: read, usage, a limits override and its removal
    p = api.get("/projects/acme-prod").json()
    assert p["org"] == "acme" and p["source"] == "file" and p["limits"]["monthly_usd"] == "200.00"
    assert chat(api.nginx, SECRETS["k1"], **{"x-fake-input-tokens": "10", "x-fake-output-tokens": "5"}).status_code == 200
    cost = openai_cost("gpt-4o-mini", prompt=10, completion=5)
    assert wait_until(lambda: api.get("/projects/acme-prod/usage").json()["windows"][2]["spent_nanousd"] == cost, timeout=3)
    assert api.put("/projects/acme-prod/limits", {"daily_requests": 1}).json()["limits"] == {"daily_requests": 1}
    blocked = chat(api.nginx, SECRETS["k1"])
    assert blocked.status_code == 402 and blocked.json()["error"]["scope"] == "project"
    assert api.delete("/projects/acme-prod/limits").json()["limits"]["monthly_usd"] == "200.00"
    assert chat(api.nginx, SECRETS["k1"]).status_code == 200
    assert api.put("/projects/acme-prod", {"org": "beta"}).status_code == 409
    assert api.get("/projects/nope").status_code == 404

    # the org: read, usage, limits
    o = api.get("/orgs/acme").json()
    assert o["source"] == "file" and o["cleared_nanousd"] == 0
    assert wait_until(lambda: api.get("/orgs/acme/usage").json()["windows"][0]["requests"] == 2, timeout=3)
    assert api.put("/orgs/acme/limits", {"monthly_requests": 2}).status_code == 200
    blocked = chat(api.nginx, SECRETS["k1"])
    assert blocked.status_code == 402 and blocked.json()["error"]["scope"] == "org"
    assert api.delete("/orgs/acme/limits").status_code == 200
    assert chat(api.nginx, SECRETS["k1"]).status_code == 200
    assert api.get("/orgs/nope").status_code == 404
    assert api.put("/orgs/acme/cleared", {"cleared_usd": "12.5"}).json()["cleared_nanousd"] == usd_nanos("12.5")

    # events, oldest first, paged
    events = api.get("/orgs/acme/events?count=2").json()
    assert [e["type"] for e in events["events"]] == ["limits_changed", "limits_changed"]
    rest = api.get("/orgs/acme/events?after=%s" % events["next"]).json()["events"]
    assert [e["type"] for e in rest] == ["limits_changed", "limits_changed", "cleared_changed"]
    assert api.get("/orgs/acme/events?count=0").status_code == 400
    # the newest ones (the dashboard's latest events), still oldest first
    everything = events["events"] + rest
    latest = api.get("/orgs/acme/events?latest=2").json()
    assert latest["events"] == everything[-2:] and latest["next"] == everything[-1]["id"]
    assert api.get("/orgs/acme/events?latest=1000").json()["events"] == everything
    assert api.get("/orgs/acme/events?latest=2&count=2").status_code == 400


@pytest.mark.nginx  # the default policy
def test_customer_limits_through_the_api(admin_factory):
    api = admin_factory(location_extra="spend_cap_customer $http_x_customer_id;")
    secret = SECRETS["k1"]
    assert chat(api.nginx, secret, **{"x-customer-id": "cust_9"}).status_code == 200
    r = api.put("/orgs/acme/customers/cust_9/limits", {"daily_requests": 1})
    assert r.status_code == 200 and r.json()["limits"]["daily_requests"] == 1
    blocked = chat(api.nginx, secret, **{"x-customer-id": "cust_9"})
    assert blocked.status_code == 402 and blocked.json()["error"]["scope"] == "customer"
    # another customer of the org is not limited
    assert chat(api.nginx, secret, **{"x-customer-id": "cust_10"}).status_code == 200
    usage = api.get("/orgs/acme/customers/cust_9/usage").json()
    assert usage["scope"] == "customer" and usage["windows"][0]["requests_cap"] == 1
    assert wait_until(lambda: api.get("/orgs/acme/customers/cust_9/usage").json()["windows"][0]["requests"] == 1, timeout=3)
    assert api.delete("/orgs/acme/customers/cust_9/limits").status_code == 200
    assert chat(api.nginx, secret, **{"x-customer-id": "cust_9"}).status_code == 200


def test_a_prepaid_org_through_the_api(api):
    assert api.put("/orgs/payg", {"prepaid": True, "low_balance_usd": "1"}).status_code == 201
    assert api.put("/projects/payg-app", {"org": "payg"}).status_code == 201
    secret = api.post("/keys", {"project": "payg-app", "id": "payg_key"}).json()["secret"]
    poor = chat(api.nginx, secret)
    assert poor.status_code == 402 and poor.json()["error"]["code"] == "insufficient_credit"
    api.post("/orgs/payg/topups", {"amount_usd": 5, "idempotency_key": "t1"})
    ok = chat(api.nginx, secret, **{"x-fake-input-tokens": "100", "x-fake-output-tokens": "10"})
    assert ok.status_code == 200
    cost = openai_cost("gpt-4o-mini", prompt=100, completion=10)
    assert wait_until(lambda: api.get("/orgs/payg/balance").json()["reserved_nanousd"] == 0, timeout=3)
    b = api.get("/orgs/payg/balance").json()
    assert b["balance_nanousd"] == usd_nanos("5") - cost == b["available_nanousd"]
    assert b["low_balance_nanousd"] == usd_nanos("1")
    layers = api.get("/keys/payg_key/budgets").json()["budgets"]
    assert layers[-1]["window"] == "balance" and layers[-1]["remaining_nanousd"] == usd_nanos("5") - cost


def test_an_expired_api_key_and_key_listing(api):
    key = api.post("/keys", {"project": "beta-main", "id": "old", "expires_at": "2021-01-01T00:00:00Z"}).json()
    assert key["expires_at"] == "2021-01-01T00:00:00Z" and key["org"] == "beta"
    refused = chat(api.nginx, key["secret"])
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "api_key_expired"
    ids = [k["id"] for k in api.get("/keys?org=beta").json()["keys"]]
    assert ids == ["kb", "old"]
    assert api.get("/keys?org=nope").status_code == 404
    assert api.get("/keys").status_code == 400


def test_no_secret_or_token_in_the_logs(api):
    secret = api.post("/keys", {"project": "acme-prod", "id": "quiet"}).json()["secret"]
    assert chat(api.nginx, secret).status_code == 200
    rotated = api.post("/keys/quiet/rotate", {}).json()["secret"]
    api.delete("/keys/quiet")
    assert chat(api.nginx, secret).status_code == 401
    assert wait_until(lambda: len(api.nginx.log_entries()) >= 2, timeout=3)
    for path in (api.nginx.error_log, api.nginx.access_log):
        text = open(path).read()
        for s in (secret, rotated, TOKEN):
            assert s not in text, "%s found in %s" % (s[:10], path)
    assert "spend_cap: admin: key_created quiet" in open(api.nginx.error_log).read()


def test_a_rotated_file_key_keeps_its_file_limits(api, redis):
    new = api.post("/keys/k1/rotate", {}).json()["secret"]
    assert chat(api.nginx, SECRETS["k1"]).status_code == 401
    assert chat(api.nginx, new).status_code == 200
    # the file's daily cap of 2 USD still holds for the new secret
    redis.set(counter_key("acme", "spend", "key", "k1", "daily"), usd_nanos("2"))
    blocked = chat(api.nginx, new)
    assert blocked.status_code == 402 and blocked.json()["error"]["scope"] == "key", blocked.text
    me = api.get("/keys/self", token=new).json()
    assert me["source"] == "file" and me["limits"]["daily_usd"] == "2.00"


def _nginx_evalshas(mon, script_marker=None):
    """The EVALSHA argvs NGINX sent (not the scripts' own commands)."""
    return [args for client, args in mon.commands() if client != "lua" and args and args[0].upper() == "EVALSHA"]


def test_a_known_api_key_costs_no_extra_round_trip(admin_factory, redis, redis_server):
    api = admin_factory(workers=1)
    secret = api.post("/keys", {"project": "acme-prod", "id": "hot"}).json()["secret"]
    # the first request reads its records (the lookup, then the org's records)
    assert chat(api.nginx, secret).status_code == 200
    assert wait_until(lambda: api.get("/keys/hot/usage").json()["windows"][0]["requests"] == 1, timeout=3)
    with RedisMonitor(redis_server.port) as mon:
        for _ in range(5):
            assert chat(api.nginx, secret).status_code == 200
        assert wait_until(lambda: redis_int(redis, counter_key("acme", "reqs", "key", "hot", "daily")) == 6, timeout=3)
        barrier = monitor_barrier(mon, api.nginx)
        sent = [a for a in _nginx_evalshas(mon) if not is_sweep(a) and "sc:orgs" not in a
                and not is_barrier(a, barrier)]
    reserves = [a for a in sent if is_reserve(a)]
    settles = [a for a in sent if is_settle(a)]
    assert len(reserves) == 5 and len(reserves) + len(settles) == len(sent), [a[:4] for a in sent]


def test_a_flood_of_unknown_secrets_costs_one_lookup_each(admin_factory, redis_server):
    api = admin_factory(workers=1)
    assert chat(api.nginx, "sk-sc-warm-up").status_code == 401  # the lookup script is loaded
    with RedisMonitor(redis_server.port) as mon:
        slow = 0  # secrets whose three requests spanned the second they are remembered for
        with httpx.Client(timeout=10) as client:
            for i in range(10):
                # 10 distinct unknown secrets, each three times in a row (well within a second,
                # unless the box is very busy: then that secret may be looked up again)
                t0 = time.monotonic()
                for _ in range(3):
                    r = client.post(api.nginx.url + "/v1/chat/completions", content=chat_body(),
                                    headers={"authorization": "Bearer sk-sc-unknown-%d" % i,
                                             "content-type": "application/json"})
                    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
                slow += time.monotonic() - t0 >= 1.0
        barrier = monitor_barrier(mon, api.nginx)
        lookups = [a for a in _nginx_evalshas(mon) if any(k.startswith("sc:key:") for k in a[3:4])
                   and not is_barrier(a, barrier)]
    assert slow < 10, "too slow to tell"
    assert 10 <= len(lookups) <= 10 + 2 * slow, " ".join(a[3][-4:] for a in lookups)


def test_validation_errors_name_the_field(api):
    cases = [
        ("PUT", "/orgs/o2", {"plan": "platinum"}, "plan"),
        ("PUT", "/orgs/o2", {"low_balance_usd": "5"}, "low_balance_usd"),
        ("POST", "/orgs/acme/topups", {"amount_usd": "0", "idempotency_key": "x"}, "amount_usd"),
        ("POST", "/orgs/acme/topups", {"amount_usd": "1"}, "idempotency_key"),
        ("POST", "/keys/k1/rotate", {"grace_seconds": -1}, "grace_seconds"),
        ("PUT", "/orgs/acme/cleared", {"cleared_usd": "1e3"}, "cleared_usd"),
        ("PUT", "/keys/k1/limits", {"monthly_usd": "1", "hourly_usd": "2"}, "hourly_usd"),
        ("POST", "/keys", {"project": "acme-prod", "expires_at": "tomorrow"}, "expires_at"),
        ("PUT", "/projects/p2", {"limits": {}}, "org"),
    ]
    for method, path, body, field in cases:
        r = api.call(method, path, body)
        assert r.status_code == 400, (method, path, r.status_code, r.text)
        assert r.json()["error"]["code"] == "invalid_request" and field in r.json()["error"]["message"], r.text
    r = api.call("PUT", "/keys")
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST"
    assert api.get("/orgs/acme/events?after=nonsense").status_code == 400
    assert api.get("/keys/k1?x=1").status_code == 400
    # nothing changed: no event was appended
    assert api.get("/orgs/acme/events").json()["events"] == []


def test_a_rotation_grace_ends_on_its_own(api):
    old = api.post("/keys", {"project": "acme-prod", "id": "graced"}).json()["secret"]
    assert chat(api.nginx, old).status_code == 200
    new = api.post("/keys/graced/rotate", {"grace_seconds": 2}).json()["secret"]
    assert chat(api.nginx, old).status_code == 200  # within its grace (and now cached)
    assert chat(api.nginx, new).status_code == 200
    # no change of records marks the end of the grace: the cached identity must not outlive it
    assert wait_until(lambda: chat(api.nginx, old).status_code == 401, timeout=6, interval=0.2)
    assert chat(api.nginx, new).status_code == 200


def test_the_api_is_not_capped_by_an_http_level_spend_cap_on(nginx_factory, tmp_path):
    token_file = tmp_path / "t.token"
    token_file.write_text(TOKEN + "\n")
    os.chmod(token_file, 0o600)
    ng = nginx_factory(http_extra="spend_cap on;",
                       server_extra="location %s/ { spend_cap_admin %s; }" % (PREFIX, token_file))
    r = Api(ng).get("/keys/k1")
    assert r.status_code == 200 and r.json()["id"] == "k1"
