"""Blocked requests: 402 spend_limit_exceeded at every scope and window, in both
envelopes; a blocked request never reaches the provider and changes nothing in Redis."""


import pytest

from support import (CAPS, CHAINS, SCOPE_WORD, SCOPES, SECRETS, WINDOWS, Periods, chat_body, counter_key,
                     estimate_nanos, messages_body, post, counter_state, usd_nanos, wait_until, read_counters,
                     all_counter_keys, openai_cost)
from support import redis_barrier

K1 = CHAINS["k1"]

SURFACES = {
    "openai": ("/v1/chat/completions", chat_body(max_tokens=100), "gpt-4o-mini"),
    "anthropic": ("/v1/messages", messages_body(max_tokens=100), "claude-sonnet-4-5"),
}


def expected_402(surface, scope, window, periods):
    message = "%s has reached its %s spend limit" % (SCOPE_WORD[scope], window)
    if surface == "openai":
        return {"error": {"message": message, "type": "invalid_request_error", "param": None,
                          "code": "spend_limit_exceeded", "scope": scope, "window": window,
                          "reset_at": periods.reset(window)}}
    return {"type": "error", "error": {"type": "billing_error", "message": message,
                                       "code": "spend_limit_exceeded", "scope": scope, "window": window,
                                       "reset_at": periods.reset(window)}}


def assert_blocked(nginx, redis, fake, r, surface, scope, window, before, periods):
    assert r.status_code == 402, "expected 402, got %d: %s" % (r.status_code, r.text)
    assert r.headers["content-type"].split(";")[0].strip() == "application/json"
    assert "retry-after" not in r.headers, "402 must not carry Retry-After"
    assert r.json() == expected_402(surface, scope, window, periods)
    assert fake.requests() == [], "a blocked request reached the provider"
    e = nginx.log_entry(r.headers["x-test-request-id"])
    assert e["decision"] == "block"
    assert e["blocked_by"] == "%s:%s" % (scope, window)
    assert e["key_id"] == "k1" and e["org"] == "acme"
    redis_barrier(nginx)  # any (wrong) asynchronous settlement would have landed
    assert counter_state(redis) == before, "a blocked request changed Redis"


@pytest.mark.parametrize("surface", ["openai", "anthropic"])
@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("window", WINDOWS)
def test_block_at_each_scope_and_window(nginx, redis, fake, surface, scope, window):
    path, body, model = SURFACES[surface]
    estimate = estimate_nanos(model, len(body), 100)
    cap = usd_nanos(CAPS[(scope, window)])
    # one nano-USD short of room for this request
    redis.set(counter_key("acme", "spend", scope, K1[scope], window), cap - estimate + 1)
    before = counter_state(redis)
    p = Periods()
    r = post(nginx.url, path, body, SECRETS["k1"])
    assert_blocked(nginx, redis, fake, r, surface, scope, window, before, p)


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("window", WINDOWS)
def test_reaching_a_cap_exactly_is_allowed(nginx, redis, fake, scope, window):
    """spent + estimate == cap passes (caps are reached, never exceeded)."""
    path, body, model = SURFACES["openai"]
    estimate = estimate_nanos(model, len(body), 100)
    cap = usd_nanos(CAPS[(scope, window)])
    key = counter_key("acme", "spend", scope, K1[scope], window)
    redis.set(key, cap - estimate)
    r = post(nginx.url, path, body, SECRETS["k1"])
    assert r.status_code == 200, r.text
    assert r.headers["x-spend-remaining-usd"] == "0.00"
    assert r.headers["x-spend-scope"] == "%s:%s" % (scope, window)
    assert len(fake.requests()) == 1
    cost = openai_cost(model, 10, 20)
    wait_until(lambda: int(redis.get(key)) == cap - estimate + cost, timeout=3)
    assert int(redis.get(key)) == cap - estimate + cost


@pytest.mark.parametrize("seeded,reported", [
    ([("key", "daily"), ("org", "daily")], ("key", "daily")),
    ([("org", "lifetime"), ("key", "lifetime")], ("key", "lifetime")),
    ([("project", "monthly"), ("org", "daily")], ("project", "monthly")),
    ([("key", "lifetime"), ("project", "daily")], ("key", "lifetime")),
    ([("key", "monthly"), ("key", "lifetime"), ("key", "daily")], ("key", "daily")),
    ([("org", "lifetime"), ("org", "monthly")], ("org", "monthly")),
])
def test_first_failing_cap_in_check_order_is_reported(nginx, redis, fake, seeded, reported):
    """key -> project -> org, and daily -> monthly -> lifetime within a scope."""
    path, body, model = SURFACES["openai"]
    for scope, window in seeded:
        redis.set(counter_key("acme", "spend", scope, K1[scope], window), usd_nanos(CAPS[(scope, window)]))
    before = counter_state(redis)
    p = Periods()
    r = post(nginx.url, path, body, SECRETS["k1"])
    assert_blocked(nginx, redis, fake, r, "openai", reported[0], reported[1], before, p)


def test_block_then_allow_after_room_frees(nginx, redis, fake):
    """A block is not sticky: the same key passes once its counter has room again,
    and the blocked attempt left nothing behind."""
    path, body, model = SURFACES["openai"]
    estimate = estimate_nanos(model, len(body), 100)
    key = counter_key("acme", "spend", "key", "k1", "daily")
    redis.set(key, usd_nanos("2") - estimate + 1)
    assert post(nginx.url, path, body, SECRETS["k1"]).status_code == 402
    redis.set(key, usd_nanos("2") - estimate)
    r = post(nginx.url, path, body, SECRETS["k1"])
    assert r.status_code == 200, r.text
    assert len(fake.requests()) == 1
    wait_until(lambda: read_counters(redis, all_counter_keys(K1, "reqs")) ==
               {k: 1 for k in all_counter_keys(K1, "reqs")})
    assert set(read_counters(redis, all_counter_keys(K1, "reqs")).values()) == {1}


def test_other_org_is_not_blocked_by_a_full_org(nginx, redis, fake):
    redis.set(counter_key("acme", "spend", "org", "acme", "daily"), usd_nanos("50"))
    r = post(nginx.url, "/v1/chat/completions", chat_body(), SECRETS["k1"])
    assert r.status_code == 402
    r = post(nginx.url, "/v1/chat/completions", chat_body(), SECRETS["kb"])
    assert r.status_code == 200, r.text
    assert len(fake.requests()) == 1


def test_beta_org_monthly_cap(nginx, redis, fake):
    redis.set(counter_key("beta", "spend", "org", "beta", "monthly"), usd_nanos("100"))
    before = counter_state(redis)
    r = post(nginx.url, "/v1/messages", messages_body(), SECRETS["kb"])
    assert r.status_code == 402
    body = r.json()
    assert body["error"]["type"] == "billing_error"
    assert body["error"]["message"] == "account has reached its monthly spend limit"
    assert (body["error"]["scope"], body["error"]["window"]) == ("org", "monthly")
    assert fake.requests() == []
    redis_barrier(nginx)
    assert counter_state(redis) == before
