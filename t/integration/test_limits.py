"""Request and token caps (daily_requests, monthly_requests, daily_tokens,
monthly_tokens) at every scope -- key, project, org, customer: 402
request_limit_exceeded / token_limit_exceeded in both envelopes, the provider never
reached, nothing counted for a refused request; request counters count, token counters
reserve the estimate and settle to the real token count."""

import threading

import pytest

from support import (ALL_SCOPES, CHAINS, CUSTOMER_DIRECTIVE, counter_state, read_events, SCOPE_WORD, SECRETS, Periods, all_counter_keys,
                     chat_body, counter_key, default_policy, error_envelope, estimate_tokens, messages_body, post,
                     read_counters, set_limits, snapshot, usd_nanos, wait_counters, wait_settled, wait_until)
from support import redis_barrier

CUSTOMER = "cust_7"
CHAIN = dict(CHAINS["k1"], customer=CUSTOMER)
HEADERS = {"x-customer-id": CUSTOMER}
MAX_TOKENS = 100

# limit name -> (Redis counter kind, window, error code, message noun)
LIMITS = {
    "daily_requests": ("reqs", "daily", "request_limit_exceeded", "request"),
    "monthly_requests": ("reqs", "monthly", "request_limit_exceeded", "request"),
    "daily_tokens": ("tokens", "daily", "token_limit_exceeded", "token"),
    "monthly_tokens": ("tokens", "monthly", "token_limit_exceeded", "token"),
}


def policy_with(*scoped_limits):
    """policy_with(("key", {"daily_requests": 2}), ...)"""
    pol = default_policy()
    for scope, lim in scoped_limits:
        set_limits(pol, scope, lim)
    return pol


def message(scope, limit):
    _, window, _, noun = LIMITS[limit]
    return "%s has reached its %s %s limit" % (SCOPE_WORD[scope], window, noun)


def assert_refused(ng, redis, fake, r, surface, scope, limit, before, periods, upstream_calls=0):
    kind, window, code, _ = LIMITS[limit]
    assert r.status_code == 402, "expected 402 %s, got %d: %s" % (code, r.status_code, r.text)
    assert r.headers["content-type"].split(";")[0].strip() == "application/json"
    assert "retry-after" not in r.headers, "a 402 carries no Retry-After"
    assert r.json() == error_envelope(surface, 402, code, message(scope, limit), scope=scope, window=window,
                                      reset_at=periods.reset(window))
    assert len(fake.requests()) == upstream_calls, "a refused request reached the provider"
    e = ng.log_entry(r.headers["x-test-request-id"])
    assert e["decision"] == "block"
    assert e["blocked_by"] == "%s:%s" % (scope, limit)
    redis_barrier(ng)  # any (wrong) settlement of the refused request would have landed
    assert snapshot(redis) == before, "a refused request changed Redis"


@pytest.mark.parametrize("limit", list(LIMITS))
@pytest.mark.parametrize("scope", ALL_SCOPES)
def test_cap_is_reached_then_refuses(nginx_factory, redis, fake, scope, limit):
    """The request that exactly reaches the cap passes; the next one is refused with
    the cap's code, message, scope, window and reset_at, and counts nothing."""
    kind, window, code, _ = LIMITS[limit]
    body = chat_body(max_tokens=MAX_TOKENS)
    est_tokens = estimate_tokens(len(body), MAX_TOKENS)
    cap = 5 if kind == "reqs" else 100_000
    need = 1 if kind == "reqs" else est_tokens
    ng = nginx_factory(policy=policy_with((scope, {limit: cap})), location_extra=CUSTOMER_DIRECTIVE)
    key = counter_key("acme", kind, scope, CHAIN[scope], window)
    redis.set(key, cap - need)

    r = post(ng.url, "/v1/chat/completions", body, SECRETS["k1"], headers=HEADERS)
    assert r.status_code == 200, "reaching the %s cap exactly must pass: %s" % (limit, r.text)
    # settled: one request more; the estimate's tokens replaced by the real 10 + 20
    wait_counters(redis, [key], cap if kind == "reqs" else cap - need + 30)
    wait_settled(redis, 1)

    before = snapshot(redis)
    p = Periods()
    r = post(ng.url, "/v1/chat/completions", body, SECRETS["k1"], headers=HEADERS)
    assert_refused(ng, redis, fake, r, "openai", scope, limit, before, p, upstream_calls=1)


@pytest.mark.parametrize("scope,limit", [("key", "daily_requests"), ("project", "monthly_tokens"),
                                         ("org", "monthly_requests"), ("customer", "daily_tokens")])
