"""POST /keys/ID/check and /keys/self/check ("would this pass?", SPEC section 2b)
and the forecast (forecast_exhausted_at and spend_cap_forecast_exhaustion) through a
real NGINX and a real Redis. A check reserves and counts nothing and never calls the
upstream; it answers what the access phase then decides."""

import datetime as _dt
import json
import time

import httpx
import pytest

from admin_support import PREFIX, TOKEN
from openapi_check import check as documented
from support import (SECRETS, chat_body, default_policy, estimate_nanos, format_usd, messages_body, post,
                     read_events, redis_barrier, set_limits, snapshot, utc_now, wait_settled, wait_until)

PATTERN = "gpt-4o*"
MODEL = "gpt-4o-mini"
OTHER = "claude-sonnet-4-5"


def api(ng, method, path, body=None, bearer=TOKEN):
    """The management API, every answer checked against docs/openapi.yaml."""
    content = body if isinstance(body, (str, bytes)) or body is None else json.dumps(body)
    r = httpx.request(method, ng.url + PREFIX + path, content=content, timeout=10,
                      headers={"authorization": "Bearer " + bearer, "content-type": "application/json"})
    documented(method, path, r.status_code, r.content, headers=r.headers)
    return r


def counters(redis):
    """Everything but the event stream and markers: what a check must leave alone."""
    return {k: v for k, v in snapshot(redis).items() if not k.endswith(":events") and ":markers:" not in k}


def check(ng, body, key="k1", bearer=TOKEN):
    r = api(ng, "POST", "/keys/%s/check" % key, body, bearer)
    assert r.status_code == 200, r.text
    return r.json()


def test_check_answers_the_access_decision_without_reserving_or_calling_the_upstream(admin_factory, redis, fake):
    pol = default_policy()
    set_limits(pol, "key", {"daily_usd": "1", "models": {PATTERN: {"daily_usd": "0.0001", "rpm": 50}},
                            "allowed_models": [PATTERN, "claude-*"]})
    ng = admin_factory(policy=pol).nginx
    body = chat_body(model=MODEL, max_tokens=10)
    estimate = estimate_nanos(MODEL, len(body), 10, pol)
    before, calls = counters(redis), len(fake.requests())

    allowed = check(ng, body)
    assert allowed["allowed"] is True and allowed["status"] == 200 and allowed["code"] is None, allowed
    assert allowed["estimate_nanousd"] == estimate and allowed["estimate_usd"] == format_usd(estimate), allowed
    assert allowed["binding"]["scope"] == "key" and allowed["binding"]["binding"] is True, allowed
    assert allowed["binding"]["model"] == PATTERN and allowed["binding"]["window"] == "daily", allowed
    assert allowed["binding"]["remaining_nanousd"] == 100000 - estimate, allowed
    # the self-service form, with the key's own secret
    assert check(ng, body, key="self", bearer=SECRETS["k1"])["allowed"] is True
    # a model outside allowed_models: 403, as the access phase would answer
    refused = check(ng, chat_body(model="odd-model", max_tokens=10))
    assert (refused["allowed"], refused["status"], refused["code"], refused["scope"]) == (
        False, 403, "model_not_allowed", "key"), refused
    # a body the access phase refuses with 400
    bad = check(ng, '{"messages": []}')
    assert (bad["allowed"], bad["status"], bad["code"]) == (False, 400, "invalid_request"), bad
    redis_barrier(ng)
    assert counters(redis) == before, "a check changed Redis"
    assert len(fake.requests()) == calls, "a check called the upstream"

    # the per-model cap binds: with its counter near the cap, the check says 402
    # naming the pattern, and the request itself is then refused the same way
    day = utc_now().strftime("%Y-%m-%d")
    model_key = "sc:{acme}:spend:key:k1:model:%s:d:%s" % (PATTERN, day)
    redis.set(model_key, 100000 - estimate + 1)
    blocked = check(ng, body)
    assert (blocked["allowed"], blocked["status"], blocked["code"], blocked["scope"], blocked["window"],
            blocked["model"]) == (False, 402, "spend_limit_exceeded", "key", "daily", PATTERN), blocked
    assert blocked["message"] == "api key has reached its daily spend limit for gpt-4o*", blocked
    assert redis.get(model_key) == str(100000 - estimate + 1)
    r = post(ng.url, "/v1/chat/completions", body, SECRETS["k1"])
    assert r.status_code == 402 and r.json()["error"]["model"] == PATTERN, r.text
    # another model is not held by that pattern
    assert check(ng, messages_body(model=OTHER, max_tokens=10))["allowed"] is True
    assert len(fake.requests()) == calls


