"""Every record an API call makes stays in reach, and every answer says what it
should (issue 16): ids of SPEC section 7's alphabet at the API, in the policy file
and for customer headers; the file's orgs and projects are the file's; errors no
retry fixes are 400; lifetime counts are null; a rotation's grace ends to the
millisecond; the binding budget includes the prepaid balance."""

import time

import httpx
import pytest

from admin_support import chat
from support import (CUSTOMER_DIRECTIVE, SECRETS, balance_key, chat_body, default_policy, post, read_events,
                     redis_barrier, usd_nanos, wait_until)

BAD_IDS = ["a/b", ".", "..", "x/..", "a%2Fb", "a b", "a:b", "{a}", "caf\u00e9", "a?b", "a#b", "a\\b", "k" * 129, ""]
GOOD_IDS = ["user_42", "ann@example.com", "team+eu", "v1.2-rc", "...", ".hidden", "k" * 128]


# ---------------------------------------------------------------- ids

def test_the_api_refuses_ids_outside_the_alphabet_and_every_id_it_takes_stays_in_reach(api):
    for bad in BAD_IDS:
        r = api.post("/keys", {"project": "acme-prod", "id": bad})
        assert r.status_code == 400, (bad, r.status_code, r.text)
        assert r.json()["error"]["message"].startswith("`id` must be 1 to 128 of the characters"), r.text
        r = api.put("/projects/ok-project", {"org": bad})
        assert r.status_code in (400, 404), (bad, r.status_code)
    for good in GOOD_IDS:
        r = api.post("/keys", {"project": "acme-prod", "id": good})
        assert r.status_code == 201, (good, r.text)
        secret = r.json()["secret"]
        # every call on it reaches it: read, limit, usage, rotate, revoke
        assert api.get("/keys/" + good).json()["id"] == good
        assert api.put("/keys/%s/limits" % good, {"daily_usd": "1"}).status_code == 200
        assert api.get("/keys/%s/usage" % good).status_code == 200
        assert api.post("/keys/%s/rotate" % good, {}).status_code == 200
        assert api.delete("/keys/" + good).json()["revoked"] is True
        assert chat(api.nginx, secret).status_code == 401


@pytest.mark.parametrize("bad", ["a/b", "..", "x/..", "a%2Fb", "a b"])
def test_the_policy_file_refuses_ids_outside_the_alphabet(nginx_factory, bad):
    pol = default_policy()
    pol["orgs"][bad] = {}
    ng = nginx_factory(policy=pol, start=False)
    ng.expected_log_lines.append("must be 1 to 128 of the characters")
    t = ng.test_config()
    assert t.returncode != 0, t.stderr
    assert "org id `%s` must be 1 to 128 of the characters" % bad in t.stderr, t.stderr


@pytest.mark.nginx(location_extra=CUSTOMER_DIRECTIVE)
def test_customer_headers_outside_the_alphabet_are_refused(nginx, redis, fake):
    for bad in [b"a/b", b"..", b".", b"x/..", b"a%2Fb", "caf\u00e9".encode(), b"a#b"]:
        r = post(nginx.url, "/v1/chat/completions", chat_body(), SECRETS["k1"], headers={b"x-customer-id": bad})
        assert r.status_code == 400, (bad, r.status_code, r.text)
        assert r.json()["error"]["message"].startswith("invalid customer id"), r.text
    redis_barrier(nginx)
    assert fake.requests() == []
    assert list(redis.scan_iter("*")) == []
    r = post(nginx.url, "/v1/chat/completions", chat_body(), SECRETS["k1"], headers={"x-customer-id": "ann@x.eu"})
    assert r.status_code == 200, r.text


# ---------------------------------------------------------------- the file's entities

def prepaid_policy():
    pol = default_policy()
    pol["plans"] = {"free": {"limits": {"monthly_usd": "1"}}}
    pol["orgs"]["acme"] = {"prepaid": True, "plan": "free", "limits": {"daily_usd": "50"}}
    return pol


def test_put_of_a_file_org_or_project_is_409_and_changes_nothing(admin_factory, redis, fake):
    api = admin_factory(policy=prepaid_policy())
    # the org has no balance: refused with insufficient_credit
    assert chat(api.nginx, SECRETS["k1"]).json()["error"]["code"] == "insufficient_credit"
    r = api.put("/orgs/acme", {"limits": {"daily_usd": "5"}})  # a partial PUT would drop prepaid and the plan
    assert r.status_code == 409, r.text
    assert "PUT /orgs/acme/limits" in r.json()["error"]["message"]
    r = api.put("/projects/acme-prod", {"org": "acme"})
    assert r.status_code == 409, r.text
    org = api.get("/orgs/acme").json()
    assert (org["prepaid"], org["plan"], org["source"]) == (True, "free", "file")
    assert chat(api.nginx, SECRETS["k1"]).json()["error"]["code"] == "insufficient_credit"
    assert read_events(redis, "acme") == [] and not redis.exists("sc:{acme}:org")
    # the way to change them
    assert api.put("/orgs/acme/limits", {"daily_usd": "5"}).json()["limits"] == {"daily_usd": "5.00"}


# ---------------------------------------------------------------- 400, not 503

def test_errors_no_retry_fixes_are_400(api, redis):
    redis.set(balance_key("acme"), "9223372036854775000")
    r = api.post("/orgs/acme/topups", {"amount_usd": "0.000001", "idempotency_key": "big"})
    assert r.status_code == 400, r.text
    assert "past the largest amount" in r.json()["error"]["message"]
    assert redis.get(balance_key("acme")) == "9223372036854775000"
    for after in ("18446744073709551615-18446744073709551615", "not-an-id", "1-2-3", "99999999999999999999999-0"):
        r = httpx.get(api.nginx.url + "/spend-cap/orgs/acme/events", params={"after": after},
                      headers={"authorization": "Bearer " + api.token}, timeout=10)
        assert r.status_code in (200, 400), (after, r.status_code, r.text)
        if r.status_code == 200:
            assert r.json()["events"] == [], (after, r.text)