def test_anthropic_envelope(nginx_factory, redis, fake, scope, limit):
    """A limit of 0 refuses every request; on /v1/messages the envelope type is billing_error."""
    ng = nginx_factory(policy=policy_with((scope, {limit: 0})), location_extra=CUSTOMER_DIRECTIVE)
    before = snapshot(redis)
    p = Periods()
    r = post(ng.url, "/v1/messages", messages_body(), SECRETS["k1"], key_header="x-api-key", headers=HEADERS)
    assert_refused(ng, redis, fake, r, "anthropic", scope, limit, before, p)
    assert r.json()["error"]["type"] == "billing_error"


@pytest.mark.parametrize("scoped,reported", [
    # within a scope: spend, then requests, then tokens
    ([("key", {"daily_tokens": 0}), ("key", {"monthly_requests": 0})], ("key", "monthly_requests")),
    ([("key", {"monthly_tokens": 0}), ("key", {"daily_tokens": 0})], ("key", "daily_tokens")),
    # scopes: key -> project -> org -> customer
    ([("project", {"daily_requests": 0}), ("key", {"monthly_tokens": 0})], ("key", "monthly_tokens")),
    ([("customer", {"daily_requests": 0}), ("org", {"daily_tokens": 0})], ("org", "daily_tokens")),
    ([("customer", {"daily_requests": 0}), ("project", {"monthly_requests": 0})],
     ("project", "monthly_requests")),
    # caps before rates
    ([("key", {"rpm": 0}), ("customer", {"monthly_tokens": 0})], ("customer", "monthly_tokens")),
])
def test_first_failing_limit_in_check_order(nginx_factory, redis, fake, scoped, reported):
    ng = nginx_factory(policy=policy_with(*scoped), location_extra=CUSTOMER_DIRECTIVE)
    before = snapshot(redis)
    p = Periods()
    r = post(ng.url, "/v1/chat/completions", chat_body(), SECRETS["k1"], headers=HEADERS)
    assert_refused(ng, redis, fake, r, "openai", reported[0], reported[1], before, p)


def test_cost_cap_comes_before_request_cap(nginx_factory, redis, fake):
    """Within a scope the spend windows are checked first."""
    ng = nginx_factory(policy=policy_with(("key", {"daily_requests": 0})), location_extra=CUSTOMER_DIRECTIVE)
    redis.set(counter_key("acme", "spend", "key", "k1", "monthly"), usd_nanos("10"))
    before = counter_state(redis)
    p = Periods()
    r = post(ng.url, "/v1/chat/completions", chat_body(), SECRETS["k1"], headers=HEADERS)
    assert r.status_code == 402, r.text
    assert r.json() == error_envelope("openai", 402, "spend_limit_exceeded",
                                      "api key has reached its monthly spend limit", scope="key",
                                      window="monthly", reset_at=p.month_reset)
    assert fake.requests() == []
    assert ng.log_entry(r.headers["x-test-request-id"])["blocked_by"] == "key:monthly"
    redis_barrier(ng)
    assert counter_state(redis) == before
    assert [e["type"] for e in read_events(redis, "acme")] == ["spend_cap_reached"]


def test_requests_counted_up_to_the_cap_across_requests(nginx_factory, redis, fake):
    """No seeding: daily_requests 3 lets exactly three through, then refuses."""
    ng = nginx_factory(policy=policy_with(("project", {"daily_requests": 3})))
    for i in range(3):
        r = post(ng.url, "/v1/chat/completions", chat_body(), SECRETS["k1"])
        assert r.status_code == 200, (i, r.text)
    wait_counters(redis, all_counter_keys(CHAINS["k1"], "reqs"), 3)
    wait_settled(redis, 3)
    before = snapshot(redis)
    p = Periods()
    r = post(ng.url, "/v1/chat/completions", chat_body(), SECRETS["k1"])
    assert_refused(ng, redis, fake, r, "openai", "project", "daily_requests", before, p, upstream_calls=3)


# ------------------------------------------------------------ token counting

ALL_LIMITED = policy_with(("key", {"daily_tokens": 1_000_000, "monthly_requests": 1000}),
                          ("customer", {"monthly_tokens": 1_000_000}))


def counter_keys(kind):
    return all_counter_keys(CHAIN, kind)


def assert_no_lifetime_counts(redis):
    left = [k for pattern in ("sc:*:reqs:*:life", "sc:*:tokens:*:life") for k in redis.scan_iter(pattern)]
    assert left == [], "requests and tokens have no lifetime counter: %s" % left