def test_check_of_a_revoked_key_and_an_unknown_one(admin_factory, redis, fake):
    ng = admin_factory().nginx
    r = check(ng, chat_body(), key="k_revoked")
    assert (r["allowed"], r["status"], r["code"]) == (False, 401, "api_key_revoked"), r
    assert api(ng, "POST", "/keys/nobody/check", chat_body()).status_code == 404
    assert api(ng, "POST", "/keys/k1/check", chat_body(), bearer="wrong").status_code == 401
    assert api(ng, "GET", "/keys/k1/check").status_code == 405


def test_forecast_in_usage_and_budgets_and_one_event_per_cap_and_period(admin_factory, redis, fake):
    """A monthly cap whose counter is seeded just under it: at the month's pace so far
    the cap is reached before the month ends. Usage and budgets say when, and the first
    settlements append exactly one spend_cap_forecast_exhaustion."""
    now = utc_now()
    if now.day == 1 and now.hour == 0:
        pytest.skip("a forecast needs an hour of the month behind it")
    pol = default_policy()
    set_limits(pol, "key", {"monthly_usd": "10"})
    ng = admin_factory(policy=pol).nginx
    month_key = "sc:{acme}:spend:key:k1:m:%s" % now.strftime("%Y-%m")
    redis.set(month_key, 9 * 10**9)
    # no settlement yet: usage forecasts already (the view needs no event)
    asked = time.monotonic()
    usage = api(ng, "GET", "/keys/k1/usage").json()
    monthly = [w for w in usage["windows"] if w["window"] == "monthly"][0]
    assert monthly["forecast_exhausted_at"] is not None, usage
    forecast = _dt.datetime.strptime(monthly["forecast_exhausted_at"], "%Y-%m-%dT%H:%M:%SZ")
    reset = _dt.datetime.strptime(monthly["reset_at"], "%Y-%m-%dT%H:%M:%SZ")
    assert forecast < reset, usage
    daily = [w for w in usage["windows"] if w["window"] == "daily"][0]
    assert daily["forecast_exhausted_at"] is None or daily["cap_nanousd"] is not None
    budgets = api(ng, "GET", "/keys/k1/budgets").json()["budgets"]
    between = time.monotonic() - asked
    layer = [b for b in budgets if b["scope"] == "key" and b["window"] == "monthly"][0]
    assert layer["model"] is None and layer["forecast_exhausted_at"] is not None, budgets
    # the same sum a moment later: the pace's instant moves by cap/spent (10/9) of the
    # time between the two calls (whole seconds each, so one more either way)
    later = _dt.datetime.strptime(layer["forecast_exhausted_at"], "%Y-%m-%dT%H:%M:%SZ")
    assert 0 <= (later - forecast).total_seconds() <= between * 10 / 9 + 2, (usage, budgets)
    assert not read_events(redis, "acme", "spend_cap_forecast_exhaustion")

    for n in (1, 2, 3):
        r = post(ng.url, "/v1/chat/completions", chat_body(max_tokens=10), SECRETS["k1"])
        assert r.status_code == 200, r.text
        wait_settled(redis, n)
    events = read_events(redis, "acme", "spend_cap_forecast_exhaustion")
    key_events = [e for e in events if e["scope"] == "key"]
    assert len(key_events) == 1, events
    e = key_events[0]
    assert (e["id"], e["window"], e["period"], e["cap"]) == ("k1", "monthly", now.strftime("%Y-%m"), str(10**10)), e
    assert e["reset_at"] == monthly["reset_at"] and e["forecast_exhausted_at"] < e["reset_at"], e
