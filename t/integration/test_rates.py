"""Per-minute rates (rpm, tpm) at every scope: 429 rate_limit_exceeded with
Retry-After to the end of the UTC minute, counters per UTC minute that expire 60 s
after it, tpm settled to the real token count, customers counted apart.

Every test starts with fresh_minute(): its requests must all fall in one UTC minute."""


import pytest

from support import (ALL_SCOPES, CHAINS, CUSTOMER_DIRECTIVE, SCOPE_WORD, SECRETS, Periods, chat_body,
                     counter_key, default_policy, error_envelope, estimate_tokens, fresh_minute, messages_body,
                     post, rate_key, set_limits, snapshot, usd_nanos, wait_counters, wait_settled)
from support import redis_barrier

CUSTOMER = "cust_7"
CHAIN = dict(CHAINS["k1"], customer=CUSTOMER)
HEADERS = {"x-customer-id": CUSTOMER}
KIND_WORD = {"rpm": "requests", "tpm": "tokens"}


def policy_with(*scoped_limits):
    pol = default_policy()
    for scope, lim in scoped_limits:
        set_limits(pol, scope, lim)
    return pol


def assert_429(ng, redis, fake, send, surface, scope, kind, upstream_calls):
    """Sends the request with send(), expects the 429 of (scope, kind) and that it
    changed nothing in Redis."""
    before = snapshot(redis)
    p = Periods()
    r = send()
    after = Periods()
    assert r.status_code == 429, "expected 429, got %d: %s" % (r.status_code, r.text)
    assert p.minute == after.minute, "the test straddled a minute boundary"
    assert r.headers["content-type"].split(";")[0].strip() == "application/json"
    assert r.json() == error_envelope(
        surface, 429, "rate_limit_exceeded",
        "%s has exceeded its %s per minute limit" % (SCOPE_WORD[scope], KIND_WORD[kind]),
        scope=scope, window="minute", reset_at=p.minute_reset)
    ra = int(r.headers["retry-after"])
    assert 1 <= ra <= 60, ra
    # seconds to the end of this UTC minute (allow 1 s either way)
    assert after.seconds_to_minute_end() - 1 <= ra <= p.seconds_to_minute_end() + 1, \
        (ra, p.seconds_to_minute_end(), after.seconds_to_minute_end())
    assert len(fake.requests()) == upstream_calls, "a refused request reached the provider"
    e = ng.log_entry(r.headers["x-test-request-id"])
    assert (e["decision"], e["blocked_by"]) == ("block", "%s:%s" % (scope, kind)), e
    redis_barrier(ng)
    assert snapshot(redis) == before, "a refused request changed Redis"
    return r


def assert_rate_ttl(redis, key, periods):
    """Rate counters expire 60 s after their minute ends."""
    ttl = redis.ttl(key)
    want = periods.seconds_to_minute_end() + 60
    assert abs(ttl - want) <= 3, "%s: ttl %s, expected about %.1f" % (key, ttl, want)


@pytest.mark.parametrize("scope", ALL_SCOPES)
def test_rpm_at_each_scope(nginx_factory, redis, fake, scope):
    ng = nginx_factory(policy=policy_with((scope, {"rpm": 2})), location_extra=CUSTOMER_DIRECTIVE)
    p = fresh_minute()
    send = lambda: post(ng.url, "/v1/chat/completions", chat_body(), SECRETS["k1"], headers=HEADERS)  # noqa: E731
    for i in range(2):
        r = send()
        assert r.status_code == 200, (i, r.text)
    key = rate_key("acme", scope, CHAIN[scope], "rpm", p)
    assert redis.get(key) == "2"
    assert_rate_ttl(redis, key, Periods())
    wait_settled(redis, 2)
    # only scopes with a rate limit have a rate counter
    assert sorted(redis.scan_iter("sc:*:rate:*")) == [key]
    assert_429(ng, redis, fake, send, "openai", scope, "rpm", upstream_calls=2)
    assert redis.get(key) == "2"


@pytest.mark.parametrize("scope", ALL_SCOPES)
def test_tpm_at_each_scope_settles_to_real_tokens(nginx_factory, redis, fake, scope):
    """tpm = one estimate + 30: the second request fits only because the first was
    settled to its real 30 tokens; after the second settles (60) the third is refused."""
    body = chat_body(max_tokens=100)
    est = estimate_tokens(len(body), 100)
    ng = nginx_factory(policy=policy_with((scope, {"tpm": est + 30})), location_extra=CUSTOMER_DIRECTIVE)
    p = fresh_minute()
    key = rate_key("acme", scope, CHAIN[scope], "tpm", p)
    send = lambda: post(ng.url, "/v1/chat/completions", body, SECRETS["k1"], headers=HEADERS)  # noqa: E731
    for i in range(2):
        r = send()
        assert r.status_code == 200, (i, r.text)
        wait_counters(redis, [key], 30 * (i + 1))
    assert_rate_ttl(redis, key, Periods())
    assert sorted(redis.scan_iter("sc:*:rate:*")) == [key]
    wait_settled(redis, 2)
    assert_429(ng, redis, fake, send, "openai", scope, "tpm", upstream_calls=2)