# ---------------------------------------------------------------- answers

def test_lifetime_requests_and_tokens_are_null_not_zero(api):
    for _ in range(3):
        assert chat(api.nginx, SECRETS["k1"]).status_code == 200
    assert wait_until(lambda: api.get("/keys/k1/usage").json()["windows"][0]["requests"] == 3)
    for path in ("/keys/k1/usage", "/projects/acme-prod/usage", "/orgs/acme/usage"):
        lifetime = api.get(path).json()["windows"][2]
        assert lifetime["window"] == "lifetime" and lifetime["spent_nanousd"] > 0
        assert (lifetime["requests"], lifetime["tokens"]) == (None, None), lifetime


def test_a_grace_ends_to_the_millisecond(api):
    """A grace of N s accepts the old secret until N s after the rotation was made,
    not after a whole-second truncation of its start."""
    old = api.post("/keys", {"project": "acme-prod", "id": "graced"}).json()["secret"]
    assert chat(api.nginx, old).status_code == 200
    grace = 1
    t0 = time.monotonic()  # before the rotation is made: its grace ends after t0 + grace
    assert api.post("/keys/graced/rotate", {"grace_seconds": grace}).status_code == 200
    # A request answered before t0 + grace reached NGINX before the grace ended:
    # it must have been accepted.
    refused_answered = None
    while refused_answered is None:
        status = chat(api.nginx, old).status_code
        answered = time.monotonic()
        assert status in (200, 401), status
        if status == 401:
            refused_answered = answered
        assert answered - t0 < 60, "the old secret still works a minute later"
    assert refused_answered - t0 >= grace, "refused within %.3f s of the rotation, before its %d s grace" % (
        refused_answered - t0, grace)


def test_rotate_a_revoked_key_revoke_twice_and_delete_limits_twice(api, redis):
    api.post("/keys", {"project": "acme-prod", "id": "gone"})
    assert api.delete("/keys/gone").status_code == 200
    assert api.delete("/keys/gone").json()["revoked"] is True  # again: 200, as it is
    r = api.post("/keys/gone/rotate", {})
    assert r.status_code == 409 and "revoked" in r.json()["error"]["message"], r.text
    assert "secret" not in r.json()
    # a file key revoked in the file: the same
    assert api.post("/keys/k_revoked/rotate", {}).status_code == 409
    assert api.delete("/keys/k_revoked").status_code == 200
    types = [e["type"] for e in api.get("/orgs/acme/events").json()["events"]]
    assert types == ["key_created", "key_revoked"], types

    # limits put, deleted, deleted again: two events, the second naming the file's limits
    assert api.put("/keys/k1/limits", {"daily_usd": "1"}).status_code == 200
    assert api.delete("/keys/k1/limits").status_code == 200
    assert api.delete("/keys/k1/limits").status_code == 200
    changes = [e for e in api.get("/orgs/acme/events").json()["events"] if e["type"] == "limits_changed"]
    assert [c["limits"] for c in changes] == ['{"daily_usd":"1.00"}',
                                             '{"daily_usd":"2.00","monthly_usd":"10.00","lifetime_usd":"40.00"}'], changes
    notices = [line for line in api.nginx.error_text().splitlines() if "admin: key_limits_delete k1" in line]
    assert len(notices) == 1, notices


def test_head_is_get_without_a_body(api):
    r = httpx.head(api.nginx.url + "/spend-cap/keys/self", headers={"authorization": "Bearer " + SECRETS["k1"]},
                   timeout=10)
    assert r.status_code == 200 and r.content == b"", (r.status_code, r.content)
    assert r.headers["content-type"].startswith("application/json")
    r = httpx.head(api.nginx.url + "/spend-cap/keys/k1", headers={"authorization": "Bearer " + api.token}, timeout=10)
    assert r.status_code == 200
    r = httpx.head(api.nginx.url + "/spend-cap/keys/k1", headers={"authorization": "Bearer nope"}, timeout=10)
    assert r.status_code == 401


# ---------------------------------------------------------------- x-spend-* and the balance

def balance_policy(key_limits):
    pol = default_policy()
    pol["orgs"]["acme"] = {"prepaid": True}
    pol["projects"]["acme-prod"].pop("limits", None)
    next(k for k in pol["keys"] if k["id"] == "k1")["limits"] = key_limits
    return pol


@pytest.mark.parametrize("key_limits,scope", [({"monthly_usd": "100"}, "org:balance"), ({}, "org:balance"),
                                              ({"monthly_usd": "10"}, "key:monthly")])
def test_x_spend_names_the_balance_when_it_binds(nginx_factory, redis, fake, key_limits, scope):
    ng = nginx_factory(policy=balance_policy(key_limits))
    redis.set(balance_key("acme"), usd_nanos("15"))
    r = post(ng.url, "/v1/chat/completions", chat_body(max_tokens=100), SECRETS["k1"])
    assert r.status_code == 200, r.text
    assert r.headers.get("x-spend-scope") == scope, dict(r.headers)
    if scope == "org:balance":
        assert "x-spend-reset" not in r.headers  # a balance does not refill by waiting
        remaining = usd_nanos(r.headers["x-spend-remaining-usd"])
        assert usd_nanos(r.headers["x-spend-limit-usd"]) == usd_nanos("15")  # left + held
        assert 0 < usd_nanos("15") - remaining < usd_nanos("0.001")  # the reservation drawn
    else:
        assert r.headers["x-spend-reset"].endswith("T00:00:00Z")