def test_openai_tokens_settle_to_usage_with_cached(nginx_factory, redis, fake):
    """prompt_tokens (which include the cached ones) + completion_tokens, at every scope
    and window of the chain, customer included."""
    ng = nginx_factory(policy=ALL_LIMITED, location_extra=CUSTOMER_DIRECTIVE)
    r = post(ng.url, "/v1/chat/completions", chat_body(max_tokens=1000), SECRETS["k1"],
             headers=dict(HEADERS, **{"x-fake-input-tokens": "1234", "x-fake-cached-tokens": "567",
                                      "x-fake-output-tokens": "89"}))
    assert r.status_code == 200, r.text
    assert len(counter_keys("tokens")) == 8
    wait_counters(redis, counter_keys("tokens"), 1234 + 89)
    wait_counters(redis, counter_keys("reqs"), 1)
    assert_no_lifetime_counts(redis)
    e = ng.log_entry(r.headers["x-test-request-id"])
    assert (e["input_tokens"], e["output_tokens"]) == ("1234", "89"), e
    assert (e["project"], e["customer"], e["settled_from"]) == ("acme-prod", CUSTOMER, "usage"), e


def test_anthropic_tokens_count_cache_write_and_read(nginx_factory, redis, fake):
    ng = nginx_factory(policy=ALL_LIMITED, location_extra=CUSTOMER_DIRECTIVE)
    r = post(ng.url, "/v1/messages", messages_body(max_tokens=1000), SECRETS["k1"], key_header="x-api-key",
             headers=dict(HEADERS, **{"x-fake-input-tokens": "100", "x-fake-cache-write-tokens": "50",
                                      "x-fake-cached-tokens": "25", "x-fake-output-tokens": "40"}))
    assert r.status_code == 200, r.text
    wait_counters(redis, counter_keys("tokens"), 100 + 50 + 25 + 40)
    e = ng.log_entry(r.headers["x-test-request-id"])
    assert (e["input_tokens"], e["output_tokens"]) == ("175", "40"), e


def test_tokens_settled_from_the_reservation(nginx_factory, redis, fake):
    """A 2xx answer without usage settles at the estimate: body bytes + max tokens."""
    ng = nginx_factory(policy=ALL_LIMITED, location_extra=CUSTOMER_DIRECTIVE)
    body = chat_body(max_tokens=321)
    r = post(ng.url, "/v1/chat/completions", body, SECRETS["k1"],
             headers=dict(HEADERS, **{"x-fake-usage": "none"}))
    assert r.status_code == 200, r.text
    e = ng.log_entry(r.headers["x-test-request-id"])
    assert e["settled_from"] == "reservation"
    wait_counters(redis, counter_keys("tokens"), estimate_tokens(len(body), 321))
    assert (e["input_tokens"], e["output_tokens"]) == (str(len(body)), "321"), e


def test_tokens_hold_the_estimate_while_in_flight(nginx_factory, redis, fake):
    ng = nginx_factory(policy=ALL_LIMITED, location_extra=CUSTOMER_DIRECTIVE)
    body = chat_body(max_tokens=2000)
    est = estimate_tokens(len(body), 2000)
    keys = counter_keys("tokens")
    result = {}
    t = threading.Thread(target=lambda: result.update(r=post(
        ng.url, "/v1/chat/completions", body, SECRETS["k1"],
        headers=dict(HEADERS, **{"x-fake-hold": "in-flight"}))))
    # the capped windows hold the estimate; the others are counted at settlement only
    capped = {counter_key("acme", "tokens", "key", "k1", "daily"),
              counter_key("acme", "tokens", "customer", CHAIN["customer"], "monthly")}
    want = {k: est if k in capped else 0 for k in keys}
    t.start()
    try:
        seen = wait_until(lambda: read_counters(redis, keys) == want)
        assert seen, "in flight, token counters should be %s: %s" % (want, read_counters(redis, keys))
    finally:
        fake.release("in-flight")
        t.join(60)
    assert result["r"].status_code == 200, result["r"].text
    wait_counters(redis, keys, 30)


def test_token_caps_accumulate_real_counts(nginx_factory, redis, fake):
    """daily_tokens sized for three real answers (30 tokens each) plus one estimate:
    three pass only because each settles to its real count; the fourth is refused."""
    body = chat_body(max_tokens=MAX_TOKENS)
    est = estimate_tokens(len(body), MAX_TOKENS)
    cap = 2 * 30 + est + 29   # after 2 settled: 60 + est fits; after 3: 90 + est does not
    ng = nginx_factory(policy=policy_with(("org", {"daily_tokens": cap})))
    key = counter_key("acme", "tokens", "org", "acme", "daily")
    for i in range(3):
        r = post(ng.url, "/v1/chat/completions", body, SECRETS["k1"])
        assert r.status_code == 200, (i, r.text)
        wait_counters(redis, [key], 30 * (i + 1))
    wait_settled(redis, 3)
    before = snapshot(redis)
    p = Periods()
    r = post(ng.url, "/v1/chat/completions", body, SECRETS["k1"])
    assert_refused(ng, redis, fake, r, "openai", "org", "daily_tokens", before, p, upstream_calls=3)