def test_tpm_reserves_the_estimate_then_settles(nginx_factory, redis, fake):
    """A 2xx answer without usage leaves the estimate in the tpm counter; one with
    usage replaces it by input + output (cached included)."""
    ng = nginx_factory(policy=policy_with(("key", {"tpm": 1_000_000})))
    p = fresh_minute()
    key = rate_key("acme", "key", "k1", "tpm", p)
    body = chat_body(max_tokens=500)
    r = post(ng.url, "/v1/chat/completions", body, SECRETS["k1"], headers={"x-fake-usage": "none"})
    assert r.status_code == 200
    wait_counters(redis, [key], estimate_tokens(len(body), 500))
    r = post(ng.url, "/v1/chat/completions", body, SECRETS["k1"],
             headers={"x-fake-input-tokens": "700", "x-fake-cached-tokens": "300", "x-fake-output-tokens": "45"})
    assert r.status_code == 200
    wait_counters(redis, [key], estimate_tokens(len(body), 500) + 745)


@pytest.mark.parametrize("kind", ["rpm", "tpm"])
def test_anthropic_rate_limit_error(nginx_factory, redis, fake, kind):
    """A rate of 0 refuses every request; Anthropic's envelope type is rate_limit_error."""
    ng = nginx_factory(policy=policy_with(("project", {kind: 0})))
    fresh_minute()
    r = assert_429(ng, redis, fake,
                   lambda: post(ng.url, "/v1/messages", messages_body(), SECRETS["k1"], key_header="x-api-key"),
                   "anthropic", "project", kind, upstream_calls=0)
    assert r.json()["error"]["type"] == "rate_limit_error"


def test_rpm_per_customer(nginx_factory, redis, fake):
    """customers.default_limits rpm 2: customer A is refused on its third request in
    the minute while customer B still gets through; their counters are separate."""
    pol = policy_with(("customer", {"rpm": 2}))
    ng = nginx_factory(policy=pol, location_extra=CUSTOMER_DIRECTIVE)
    p = fresh_minute()

    def send(cust):
        return post(ng.url, "/v1/chat/completions", chat_body(), SECRETS["k1"], headers={"x-customer-id": cust})

    assert send("cust_a").status_code == 200
    assert send("cust_a").status_code == 200
    assert send("cust_b").status_code == 200
    wait_settled(redis, 3)
    r = assert_429(ng, redis, fake, lambda: send("cust_a"), "openai", "customer", "rpm", upstream_calls=3)
    assert r.json()["error"]["message"] == "customer has exceeded its requests per minute limit"
    r = send("cust_b")
    assert r.status_code == 200, r.text
    ka = "sc:{acme}:rate:customer:cust_a:rpm:" + p.minute
    kb = "sc:{acme}:rate:customer:cust_b:rpm:" + p.minute
    assert (redis.get(ka), redis.get(kb)) == ("2", "2")
    assert sorted(redis.scan_iter("sc:*:rate:*")) == sorted([ka, kb])
    assert len(fake.requests()) == 4
    # B is at its limit now too
    r = send("cust_b")
    assert r.status_code == 429 and r.json()["error"]["scope"] == "customer", r.text


def test_rates_checked_after_caps(nginx_factory, redis, fake):
    """A request both over a cost cap and over a rate gets the cost cap's 402."""
    ng = nginx_factory(policy=policy_with(("key", {"rpm": 0})))
    fresh_minute()
    redis.set(counter_key("acme", "spend", "org", "acme", "daily"), usd_nanos("50"))
    p = Periods()
    r = post(ng.url, "/v1/chat/completions", chat_body(), SECRETS["k1"])
    assert r.status_code == 402, r.text
    assert r.json() == error_envelope("openai", 402, "spend_limit_exceeded",
                                      "account has reached its daily spend limit", scope="org", window="daily",
                                      reset_at=p.day_reset)
    assert "retry-after" not in r.headers


@pytest.mark.parametrize("scoped,reported", [
    ([("customer", {"rpm": 0}), ("key", {"tpm": 0})], ("key", "tpm")),
    ([("org", {"rpm": 0}), ("project", {"rpm": 0})], ("project", "rpm")),
    ([("customer", {"tpm": 0}), ("org", {"rpm": 0})], ("org", "rpm")),
])
def test_rate_check_order_key_project_org_customer(nginx_factory, redis, fake, scoped, reported):
    ng = nginx_factory(policy=policy_with(*scoped), location_extra=CUSTOMER_DIRECTIVE)
    fresh_minute()
    assert_429(ng, redis, fake,
               lambda: post(ng.url, "/v1/chat/completions", chat_body(), SECRETS["k1"], headers=HEADERS),
               "openai", reported[0], reported[1], upstream_calls=0)
